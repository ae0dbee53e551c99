"""main.py + train.py around the run: held folders, resume and drift, refusals before any load, the preflight."""

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
from trl_grpo.runs import files, folders
from trl_grpo.settings import flags, resolve


def _main_cmd(tiny_model_dir, out, *extra):
    return [sys.executable, "main.py", "--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, *extra]


# ---------------------------------------------------------------- reliability: claims, resume, dead ends, validation
@pytest.mark.slow
def test_a_second_run_into_a_held_folder_is_refused_at_once(tiny_model_dir, tmp_path):
    out = str(tmp_path / "shared")
    first = subprocess.Popen(
        _main_cmd(tiny_model_dir, out, "--max_steps", "500", "--save_strategy", "no"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not os.path.isfile(os.path.join(out, "run_config.json")) and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.communicate()[0][-2000:]
        # In this process: the lock is the OS's, so another process is another process; how a
        # refusal reaches the shell (exit 2, one line) is test_bad_flags_exit_2_..._no_traceback's.
        start = time.time()
        with pytest.raises(SystemExit) as second:
            main.main(_main_cmd(tiny_model_dir, out)[2:])
        assert time.time() - start < 60 and "being written by another process" in str(second.value)
        assert f"pid {first.pid}" in str(second.value)
    finally:
        first.kill()
        first.communicate()
    # the holder died (kill -9): the OS dropped its lock, so the folder is not blocked for good
    with pytest.raises(SystemExit) as retry:
        main.main(_main_cmd(tiny_model_dir, out, "--resume_from_checkpoint", "last")[2:])
    assert "being written by another process" not in str(retry.value)
    assert "stopped before its first complete checkpoint" in str(retry.value)


def test_resume_restores_the_runs_settings_and_refuses_drift(tiny_run, monkeypatch):
    with open(os.path.join(tiny_run, "run_config.json"), "rb") as f:
        before = f.read()
    args, startup = resolve.parse(
        "train",
        ["--output_dir", tiny_run, "--resume_from_checkpoint", "last", "--max_steps", "3", "--logging_steps", "2"],
    )
    recorded = json.loads(before)["args"]
    assert (
        args.model_id == recorded["model_id"] and args.train_split == "train[:16]" and args.learning_rate == 1e-2
    )  # restored, not main.py's defaults
    assert startup.changed_on_resume == {"max_steps": [2, 3], "logging_steps": [1, 2]}
    argv = [
        "--output_dir",
        tiny_run,
        "--resume_from_checkpoint",
        "last",
        "--learning_rate",
        "0.5",
        "--dataset_id",
        "builtin:2",
        "--prompt_template",
        "original",
    ]
    with pytest.raises(SystemExit) as err:
        main.main(argv)
    for text in (
        "--learning_rate: the run was started with 0.01, not 0.5",
        "--dataset_id: the run was started with 'builtin:1', not 'builtin:2'",
        "--prompt_template",
    ):
        assert text in str(err.value)
    with open(os.path.join(tiny_run, "run_config.json"), "rb") as f:
        assert f.read() == before  # the run's record of how it started is never rewritten


def test_a_run_that_stopped_before_its_first_checkpoint_is_no_dead_end(tiny_model_dir, tmp_path):
    out = tmp_path / "early"
    out.mkdir()
    (out / "run_config.json").write_text('{"args": {}}')
    (out / "checkpoint-1").mkdir()  # half written: no COMPLETE marker
    with pytest.raises(
        SystemExit, match="stopped before its first complete checkpoint.*without --resume_from_checkpoint"
    ):
        main.main(["--output_dir", str(out), "--resume_from_checkpoint", "last"])
    assert (
        main.main(["--model_id", tiny_model_dir, "--output_dir", str(out), *TINY_TRAIN_FLAGS, "--max_steps", "1"]) == 0
    )
    aside = [n for n in os.listdir(out) if n.startswith("previous-attempt-")]
    assert len(aside) == 1 and sorted(os.listdir(out / aside[0])) == [
        "checkpoint-1",
        "run_config.json",
    ]  # kept, not deleted
    assert os.path.isfile(out / "adapter_model.safetensors")


def test_a_refused_run_adds_nothing_and_a_failed_one_leaves_no_empty_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SystemExit, match="no such folder"):
        main.main(["--model_id", str(tmp_path / "no-model"), "--output_dir", str(out), *TINY_TRAIN_FLAGS])
    assert not out.exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--temperature", "inf"], "--temperature inf: must be a positive number"),
        (["--learning_rate", "nan"], "--learning_rate nan"),
        (["--reward_weights", "1,nan"], "every weight must be a finite number"),
        (["--verify_timeout", "inf"], "positive, finite number of seconds"),
        (["--lora_dropout", "2"], "--lora_dropout 2.0: must be in [0, 1)"),
        (["--loss_type", "bogus"], "--loss_type 'bogus': the installed TRL accepts ['grpo', 'dr_grpo', 'dapo'"),
        (["--dataset_id", "builtin:9"], "Bad built-in dataset id 'builtin:9'"),
        (["--beta", "-1"], "--beta -1.0"),
        (["--steps_per_generation", "0"], "--steps_per_generation 0: must be a positive integer"),
        (["--reward_weights", "0,0"], "all weights are 0"),
        (["--completions_log_max", "-1"], "--completions_log_max -1: must be >= 0"),
        (["--lora_target_modules", ""], "--lora_target_modules '': expected 'all-linear'"),
        (["--lora_target_modules", "q_proj,"], "--lora_target_modules 'q_proj,'"),
        (["--dataset_id", "BUILTIN:1"], "written in lower case, 'builtin:1'"),
        (["--dataset_id", "builtin:1,1@0.5"], "names level 1 twice"),
    ],
)
def test_meaningless_values_are_refused_before_loading(flags, message):
    with pytest.raises(SystemExit) as err:
        main.main(flags)
    assert message in str(err.value)


