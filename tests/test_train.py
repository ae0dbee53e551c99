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
import train
from conftest import ROOT, TINY_TRAIN_FLAGS
from trl_grpo.answers import contract, registry, rewards
from trl_grpo.data import prepare
from trl_grpo.models import loading, locate
from trl_grpo.runs import folders
from trl_grpo.settings import flags


def test_run_folder_has_everything(tiny_run):
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "run_config.json",
        "log_history.json",
        "reward_curves.png",
        "tokenizer.json",
    ):
        assert os.path.isfile(os.path.join(tiny_run, name)), name
    with open(os.path.join(tiny_run, "run_config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(tiny_run, folders.RUN_STATE)) as f:
        state = json.load(f)
    assert state["steps"] == 2 and state["complete"] and len(state["attempts"]) == 1
    assert (
        cfg["device"] == "cpu"
        and cfg["dtype"] == "torch.float32"
        and cfg["dropped"]
        == {"train": {"empty_problem": 0, "unusable_gold": 0, "contaminated": 0, "prompt_too_long": 0}}
    )
    assert cfg["held_out"] == {"source": "the dataset's split", "split": "test"}  # builtin:1 has its own test split
    assert cfg["versions"]["trl"] and cfg["grpo_config"]["num_generations"] == 2
    assert cfg["args"]["lora_target_modules"] == "all-linear"
    with open(os.path.join(tiny_run, "log_history.json")) as f:
        history = json.load(f)
    assert any("rewards/format_reward/mean" in e for e in history)
    assert os.path.isfile(os.path.join(tiny_run, "checkpoint-2", folders.COMPLETE_MARKER))


def test_adapter_reloads_and_generates(tiny_run, tiny_model_dir):
    resolved = locate.resolve_model(tiny_run)
    assert resolved["adapter"] == tiny_run and resolved["base"] == tiny_model_dir
    model = loading.load_model(resolved, torch.float32, "cpu")
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def _length_reward(completions, **kwargs):
    """Varies within every group, so a random tiny model still gets a non-zero gradient."""
    return [float(len(contract.completion_text(c))) / 10 for c in completions]


def test_lora_changes_and_base_does_not(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.REWARD_FUNCS, "length", _length_reward)
    args = flags.build_parser("train").parse_args(
        ["--model_id", tiny_model_dir, "--reward_funcs", "length,format", *TINY_TRAIN_FLAGS, "--save_strategy", "no"]
    )
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
    ],
)
def test_flag_validation_fails_before_loading(flags, message, capsys):
    with pytest.raises(SystemExit) as err:
        main.main(flags)
    assert message in str(err.value)


