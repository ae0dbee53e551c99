"""eval.py + eval.sh: records, scores identical to reward.py, summary arithmetic, guards, launcher."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from trl_grpo.answers import rewards
from trl_grpo.evaluation import pipeline as evaluate_mod
from trl_grpo.observe import metrics
from trl_grpo.runs.context import run_folder, split_context
from trl_grpo.settings import resolve


def _run_eval(*argv):
    return evaluate_mod.main(list(argv))


@pytest.fixture(scope="module")
def tiny_eval(tiny_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval") / "new" / "tiny.json")  # eval.py makes the missing folder
    assert _run_eval("--model_dir", tiny_run, "--limit", "5", "--max_completion_length", "8", "--output_file", out) == 0
    with open(out) as f:
        records = json.load(f)
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    return out, records, summary


def test_records_have_the_fields(tiny_eval):
    _, records, _ = tiny_eval
    assert len(records) == 5
    for r in records:
        for key in (
            "prompt",
            "completion",
            "solution",
            "reward",
            "format_reward",
            "extracted_answer",
            "gold_answer",
            "completions",
            "rewards",
        ):
            assert key in r, key
        assert r["prompt"] not in r["completion"] and not r["completion"].startswith("<|im_start|>")


def test_eval_uses_the_runs_training_prompt(tiny_eval, tiny_run):
    _, records, summary = tiny_eval
    assert records[0]["prompt"].endswith("<|im_start|>assistant\n<think>")  # prefilled, as trained
    assert summary["settings"]["prompt_template"] == "worked_example"
    assert summary["dataset_id"] == "builtin:1"


def test_scores_equal_reward_py(tiny_eval):
    _, records, _ = tiny_eval
    for r in records:
        assert r["reward"] == rewards.accuracy_reward([r["completion"]], [r["solution"]])[0]
        assert r["format_reward"] == rewards.format_reward([r["completion"]], prompts=[r["prompt"]])[0]


def test_summary_counts_add_up(tiny_eval):
    out, records, summary = tiny_eval
    assert summary["n"] + summary["skipped_unparseable_gold"] == summary["n_records"] == len(records)
    assert sum(summary["format_distribution"].values()) == len(records) * summary["num_samples"]
    assert summary["accuracy"] == pytest.approx(sum(r["reward"] for r in records) / len(records), abs=1e-4)
    lo, hi = summary["accuracy_ci95"]
    assert 0 <= lo <= summary["accuracy"] <= hi <= 1
    assert summary["results_file"] == out and summary["generated_tokens"] > 0


def test_sampling_k_gives_pass_and_maj(tiny_run, tmp_path):
    out = str(tmp_path / "k.json")
    _run_eval(
        "--model_dir",
        tiny_run,
        "--limit",
        "2",
        "--max_completion_length",
        "4",
        "--num_samples",
        "4",
        "--temperature",
        "1.0",
        "--output_file",
        out,
    )
    with open(out) as f:
        records = json.load(f)
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert all(len(r["completions"]) == 4 for r in records)
    assert {"pass@1", "pass@2", "pass@4", "maj@4"} <= set(summary)


@pytest.mark.parametrize(
    "n,c,k,want", [(5, 0, 1, 0.0), (5, 5, 3, 1.0), (5, 2, 1, 0.4), (5, 2, 2, 0.7), (10, 1, 5, 0.5)]
)
def test_pass_at_k_hand_cases(n, c, k, want):
    assert metrics.pass_at_k(n, c, k) == pytest.approx(want)


def test_majority_vote():
    # "7" twice (correct) beats "8" once; text answers are normalised before voting
    assert metrics.majority_correct(["7", "8", "7"], [1.0, 0.0, 1.0]) == 1.0
    assert metrics.majority_correct(["8", "\\text{8}", "7"], [0.0, 0.0, 1.0]) == 0.0
    assert metrics.majority_correct([None, None], [0.0, 0.0]) == 0.0


def test_existing_results_are_never_clobbered(tiny_eval, tiny_run):
    out, records, _ = tiny_eval
    with open(out) as f:
        before = f.read()
    with pytest.raises(SystemExit, match="already exists.*--overwrite"):
        _run_eval("--model_dir", tiny_run, "--limit", "1", "--output_file", out)
    with open(out) as f:
        assert f.read() == before


def test_output_folder_is_created(tiny_run, tmp_path):
    out = tmp_path / "new" / "deeper" / "r.json"
    _run_eval("--model_dir", tiny_run, "--limit", "1", "--max_completion_length", "2", "--output_file", str(out))
    assert out.is_file() and (tmp_path / "new" / "deeper" / "r.summary.json").is_file()


def test_compare_with_a_results_file(tiny_eval, tiny_run, tmp_path, capsys):
    out, _, _ = tiny_eval
    _run_eval(
        "--model_dir",
        tiny_run,
        "--limit",
        "2",
        "--max_completion_length",
        "2",
        "--output_file",
        str(tmp_path / "c.json"),
        "--compare",
        out,
    )
    printed = capsys.readouterr().out
    assert "Accuracy: " in printed and "(compare)" in printed and "format_reward_mean" in printed


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model_dir", "/no/such/run"], "no such folder"),
        (["--num_samples", "3"], "--temperature 1.0"),
        (["--limit", "0"], "--limit 0"),
        (["--temperature", "inf"], "--temperature inf"),
        (["--verify_timeout", "nan"], "--verify_timeout nan"),
        (["--dataset_id", "builtin:9"], "Bad built-in dataset id"),
        (["--resume", "--overwrite"], "contradict"),
        (["--device", "gpu"], "--device 'gpu': expected"),
    ],
)
def test_bad_input(argv, message):
    with pytest.raises(SystemExit, match=message):
        _run_eval(*argv)


def test_folder_with_neither_model_nor_adapter(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(SystemExit, match="neither a model"):
        _run_eval("--model_dir", str(tmp_path))


def test_adapter_whose_base_is_missing(tiny_run, tmp_path):
    adapter = tmp_path / "orphan"
    adapter.mkdir()
    with open(os.path.join(tiny_run, "adapter_config.json")) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    shutil.copy(os.path.join(tiny_run, "adapter_model.safetensors"), adapter)
    with pytest.raises(SystemExit, match="base model .* cannot be found.*--base_model"):
        _run_eval("--model_dir", str(adapter))


def test_split_the_dataset_lacks(tiny_run, tmp_path):
    out = str(tmp_path / "eval.json")  # not the checkout's results/, which keeps the claim's lock file
    with pytest.raises(SystemExit, match="Split 'validation'"):
        _run_eval("--model_dir", tiny_run, "--split", "validation", "--output_file", out)


def test_eval_sh_runs_the_newest_run_against_its_base(tiny_run, tmp_path):
    env = dict(
        os.environ,
        CKPTS=os.path.dirname(tiny_run),
        LIMIT="2",
        MAX_COMPLETION_LENGTH="2",
        OUTPUT_FILE=str(tmp_path / "sh.json"),
    )
    done = subprocess.run(["bash", "eval.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Accuracy: " in done.stdout and "(compare)" in done.stdout
    assert (tmp_path / "sh.json").is_file() and (tmp_path / "sh.compare.json").is_file()


def test_eval_sh_without_runs_says_what_to_do(tmp_path):
    env = dict(os.environ, CKPTS=str(tmp_path))
    done = subprocess.run(["bash", "eval.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "make train" in done.stderr


def test_unreachable_hub_model_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match="--model_dir embedded"):
        _run_eval("--model_dir", "no-such-org/no-such-model", "--output_file", str(tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()


def test_summary_records_the_fast_paths(tiny_eval):
    _, _, summary = tiny_eval
    assert summary["fast_paths"] == {"setting": "auto", "enabled": True, "lean_decode": "used"}  # auto on CPU


# ---------------------------------------------------------------- reliability: claims, partial results, checkpoints
def _lines(path):
    with open(path) as f:
        return sum(1 for _ in f)


def _eval_cmd(*argv):
    return [sys.executable, "eval.py", *argv]


@pytest.mark.slow
def test_of_two_evaluations_into_one_file_exactly_one_writes(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "same.json")
    argv = [
        "--model_dir",
        tiny_run,
        "--limit",
        "40",
        "--batch_size",
        "1",
        "--max_completion_length",
        "8",
        "--output_file",
        out,
    ]
    first = subprocess.Popen(_eval_cmd(*argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not os.path.exists(evaluate_mod.partial_path(out)) and time.time() < deadline:
        time.sleep(0.1)
    # The second in this process (the claim is the OS's lock, so this is another process to it);
    # a refusal reaching the shell as exit 2 and error lines is cli.cli, tested through main.py.
    with pytest.raises(SystemExit) as second:
        _run_eval(*argv)
    assert first.poll() is None, "the first evaluation ended before the second tried"
    first.communicate(timeout=300)
    assert first.returncode == 0 and f"pid {first.pid}" in str(second.value)
    assert "Generating" not in capsys.readouterr().err
    with open(out) as f:
        assert len(json.load(f)) == 40


@pytest.mark.slow
def test_ctrl_c_keeps_finished_records_and_resume_completes_them(tiny_run, tmp_path):
    out = str(tmp_path / "interrupted.json")
    argv = [
        "--model_dir",
        tiny_run,
        "--limit",
        "60",
        "--batch_size",
        "1",
        "--max_completion_length",
        "8",
        "--output_file",
        out,
    ]
    # The child gets SIGINT's default action back: under `make test &` (no job control) the shell
    # ignores SIGINT for background jobs, children inherit that, and Python then never raises
    # KeyboardInterrupt, so the interruption under test would not happen.
    proc = subprocess.Popen(
        _eval_cmd(*argv),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial = evaluate_mod.partial_path(out)
    # Generous: on a loaded machine the imports alone can take minutes.
    deadline = time.time() + 600
    while time.time() < deadline and (not os.path.exists(partial) or _lines(partial) < 4):
        assert proc.poll() is None, "eval.py ended before its interruption: " + proc.communicate()[0][-2000:]
        time.sleep(0.1)
    assert _lines(partial) >= 4, "the evaluation never got going"
    proc.send_signal(signal.SIGINT)
    printed, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, printed[-2000:]
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    kept = _lines(partial) - 1  # the settings line
    assert summary["complete"] is False and 3 <= kept < 60 and summary["missing"] == 60 - summary["n"]
    assert not os.path.exists(out)  # the final file appears only when everything is scored
    with pytest.raises(SystemExit, match="--resume"):  # the same command again, without --resume
        _run_eval(*argv)
    assert evaluate_mod.main([*argv, "--resume"]) == 0
    whole = str(tmp_path / "whole.json")
    assert evaluate_mod.main([*argv[:-1], whole]) == 0
    with open(out) as f, open(whole) as g:
        resumed, uninterrupted = json.load(f), json.load(g)
    assert resumed == uninterrupted and not os.path.exists(partial)  # greedy fp32: the same records, in dataset order


def test_resume_with_other_settings_is_refused(tiny_run, tmp_path):
    out = tmp_path / "r.json"
    evaluate_mod.PartialResults(str(out), {"model": tiny_run, "temperature": 0.0}, resume=False)
    with pytest.raises(SystemExit, match="would mix results of another evaluation"):
        _run_eval(
            "--model_dir",
            tiny_run,
            "--limit",
            "2",
            "--max_completion_length",
            "4",
            "--output_file",
            str(out),
            "--resume",
        )


@pytest.mark.parametrize("inside", ["checkpoint-2", "sft", "sft/checkpoint-3", "merged"])
def test_a_folder_inside_a_run_is_evaluated_with_its_runs_settings(tiny_run, tmp_path, inside):
    """A checkpoint, the cold start's adapter (README: evaluate RUN/sft to measure the cold start alone)
    and the merged model: eval.py takes the data, prompt, length and held-out rows of the run they
    belong to, as it does for the run folder itself."""
    import shutil

    run = tmp_path / "csv-run"
    shutil.copytree(os.path.join(tiny_run, "checkpoint-2"), run / inside)
    with open(os.path.join(tiny_run, "run_config.json")) as f:
        cfg = json.load(f)
    cfg["args"].update(dataset_id="builtin:2", prompt_template="original", max_completion_length=5)
    (run / "run_config.json").write_text(json.dumps(cfg))
    args = evaluate_mod.build_parser().parse_args(["--model_dir", str(run / inside)])
    resolve.fill_eval_defaults(args)
    assert (args.dataset_id, args.prompt_template, args.max_completion_length) == ("builtin:2", "original", 5)
    assert split_context(args)["recorded"] == cfg["held_out"]  # the held-out rows the run recorded


def test_a_folder_named_like_a_runs_part_outside_a_run_has_no_settings(tmp_path):
    (tmp_path / "sft").mkdir()
    assert run_folder(str(tmp_path / "sft")) is None and run_folder(str(tmp_path / "other" / "merged")) is None


def test_an_unwritable_output_fails_before_any_work(tiny_run, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(
        evaluate_mod, "evaluate", lambda *a, **k: pytest.fail("evaluated although the output cannot be written")
    )
    with pytest.raises(SystemExit, match="cannot write"):
        _run_eval("--model_dir", tiny_run, "--output_file", str(tmp_path / "afile" / "out.json"))
    with pytest.raises(SystemExit, match="no summary file"):
        _run_eval(
            "--model_dir",
            tiny_run,
            "--compare",
            str(tmp_path / "missing.json"),
            "--output_file",
            str(tmp_path / "o.json"),
        )


def _broken_copy(tiny_run, tmp_path, name, edit):
    import shutil

    folder = tmp_path / name
    shutil.copytree(tiny_run, folder, ignore=shutil.ignore_patterns("checkpoint-*", ".*.lock", ".run.lock"))
    edit(folder)
    return str(folder)


@pytest.mark.parametrize(
    "name,edit,message",
    [
        (
            "truncated",
            lambda f: (f / "adapter_model.safetensors").write_bytes(
                (f / "adapter_model.safetensors").read_bytes()[:100]
            ),
            "is truncated or not a safetensors file (100 bytes)",
        ),
        ("empty", lambda f: (f / "adapter_model.safetensors").write_bytes(b""), "(0 bytes)"),
        (
            "no-weights",
            lambda f: (f / "adapter_model.safetensors").unlink(),
            "has adapter_config.json but no adapter_model.safetensors",
        ),
        (
            "bad-adapter-config",
            lambda f: (f / "adapter_config.json").write_text("{oops"),
            "adapter_config.json cannot be read",
        ),
        ("bad-run-config", lambda f: (f / "run_config.json").write_text("{oops"), "run_config.json' cannot be read"),
    ],
)
def test_bad_run_folders_are_named_with_the_fix(tiny_run, tmp_path, capsys, name, edit, message):
    folder = _broken_copy(tiny_run, tmp_path, name, edit)
    with pytest.raises(SystemExit) as err:
        _run_eval("--model_dir", folder, "--output_file", str(tmp_path / "o.json"))
    assert message in str(err.value) and folder in str(err.value)


def test_a_model_folder_without_weights_or_tokenizer(tiny_model_dir, tmp_path):
    import shutil

    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(os.path.join(tiny_model_dir, "config.json"), only_config)
    with pytest.raises(SystemExit, match="has config.json but no .safetensors weights"):
        _run_eval("--model_dir", str(only_config), "--output_file", str(tmp_path / "o.json"))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_model_dir, f), no_tokenizer)
    import main

    with pytest.raises(SystemExit, match="has no tokenizer files"):
        main.main(["--model_id", str(no_tokenizer)])


def test_summary_puts_the_original_scorer_beside_ours(tiny_eval):
    _, records, summary = tiny_eval
    assert "accuracy_original_rules" in summary and 0.0 <= summary["accuracy_original_rules"] <= 1.0
    assert all(len(r["original_rules_rewards"]) == len(r["completions"]) for r in records)