@pytest.mark.slow
def test_bad_flags_exit_2_with_one_line_each_and_no_traceback(tmp_path):
    (tmp_path / "file").write_text("x")
    start = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "main.py",
            "--loss_type",
            "bogus",
            "--temperature",
            "inf",
            "--output_dir",
            str(tmp_path / "file"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and time.time() - start < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), done.stderr
    assert "is a file, not a folder" in done.stderr


def test_an_unwritable_output_folder_fails_before_any_load(tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(
        train, "build_trainer", lambda *a, **k: pytest.fail("loaded although the folder cannot be written")
    )
    with pytest.raises(SystemExit, match="cannot write run folder"):
        main.main(["--model_id", tiny_model_dir, "--output_dir", str(tmp_path / "afile" / "run"), *TINY_TRAIN_FLAGS])


# ---------------------------------------------------------------- the original's commands
@pytest.mark.parametrize(
    "argv,steps,why",
    [
        ([], 40, "quick CPU recipe"),  # bare main.py: the quick recipe
        (["--num_train_epochs", "4"], -1, "--num_train_epochs given"),  # the original's launchers: epochs
        (["--num_train_epochs", "1"], -1, "--num_train_epochs given"),  # given even with the default value
        (["--num_train_epochs", "4", "--max_steps", "7"], 7, "--max_steps given"),
    ],
)
def test_a_given_flag_is_never_overridden_by_a_default(argv, steps, why):
    args, startup = resolve.parse("train", argv)
    assert args.max_steps == steps and why in startup.run_length
    line = train.run_length_line(args, train_rows=100, processes=1, why=startup.run_length)
    assert line.startswith("Run length: ") and why in line and "4 prompts x 4 completions per step" in line


@pytest.mark.parametrize("launcher", ["train_0.5b.sh", "train_3b.sh"])
def test_the_originals_launchers_parse_and_validate(launcher, monkeypatch):
    import shlex

    monkeypatch.chdir(ROOT)  # the launchers name their recipe relative to the repo

    with open(os.path.join(ROOT, launcher)) as f:
        text = f.read()
    command = text[text.index('"$PYTHON" main.py') + len('"$PYTHON" main.py') : text.index('"$@"')].replace("\\\n", " ")
    argv = [a.replace("$(date +%Y%m%d_%H%M%S)", "20261126_000000") for a in shlex.split(command)]
    args, _ = resolve.parse("train", argv)  # no training: flags and their combination only
    assert args.max_steps == -1 and args.num_train_epochs == 4 and args.train_split == "train[:5%]"
    assert (args.learning_rate, args.gradient_accumulation_steps, args.max_completion_length) == (1e-5, 8, 512)
    assert args.model_id.startswith("Qwen/Qwen2.5-") and args.save_strategy == "epoch"


def test_the_trainable_parameter_line_is_printed_and_kept(tiny_model_dir, tmp_path, capfd):
    args = flags.build_parser("train").parse_args(
        ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--save_strategy", "no"]
    )
    _, _, run_config = train.build_trainer(args, str(tmp_path / "run"))
    printed = capfd.readouterr().out
    assert "trainable params: " in printed and "|| all params: " in printed and "trainable%" in printed
    assert (
        f"{run_config['trainable_params']:,}" in printed and run_config["all_params"] > run_config["trainable_params"]
    )


@pytest.mark.slow
def test_report_to_wandb_trains_offline_into_the_run_folder(tiny_model_dir, tmp_path):
    out = tmp_path / "wandb-run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_SILENT="true")  # no login, no network
    cmd = _main_cmd(tiny_model_dir, str(out), "--report_to", "wandb", "--max_steps", "1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = os.listdir(out / "wandb")
    assert any(r.startswith("offline-run-") for r in runs), runs


# ---------------------------------------------------------------- seeing what a run does
def test_a_run_leaves_preflight_completions_telemetry_and_a_report(tiny_run):
    with open(os.path.join(tiny_run, "preflight.json")) as f:
        pre = json.load(f)
    for key in ("truncated_fraction", "format_reward_mean", "format_distribution", "accuracy_mean", "dropped"):
        assert key in pre
    assert (
        pre["verdict"] in ("ok", "warn", "no_signal") and pre["seconds_per_step"] > 0 and pre["estimated_total_s"] > 0
    )
    with open(os.path.join(tiny_run, "completions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert {r["step"] for r in rows} == {1, 2} and len(rows) == 2 * 4  # 2 steps x 4 completions
    assert all({"prompt_index", "completion", "rewards", "advantage", "length", "truncated"} <= set(r) for r in rows)
    assert set(rows[0]["rewards"]) == {"format_reward", "accuracy_reward"}
    with open(os.path.join(tiny_run, "log_history.json")) as f:
        history = json.load(f)
    assert any("telemetry/text_after_answer" in e and "telemetry/truncated" in e for e in history)
    with open(os.path.join(tiny_run, folders.RUN_STATE)) as f:
        assert json.load(f)["attempts"][-1]["completions_log"]["lines"] == 8
    with open(os.path.join(tiny_run, "report.html")) as f:
        assert '"verdict"' in f.read()


@pytest.mark.slow
@pytest.mark.parametrize("template", ["original", "worked_example"])
def test_preflight_only_on_the_embedded_model(tmp_path, template, capsys):
    """The untrained model almost never writes the format from the original prompt: the preflight says
    so and names the prompt that fixes it (NO_SIGNAL, exit 3, or WARN when a lucky sample or two gave
    a group some signal: which one depends on the sampled completions, so on rounding); from the
    worked example it has a signal."""
    out = str(tmp_path / "pre")
    code = main.main(["--preflight_only", "--prompt_template", template, "--output_dir", out])
    printed = capsys.readouterr().out
    with open(os.path.join(out, "preflight.json")) as f:
        pre = json.load(f)
    assert code == (3 if pre["verdict"] == "no_signal" else 0)
    if template == "original":
        assert pre["format_reward_mean"] < 0.1 and pre["zero_variance_group_fraction"] >= 0.75
        assert pre["verdict"].upper() in printed and "--prompt_template worked_example" in printed
    else:
        assert pre["verdict"] != "no_signal"
    assert not os.path.exists(os.path.join(out, "run_config.json"))  # nothing that blocks a later run
    names = set(os.listdir(out)) - {folders.RUN_LOCK}
    assert names == {"preflight.json"} and folders._left_early(out, names)


def test_a_lora_target_the_model_lacks_is_named_with_the_ones_it_has(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main.main(
            ["--model_id", tiny_model_dir, "--output_dir", str(out), *TINY_TRAIN_FLAGS]
            + ["--lora_target_modules", "q_proj,nonexistent_proj", "--no-preflight"]
        )
    assert "no linear layer named nonexistent_proj" in str(err.value) and "q_proj" in str(err.value)
    assert not out.exists()


# ---------------------------------------------------------------- resume bookkeeping
@pytest.fixture
def two_step_run(tiny_model_dir, tmp_path):
    """A finished 2-step run with a checkpoint at each step, completion log capped at 6 lines (4 a step)."""
    out = str(tmp_path / "two")
    flags = [*TINY_TRAIN_FLAGS, "--completions_log_max", "6", "--no-preflight"]
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", out, *flags]) == 0
    return out


def _log_steps(run):
    with open(os.path.join(run, "completions.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def test_resume_keeps_the_completion_log_exact(two_step_run):
    """As after kill -9 past step 1: resuming checkpoint-1 does step 2 again; its lines are not doubled and
    the cap holds across attempts."""
    assert _log_steps(two_step_run) == [1, 1, 1, 1, 2, 2]
    ckpt = os.path.join(two_step_run, "checkpoint-1")
    assert main.main(["--output_dir", two_step_run, "--resume_from_checkpoint", ckpt]) == 0
    assert _log_steps(two_step_run) == [1, 1, 1, 1, 2, 2]
    with open(os.path.join(two_step_run, folders.RUN_STATE)) as f:
        last = json.load(f)["attempts"][-1]
    assert last["completions_log"]["lines"] == 6 and last["steps"] == 2


def test_resume_into_a_new_folder_is_checked_like_in_place(two_step_run, tmp_path):
    ckpt = os.path.join(two_step_run, "checkpoint-1")
    new = str(tmp_path / "continued")
    with pytest.raises(SystemExit) as err:
        main.main(["--output_dir", new, "--resume_from_checkpoint", ckpt, "--learning_rate", "0.5"])
    assert "--learning_rate: the run was started with 0.01, not 0.5" in str(err.value)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "adapter_model.safetensors").write_bytes(b"someone else's")
    with pytest.raises(SystemExit, match="already holds files"):
        main.main(["--output_dir", str(taken), "--resume_from_checkpoint", ckpt])
    assert main.main(["--output_dir", new, "--resume_from_checkpoint", ckpt]) == 0
    with open(os.path.join(new, "run_config.json")) as f:
        config = json.load(f)
    with open(os.path.join(two_step_run, "run_config.json")) as f:
        source = json.load(f)
    assert config["resumed_from"] == ckpt and config["args"]["learning_rate"] == source["args"]["learning_rate"]
    assert os.path.isfile(os.path.join(new, "adapter_model.safetensors"))


def test_a_stop_during_the_last_step_finishes_the_run(tiny_model_dir, tmp_path):
    """SIGTERM while the last step runs: the run is complete (adapter saved), not interrupted, and nothing
    is trained past --max_steps."""
    from transformers import TrainerCallback

    class SignalInLastStep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps - 1:
                os.kill(os.getpid(), signal.SIGTERM)

    out = str(tmp_path / "last")
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--no-preflight"]
    args, startup = resolve.parse("train", argv)
    assert train.train(args, startup, callbacks=[SignalInLastStep()]) == 0
    with open(os.path.join(out, folders.RUN_STATE)) as f:
        state = json.load(f)
    assert state["complete"] and state["steps"] == 2 and not state["attempts"][-1]["interrupted"]
    assert os.path.isfile(os.path.join(out, "adapter_model.safetensors"))
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last"]) == 0
    with open(os.path.join(out, folders.RUN_STATE)) as f:
        assert json.load(f)["steps"] == 2  # resuming a finished run trains nothing more
    from safetensors.torch import load_file

    saved, last = (load_file(os.path.join(d, "adapter_model.safetensors")) for d in (out, f"{out}/checkpoint-2"))
    assert saved.keys() == last.keys() and all(torch.equal(saved[k], last[k]) for k in saved)  # its weights


@pytest.mark.parametrize("left", ["wandb", "completions", "README.md"])
def test_a_folder_left_before_its_first_checkpoint_by_wandb_trl_or_a_model_card_is_reused(tmp_path, left):
    out = tmp_path / "early"
    out.mkdir()
    (out / "run_config.json").write_text('{"args": {}}')
    (out / left).mkdir() if "." not in left else (out / left).write_text("card")
    args = flags.build_parser("train").parse_args(["--output_dir", str(out)])
    folder, resume, _ = folders.prepare_output_dir(args)
    files.release(os.path.join(folder, folders.RUN_LOCK))
    aside = [n for n in os.listdir(out) if n.startswith("previous-attempt-")]
    assert resume is None and len(aside) == 1 and left in os.listdir(out / aside[0])


def test_extending_a_finished_run_plans_its_schedule_anew(tiny_model_dir, tmp_path, capsys):
    """A finished 1-step run resumed with --max_steps 3: the schedule is planned for 3 steps and says so;
    restored as saved, it had ended, and steps 2-3 trained at learning rate 0."""
    out = str(tmp_path / "run")
    base = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--no-preflight", "--output_dir", out]
    assert main.main([*base, "--max_steps", "1", "--lr_scheduler_type", "linear"]) == 0
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last", "--max_steps", "3"]) == 0
    assert "Extending the run from 1 to 3 steps" in capsys.readouterr().out
    with open(os.path.join(out, "log_history.json")) as f:
        rates = {h["step"]: h["learning_rate"] for h in json.load(f) if "learning_rate" in h}
    assert rates[1] == pytest.approx(1e-2) and rates[2] == pytest.approx(1e-2 * 2 / 3) and rates[3] > 0


def test_resuming_a_checkpoint_without_optimizer_state_says_so(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--no-preflight", "--output_dir", out]
    assert main.main([*base, "--max_steps", "1", "--trainer", "save_only_model=true"]) == 0
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last", "--max_steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "holds no optimizer state (saved with save_only_model)" in printed
