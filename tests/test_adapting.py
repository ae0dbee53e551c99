"""Every way to adapt a model: full fine-tuning, DoRA, rsLoRA, modules trained in full, QLoRA, and GRPO from an
adapter that exists; each trains, resumes and is scored by eval.py, and every refusal is one line before
the model loads."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.evaluation import pipeline
from trl_grpo.runs.cli import UsageError
from trl_grpo.settings import resolve

# A reward that differs within every group (the completion's length), so each GRPO step moves the weights.
LENGTH_REWARD = """
def length_reward(completions, **kwargs):
    return [len(c[0]["content"] if isinstance(c, list) else c) / 10.0 for c in completions]
"""


@pytest.fixture(autouse=True)
def _length_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lengths.py").write_text(LENGTH_REWARD)


SIGNAL = ["--reward_funcs", "format,lengths.py:length_reward"]


def _train(tiny_model_dir, out, *extra, model=None):
    flags = ["--model_id", model or tiny_model_dir, *TINY_TRAIN_FLAGS, "--no-preflight", "--output_dir", str(out)]
    return main.main([*flags, *SIGNAL, *extra])


def _evaluates(model_dir, tmp_path) -> list:
    result = str(tmp_path / f"eval-{os.path.basename(str(model_dir))}.json")
    argv = ["--model_dir", str(model_dir), "--limit", "2", "--max_completion_length", "4", "--output_file", result]
    assert pipeline.main(argv) == 0
    with open(result) as f:
        return json.load(f)


@pytest.mark.slow
def test_full_fine_tuning_trains_resumes_and_is_scored(tiny_model_dir, tmp_path):
    out = tmp_path / "full"
    assert _train(tiny_model_dir, out, "--no-use_peft") == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    record = json.loads((out / "run_config.json").read_text())
    assert record["lora_config"] is None and record["trainable_params"] == record["all_params"]
    before = load_file(str(tiny_model_dir) + "/model.safetensors")
    after = load_file(str(out / "model.safetensors"))
    assert any((before[k] - after[k]).abs().max() > 0 for k in after if k in before)  # the weights themselves moved
    assert main.main(["--output_dir", str(out), "--resume_from_checkpoint", "last", "--max_steps", "3"]) == 0
    assert json.loads((out / "run_state.json").read_text())["attempts"][-1]["steps"] == 3
    assert _evaluates(out, tmp_path) and _evaluates(out / "checkpoint-2", tmp_path)


@pytest.mark.slow
def test_dora_trains_resumes_and_is_scored(tiny_model_dir, tmp_path):
    out = tmp_path / "dora"
    assert _train(tiny_model_dir, out, "--use_dora", "--max_steps", "1") == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is False
    assert any("lora_magnitude_vector" in k for k in load_file(str(out / "adapter_model.safetensors")))
    assert main.main(["--output_dir", str(out), "--resume_from_checkpoint", "last", "--max_steps", "2"]) == 0
    assert json.loads((out / "run_config.json").read_text())["args"]["use_dora"] is True
    assert _evaluates(out, tmp_path)


@pytest.mark.slow
def test_rslora_and_a_module_trained_in_full(tiny_model_dir, tmp_path):
    out = tmp_path / "rs"
    assert _train(tiny_model_dir, out, "--use_rslora", "--lora_modules_to_save", "lm_head", "--max_steps", "1") == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_rslora"] is True and config["modules_to_save"] == ["lm_head"]
    saved = load_file(str(out / "adapter_model.safetensors"))
    head = [k for k in saved if "lm_head" in k]
    assert head, sorted(saved)[:5]
    base = load_file(str(tiny_model_dir) + "/model.safetensors")
    reference = base.get("lm_head.weight", base["model.embed_tokens.weight"])  # tied: the embeddings
    assert (saved[head[0]] - reference).abs().max() > 0  # the full copy trained
    assert _evaluates(out, tmp_path)


@pytest.mark.slow
def test_grpo_from_the_cold_starts_adapter_equals_one_run(tiny_model_dir, tmp_path):
    """RUN/sft, then a separate GRPO run from it, ends where --sft_steps in one run ends."""
    common = ["--sft_steps", "2", "--sft_batch_size", "2"]
    assert _train(tiny_model_dir, tmp_path / "cold", *common, "--max_steps", "0") == 0
    sft = tmp_path / "cold" / "sft"
    assert _train(tiny_model_dir, tmp_path / "on", model=str(sft)) == 0
    assert _train(tiny_model_dir, tmp_path / "one", *common) == 0
    separate = load_file(str(tmp_path / "on" / "adapter_model.safetensors"))
    together = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    start = load_file(str(sft / "adapter_model.safetensors"))
    assert set(separate) == set(together)
    assert all((separate[k] == together[k]).all() for k in separate)
    assert any((separate[k] != start[k]).any() for k in separate)  # GRPO moved it: the equality is not vacuous
    started = json.loads((tmp_path / "on" / "run_config.json").read_text())["started_from"]
    assert started["adapter"] == str(sft) and started["as"].startswith("trained on")
    assert _evaluates(tmp_path / "on", tmp_path)


def test_an_adapters_own_shape_wins_over_a_flag_that_disagrees(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": False, "base_model_name_or_path": "embedded"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file({"x": torch.zeros(1)}, str(folder / "adapter_model.safetensors"))
    args, startup = resolve.parse("train", ["--model_id", str(folder), "--lora_r", "8", "--use_dora"])
    from trl_grpo.models import start
    from trl_grpo.models.locate import ModelError

    with pytest.raises(ModelError) as refused:
        start.check_adapter_flags(str(folder), args, startup.given)
    message = str(refused.value)
    assert "--lora_r 8 (the adapter's: 16)" in message and "--use_dora True (the adapter's: False)" in message
    assert "\n" not in message
    args, startup = resolve.parse("train", ["--model_id", str(folder), "--lora_r", "16"])
    start.check_adapter_flags(str(folder), args, startup.given)  # agreeing is fine


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--no-use_peft", "--use_dora"], "--no-use_peft trains the whole model; --use_dora shape LoRA adapters"),
        (["--load_in_4bit", "--load_in_8bit"], "--load_in_4bit and --load_in_8bit: pick one"),
        (["--no-use_peft", "--load_in_8bit"], "quantized weights cannot be trained in full"),
        (["--bnb_4bit_quant_type", "fp4"], "--bnb_4bit_quant_type: 4-bit settings, read only with --load_in_4bit"),
        (["--lora_task_type", "SEQ_CLS"], "only CAUSAL_LM applies"),
        (["--model_init_kwargs", "{device_map: auto}"], "--model_init_kwargs device_map: set it with the launcher"),
    ],
)
def test_what_cannot_work_together_is_one_line_before_loading(argv, says):
    with pytest.raises(UsageError) as refused:
        resolve.parse("train", argv)
    assert says in str(refused.value) and len(str(refused.value).splitlines()) == 1


@pytest.mark.slow
def test_qlora_trains_where_bitsandbytes_runs_and_else_refuses_in_one_line(tmp_path, monkeypatch):
    """With bitsandbytes installed (pip install -r requirements-qlora.txt) a 4-bit base trains here (its CPU
    kernels run where CUDA is absent); without it, one line names the file. The embedded model: bitsandbytes
    quantizes in blocks of 64, wider than the test suite's tiny model."""
    import importlib.util

    from trl_grpo.settings import backends

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(UsageError, match="--load_in_4bit needs bitsandbytes: pip install -r requirements-qlora"):
            resolve.parse("train", ["--load_in_4bit"])
        return
    assert not backends.check_bitsandbytes("--load_in_4bit")
    out = tmp_path / "qlora"
    flags = ["--load_in_4bit", "--max_steps", "1", "--max_completion_length", "4", "--per_device_train_batch_size", "2"]
    flags += ["--num_generations", "2", "--train_split", "train[:4]", "--no-preflight", "--report_to", "none"]
    assert main.main([*flags, "--output_dir", str(out)]) == 0
    assert json.loads((out / "run_config.json").read_text())["args"]["load_in_4bit"] is True
    assert (out / "adapter_model.safetensors").is_file()
    assert _evaluates(out, tmp_path)


def test_the_qlora_file_pins_what_the_tool_accepts():
    from conftest import ROOT
    from trl_grpo.settings import backends

    with open(os.path.join(ROOT, "requirements-qlora.txt"), encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    assert lines == ["-r requirements.txt", f"bitsandbytes{backends.BNB_TESTED}"]
