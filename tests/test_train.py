"""main.py + train.py: a real GRPO+LoRA run on a tiny model, flag validation, resume, guards, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
import model_utils
import reward
import train
from conftest import ROOT, TINY_TRAIN_FLAGS


def test_run_folder_has_everything(tiny_run):
    for name in ("adapter_model.safetensors", "adapter_config.json", "run_config.json", "log_history.json", "reward_curves.png", "tokenizer.json"):
        assert os.path.isfile(os.path.join(tiny_run, name)), name
    with open(os.path.join(tiny_run, "run_config.json")) as f:
        cfg = json.load(f)
    assert cfg["steps"] == 2 and cfg["device"] == "cpu" and cfg["dtype"] == "torch.float32"
    assert cfg["versions"]["trl"] and cfg["grpo_config"]["num_generations"] == 2
    assert cfg["args"]["lora_target_modules"] == "all-linear"
    with open(os.path.join(tiny_run, "log_history.json")) as f:
        history = json.load(f)
    assert any("rewards/format_reward/mean" in e for e in history)
    assert os.path.isfile(os.path.join(tiny_run, "checkpoint-2", train.COMPLETE_MARKER))


def test_adapter_reloads_and_generates(tiny_run, tiny_model_dir):
    resolved = model_utils.resolve_model(tiny_run)
    assert resolved["adapter"] == tiny_run and resolved["base"] == tiny_model_dir
    model = model_utils.load_model(resolved, torch.float32, "cpu")
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def _length_reward(completions, **kwargs):
    """Varies within every group, so a random tiny model still gets a non-zero gradient."""
    return [float(len(reward.completion_text(c))) / 10 for c in completions]


def test_lora_changes_and_base_does_not(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(reward.REWARD_FUNCS, "length", _length_reward)
    args = main.build_parser().parse_args(["--model_id", tiny_model_dir, "--reward_funcs", "length,format", *TINY_TRAIN_FLAGS, "--save_strategy", "no"])
    trainer, _, _ = train.build_trainer(args, str(tmp_path / "run"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    frozen = [n for n in before if "lora_" not in n]
    assert all(torch.equal(before[n], after[n]) for n in frozen)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--num_generations", "1"], "use 2 or more"),
        (["--per_device_train_batch_size", "6", "--num_generations", "4"], "not divisible by --num_generations 4"),
        (["--reward_funcs", "format,bogus"], "Unknown reward 'bogus'"),
        (["--reward_weights", "1,2,3"], "--reward_weights has 3 values"),
        (["--learning_rate", "0"], "--learning_rate 0.0"),
        (["--prompt_template", "nope"], "expected one of"),
        (["--resume_from_checkpoint", "last"], "needs --output_dir"),
        (["--resume_from_checkpoint", "/no/such/ckpt"], "is not a folder"),
        (["--max_steps", "0"], "Nothing to train"),
        (["--report_to", "wandb"], "pip install wandb"),
    ],
)
def test_flag_validation_fails_before_loading(flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        main.main(flags)
    assert message in str(err.value)


def test_batch_size_alias():
    args = main.build_parser().parse_args(["--batch_size", "8"])
    assert args.per_device_train_batch_size == 8


def test_existing_output_folder_is_never_reused(tmp_path, tiny_model_dir):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="already holds files"):
        main.main(["--model_id", tiny_model_dir, "--output_dir", str(out), *TINY_TRAIN_FLAGS])
    assert (out / "precious.txt").read_text() == "keep me" and os.listdir(out) == ["precious.txt"]


def test_half_written_checkpoint_is_never_last(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        if complete:
            (folder / train.COMPLETE_MARKER).write_text("ok")
    assert train.find_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert train.find_last_checkpoint(str(tmp_path / "none")) is None


def test_unreachable_hub_model_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="--model_id embedded"):
        main.main(["--model_id", "no-such-org/no-such-model", "--output_dir", str(tmp_path / "r"), *TINY_TRAIN_FLAGS])


def _main_cmd(tiny_model_dir, out, *extra):
    return [sys.executable, "main.py", "--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, *extra]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_continues(tiny_model_dir, tmp_path):
    out = str(tmp_path / "interrupted")
    cmd = _main_cmd(tiny_model_dir, out, "--max_steps", "500", "--save_strategy", "no")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    for line in proc.stdout:  # wait until training has logged a step
        if "'loss'" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, rest[-2000:]
    assert "--resume_from_checkpoint last" in rest
    last = train.find_last_checkpoint(out)
    assert last is not None
    step = int(last.rsplit("-", 1)[1])
    assert step < 500
    done = subprocess.run(_main_cmd(tiny_model_dir, out, "--max_steps", str(step + 1), "--resume_from_checkpoint", "last"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with open(os.path.join(out, "run_config.json")) as f:
        cfg = json.load(f)
    assert cfg["steps"] == step + 1 and cfg["resumed_from"] == last
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_process_cpu_training(tiny_model_dir, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "main.py", "--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--max_steps", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(os.path.join(out, "run_config.json")) as f:
        cfg = json.load(f)
    assert cfg["num_processes"] == 2 and cfg["steps"] == 1
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))


@pytest.mark.slow
def test_embedded_model_converts_to_a_plain_checkpoint():
    path = model_utils.ensure_embedded_model()
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert model_utils.resolve_model("embedded")["base"] == path
    model = model_utils.load_model({"base": path}, torch.float32)
    assert model.num_parameters() == 134_515_008


def test_default_output_dir_stays_inside_ckpts():
    args = main.build_parser().parse_args(["--model_id", "../../etc/passwd", "--dataset_id", "../x"])
    out = train.default_output_dir(args)
    assert out.startswith("ckpts" + os.sep) and ".." not in out and out.count(os.sep) == 1
    args = main.build_parser().parse_args(["--model_id", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert os.path.basename(train.default_output_dir(args)).startswith("Qwen2.5-0.5B-Instruct-builtin-1-")


@pytest.mark.slow
def test_merged_model_matches_the_adapter(tiny_model_dir, tmp_path):
    out = str(tmp_path / "merged-run")
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--save_merged", "--max_steps", "1"]) == 0
    merged = model_utils.load_model(model_utils.resolve_model(os.path.join(out, "merged")), torch.float32)
    adapter = model_utils.load_model(model_utils.resolve_model(out), torch.float32, merge=False)
    ids = torch.tensor([[1, 9690, 198, 67, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_the_originals_command_line_on_local_copies(tiny_model_dir, tmp_path):
    """The original README's flags, hub ids replaced by a local model and a NuminaMath-shaped folder."""
    from datasets import Dataset

    folder = tmp_path / "NuminaMath-TIR" / "data"
    folder.mkdir(parents=True)
    rows = [{"problem": f"What is {i} + 2?", "solution": f"{i} + 2 = {i + 2}, so \\(\\boxed{{{i + 2}}}\\).", "messages": []} for i in range(12)]
    Dataset.from_list(rows[:8]).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(rows[8:]).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    out = str(tmp_path / "original")
    argv = [
        "--model_id", tiny_model_dir, "--dataset_id", str(folder.parent), "--output_dir", out,
        "--learning_rate", "1e-5", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--max_completion_length", "8", "--max_prompt_length", "512",
        "--num_generations", "2", "--warmup_ratio", "0.1", "--logging_steps", "1", "--save_steps", "2",
        "--save_strategy", "steps", "--train_split", "train[:100%]", "--max_steps", "-1",
        "--prompt_template", "original", "--report_to", "none",
    ]
    assert main.main(argv) == 0
    with open(os.path.join(out, "run_config.json")) as f:
        cfg = json.load(f)
    assert cfg["train_rows"] == 8 and cfg["steps"] == 4  # one epoch: 8 prompts, 2 per step


def test_shared_prefix_generate_matches_plain_generate(tiny_model_dir):
    """The hook train.py installs for TRL's generation gives the same greedy tokens, same layout."""
    model = model_utils.load_model({"base": tiny_model_dir}, torch.float32).eval()
    prefix = [1, 9690, 198, 67, 2, 198, 1, 4093, 198]
    rows = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]]
    width = max(map(len, rows))
    ids = torch.tensor([[2] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=2)
    plain = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    hooked = model_utils.SharedPrefixGenerate(model, pad_id=2)(input_ids=ids, attention_mask=mask, **kwargs)
    assert hooked.shape == plain.shape
    assert torch.equal(hooked[:, width:], plain[:, width:])