def test_batch_size_alias():
    args = flags.build_parser("train").parse_args(["--batch_size", "8"])
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
            (folder / folders.COMPLETE_MARKER).write_text("ok")
    assert folders.find_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-4")
    assert folders.find_last_checkpoint(str(tmp_path / "none")) is None


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
    last = folders.find_last_checkpoint(out)
    assert last is not None
    step = int(last.rsplit("-", 1)[1])
    assert step < 500
    # the resume in this process: what the stop wrote is what a fresh start reads
    assert (
        main.main(_main_cmd(tiny_model_dir, out, "--max_steps", str(step + 1), "--resume_from_checkpoint", "last")[2:])
        == 0
    )
    with open(os.path.join(out, folders.RUN_STATE)) as f:
        state = json.load(f)
    first, second = state["attempts"]
    assert first["interrupted"] and not first["complete"] and first["steps"] == step
    assert second["resumed_from"] == last and second["complete"] and state["steps"] == step + 1
    assert second["changed_flags"] == {"max_steps": [500, step + 1]}  # --save_strategy no: restored, not given
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_process_cpu_training(tiny_model_dir, tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "main.py",
        "--model_id",
        tiny_model_dir,
        "--output_dir",
        out,
        *TINY_TRAIN_FLAGS,
        "--max_steps",
        "1",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(os.path.join(out, "run_config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(out, folders.RUN_STATE)) as f:
        assert json.load(f)["steps"] == 1
    assert cfg["num_processes"] == 2
    plans = [line for line in done.stdout.splitlines() if line.startswith("Run length:")]
    assert plans == ["Run length: 1 steps (--max_steps given); 4 prompts x 2 completions per step over 2 processes."]
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    # the completion log holds both processes' completions, each beside its own prompt, rewards and length
    with open(os.path.join(out, "completions.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert len(logged) == 8  # 2 processes x 4 completions
    tokenizer = loading.load_tokenizer(tiny_model_dir)
    template = flags.DEFAULT_PROMPT_TEMPLATE
    rows, _, _ = prepare.prompt_rows(tokenizer, "builtin:1", "train[:16]", "train", template=template)
    by_id = {r["problem_id"]: r for r in rows}
    for line in logged:
        row = by_id[line["prompt_index"]]
        if "prompt" in line:
            assert line["prompt"] == row["prompt"]
        got = rewards.format_reward([line["completion"]], prompts=[row["prompt"]])
        assert got == [line["rewards"]["format_reward"]]
        accuracy = rewards.accuracy_reward([line["completion"]], [row["solution"]], answer=[row["answer"]])
        assert accuracy == [line["rewards"]["accuracy_reward"]]
        assert 1 <= line["length"] <= 8 and (not line["truncated"] or line["length"] == 8)
    assert len({line["prompt_index"] for line in logged}) == 4  # 4 prompts, 2 completions each


@pytest.mark.slow
def test_embedded_model_converts_to_a_plain_checkpoint():
    path = locate.ensure_embedded_model()
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert locate.resolve_model("embedded")["base"] == path
    model = loading.load_model({"base": path}, torch.float32)
    assert model.num_parameters() == 134_515_008


def test_processes_that_start_together_convert_the_embedded_model_once(tmp_path, monkeypatch):
    """torchrun's processes or a test suite's workers on a fresh machine: one converts, the others
    wait for its copy (the lock is per open file, so two threads here contend like two processes)."""
    import threading

    monkeypatch.setenv("TRL_GRPO_CACHE", str(tmp_path))
    calls = []

    def slow_convert(final):
        calls.append(final)
        time.sleep(0.5)
        os.makedirs(final)
        for name in ("config.json", "model.safetensors"):
            open(os.path.join(final, name), "w").close()
        return final

    monkeypatch.setattr(locate, "_convert_embedded", slow_convert)
    got = []
    threads = [threading.Thread(target=lambda: got.append(locate.ensure_embedded_model())) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1 and got == [str(tmp_path / locate.EMBEDDED_NAME)] * 3


def test_default_output_dir_stays_inside_ckpts():
    args = flags.build_parser("train").parse_args(["--model_id", "../../etc/passwd", "--dataset_id", "../x"])
    out = folders.default_output_dir(args)
    assert out.startswith("ckpts" + os.sep) and ".." not in out and out.count(os.sep) == 1
    args = flags.build_parser("train").parse_args(["--model_id", "Qwen/Qwen2.5-0.5B-Instruct"])
    assert os.path.basename(folders.default_output_dir(args)).startswith("Qwen2.5-0.5B-Instruct-builtin-1-")


@pytest.mark.slow
def test_merged_model_matches_the_adapter(tiny_model_dir, tmp_path):
    out = str(tmp_path / "merged-run")
    assert (
        main.main(
            ["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--save_merged", "--max_steps", "1"]
        )
        == 0
    )
    merged = loading.load_model(locate.resolve_model(os.path.join(out, "merged")), torch.float32)
    adapter = loading.load_model(locate.resolve_model(out), torch.float32, merge=False)
    ids = torch.tensor([[1, 690, 198, 67, 2, 198, 1, 520, 531, 198]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_the_originals_command_line_on_local_copies(tiny_model_dir, tmp_path):
    """The original README's flags, hub ids replaced by a local model and a NuminaMath-shaped folder."""
    from datasets import Dataset

    folder = tmp_path / "NuminaMath-TIR" / "data"
    folder.mkdir(parents=True)
    rows = [
        {"problem": f"What is {i} + 2?", "solution": f"{i} + 2 = {i + 2}, so \\(\\boxed{{{i + 2}}}\\).", "messages": []}
        for i in range(12)
    ]
    Dataset.from_list(rows[:8]).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    Dataset.from_list(rows[8:]).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    out = str(tmp_path / "original")
    argv = [
        "--model_id",
        tiny_model_dir,
        "--dataset_id",
        str(folder.parent),
        "--output_dir",
        out,
        "--learning_rate",
        "1e-5",
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--max_completion_length",
        "8",
        "--max_prompt_length",
        "512",
        "--num_generations",
        "2",
        "--warmup_ratio",
        "0.1",
        "--logging_steps",
        "1",
        "--save_steps",
        "2",
        "--save_strategy",
        "steps",
        "--train_split",
        "train[:100%]",
        "--max_steps",
        "-1",
        "--prompt_template",
        "original",
        "--report_to",
        "none",
    ]
    assert main.main(argv) == 0
    with open(os.path.join(out, "run_config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(out, folders.RUN_STATE)) as f:
        assert json.load(f)["steps"] == 4  # one epoch: 8 prompts, 2 per step
    assert cfg["train_rows"] == 8


def test_run_records_which_fast_paths_ran(tiny_run):
    with open(os.path.join(tiny_run, folders.RUN_STATE)) as f:
        report = json.load(f)["attempts"][-1]["fast_paths"]
    assert report["setting"] == "auto" and report["enabled"] and report["generate_hook"] == "used"
    assert report["lean_decode"] == "used"
    assert report["fast_logps"] == "used" and report["fast_logps_check"]["passed"]
