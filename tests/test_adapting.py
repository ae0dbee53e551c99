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
    # resumed at its last step: nothing left to train, the checkpoint's whole-model weights are the run's
    assert main.main(["--output_dir", str(out), "--resume_from_checkpoint", "last"]) == 0
    assert _evaluates(out, tmp_path) and _evaluates(out / "checkpoint-2", tmp_path)
    from trl_grpo.export import command  # exported as it is: the run's weights, unchanged

    assert command.main([str(out), "--merged", str(tmp_path / "exported")]) == 0
    final = load_file(str(out / "model.safetensors"))
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert set(exported) == set(final) and all(torch.equal(final[k], exported[k]) for k in final)


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
    del config["r"]  # a field left out is PEFT's default (r 8)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    args, startup = resolve.parse("train", ["--model_id", str(folder), "--lora_r", "8"])
    start.check_adapter_flags(str(folder), args, startup.given)
    args, startup = resolve.parse("train", ["--model_id", str(folder), "--no-use_peft", "--beta", "0.04"])
    with pytest.raises(ModelError, match="the base without this adapter"):
        start.check_adapter_flags(str(folder), args, startup.given)


def test_targets_are_matched_as_peft_matches_them(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from trl_grpo.models import start
    from trl_grpo.models.locate import ModelError

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for flags in (["--lora_target_modules", "self_attn.q_proj,v_proj"], ["--lora_modules_to_save", "model.norm"]):
        start.check_targets(model, resolve.parse("train", flags)[0])  # a dotted suffix names them, as in PEFT
    args = resolve.parse("train", ["--lora_target_parameters", "layers.0.mlp.up_proj.weight"])[0]
    start.check_targets(model, args)
    for flags, says in (
        (["--lora_target_modules", "qq_proj"], "no linear layer named qq_proj"),
        (["--lora_modules_to_save", "head"], "no module named head"),
        (["--lora_target_modules", "none"], "adapts nothing"),
    ):
        with pytest.raises(ModelError, match=says):
            start.check_targets(model, resolve.parse("train", flags)[0])


def test_runs_recorded_before_the_4bit_flags_resume():
    """Runs from before these flags recorded bnb_4bit_quant_type and _storage as null."""
    from trl_grpo.settings import adapting

    args, _ = resolve.parse("train", [])
    args.bnb_4bit_quant_type = args.bnb_4bit_quant_storage = None
    assert adapting.check(args) == []


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
def test_qlora_trains_where_bitsandbytes_runs_and_else_refuses_in_one_line(tiny_model_dir, tmp_path):
    """With bitsandbytes installed (pip install -r requirements-qlora.txt) a 4-bit base trains here (its CPU
    kernels run where CUDA is absent); without it, one line names the file."""
    import importlib.util

    from trl_grpo.settings import backends

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(UsageError, match="--load_in_4bit needs bitsandbytes: pip install -r requirements-qlora"):
            resolve.parse("train", ["--load_in_4bit"])
        return
    assert not backends.check_bitsandbytes("--load_in_4bit")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    # bitsandbytes quantizes in blocks of 64 values: the tiny model's tokenizer on a 64-wide model
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.update({"hidden_size": 64, "intermediate_size": 128, "head_dim": 32})
    torch.manual_seed(0)
    model_dir = tmp_path / "wide"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "qlora"
    assert _train(str(model_dir), out, "--load_in_4bit", "--max_steps", "1") == 0
    assert json.loads((out / "run_config.json").read_text())["args"]["load_in_4bit"] is True
    assert (out / "adapter_model.safetensors").is_file()
    assert _evaluates(out, tmp_path)


def test_the_qlora_file_pins_what_the_tool_accepts():
    from conftest import ROOT
    from trl_grpo.settings import backends

    with open(os.path.join(ROOT, "requirements-qlora.txt"), encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    assert lines == ["-r requirements.txt", f"bitsandbytes{backends.BNB_TESTED}"]


def test_full_fine_tuning_takes_its_own_learning_rate(capsys):
    """Measured: the whole embedded model at LoRA's 2e-4 collapsed (0.000), at 1e-5 it learned (0.545)."""
    args, _ = resolve.parse("train", ["--no-use_peft"])
    assert args.learning_rate == 1e-5 and "learning rate 1e-05 (full fine-tuning's default)" in capsys.readouterr().out
    args, _ = resolve.parse("train", ["--no-use_peft", "--learning_rate", "2e-4"])
    assert args.learning_rate == 2e-4 and "warning: --no-use_peft at learning rate 0.0002" in capsys.readouterr().out
    args, _ = resolve.parse("train", [])
    assert args.learning_rate == 2e-4  # LoRA's
