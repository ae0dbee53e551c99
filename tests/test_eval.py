"""eval.py + eval.sh: records, scores identical to reward.py, summary arithmetic, guards, launcher."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import evaluation as evaluate_mod
import metrics
import reward
import settings
from conftest import ROOT, TINY_TRAIN_FLAGS


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
        assert r["reward"] == reward.accuracy_reward([r["completion"]], [r["solution"]])[0]
        assert r["format_reward"] == reward.format_reward([r["completion"]], prompts=[r["prompt"]])[0]


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
    # a refusal reaching the shell as exit 2 and error lines is run_files.cli, tested through main.py.
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


def test_a_checkpoint_folder_is_evaluated_with_its_runs_settings(tiny_run, tmp_path, monkeypatch):
    """An interrupted run has only checkpoints: eval.py reads the run's run_config.json from the parent."""
    import shutil

    run = tmp_path / "csv-run"
    shutil.copytree(os.path.join(tiny_run, "checkpoint-2"), run / "checkpoint-2")
    with open(os.path.join(tiny_run, "run_config.json")) as f:
        cfg = json.load(f)
    cfg["args"].update(dataset_id="builtin:2", prompt_template="original", max_completion_length=5)
    (run / "run_config.json").write_text(json.dumps(cfg))
    args = evaluate_mod.build_parser().parse_args(["--model_dir", str(run / "checkpoint-2")])
    settings.fill_eval_defaults(args)
    assert (args.dataset_id, args.prompt_template, args.max_completion_length) == ("builtin:2", "original", 5)


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


def test_eval_sh_reads_relative_paths_from_the_callers_folder(tiny_run, tmp_path):
    """What eval.sh hands eval.py, recorded by a stand-in Python (eval.py itself runs end to end in
    test_eval_sh_runs_the_newest_run_against_its_base): relative paths become the caller's."""
    import shutil

    shutil.copytree(tiny_run, tmp_path / "myrun", ignore=shutil.ignore_patterns(".*.lock", ".run.lock"))
    record = tmp_path / "argv.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    env = dict(os.environ, MODEL_DIR="myrun", LIMIT="2", MAX_COMPLETION_LENGTH="2", COMPARE="none", PYTHON=str(fake))
    extra = ["--output_file", "out/x.json", "--base_model=myrun"]  # relative paths as extra arguments
    done = subprocess.run(
        ["bash", os.path.join(ROOT, "eval.sh"), *extra], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    argv = record.read_text().splitlines()
    assert argv == [
        "eval.py",  # run from the checkout
        *("--model_dir", str(tmp_path / "myrun"), "--limit", "2", "--max_completion_length", "2"),
        *("--output_file", str(tmp_path / "out" / "x.json"), f"--base_model={tmp_path / 'myrun'}"),
    ]


def test_eval_sh_without_a_venv_says_make_setup(tmp_path):
    env = dict(os.environ, PYTHON=str(tmp_path / "no-venv" / "python"))
    done = subprocess.run(["bash", "eval.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "make setup" in done.stderr


# ---------------------------------------------------------------- the original's numbers and protocol
def test_summary_puts_the_original_scorer_beside_ours(tiny_eval):
    _, records, summary = tiny_eval
    assert "accuracy_original_rules" in summary and 0.0 <= summary["accuracy_original_rules"] <= 1.0
    assert all(len(r["original_rules_rewards"]) == len(r["completions"]) for r in records)


@pytest.mark.parametrize(
    "completion,solution,ours,original",
    [
        ("<think>a</think><answer>370</answer>", "\\boxed{370}", 1.0, 0.0),  # no box: the original scores 0
        ("<think>\\boxed{5}</think><answer>\\boxed{4}</answer>", "\\boxed{4}", 1.0, 0.0),  # it reads the first box
        ("<think>a</think><answer>\\boxed{0.5}</answer>", "\\boxed{\\frac{1}{2}}", 1.0, 0.0),  # strings, not math
        ("<think>a</think><answer>\\boxed{7}</answer>", "no box in the solution", None, 1.0),  # it credits no gold
    ],
)
def test_the_original_rules_differ_where_documented(completion, solution, ours, original):
    assert reward.accuracy_reward([completion], [solution]) == [ours]
    assert metrics.original_rules_accuracy(completion, solution) == original


def test_raw_prompt_format_is_the_originals_evaluation_prompt(tiny_run):
    import data_utils
    import model_utils

    tokenizer = model_utils.load_tokenizer(tiny_run)
    rows, _, _ = data_utils.prompt_rows(
        tokenizer, "builtin:1", "test[:2]", "eval", template="original", prompt_format="raw"
    )
    _, standard = data_utils.load_and_process_data("builtin:1", None, "test[:2]", prompt_template="original")
    assert rows[0]["prompt"] == data_utils.SYSTEM_PROMPT + "\n" + standard[0]["prompt"][1]["content"]


def test_the_originals_local_run_name_is_a_missing_folder_not_a_hub_id(capsys):
    with pytest.raises(SystemExit) as err:
        _run_eval("--model_dir", "Qwen2.5-3B-GRPO-test")
    assert "no such folder: Qwen2.5-3B-GRPO-test" in str(err.value) and "hub" not in str(err.value)


# ---------------------------------------------------------------- one split shared by training and evaluation
@pytest.fixture(scope="module")
def jsonl_run(tiny_model_dir, tmp_path_factory):
    """A 2-step run on a one-file dataset (no test split: one is carved by problem text)."""
    import main

    folder = tmp_path_factory.mktemp("jsonl")
    data = folder / "math.jsonl"
    rows = [{"problem": f"What is {i} + 1?", "solution": f"{i} + 1 = \\boxed{{{i + 1}}}"} for i in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    flags = list(TINY_TRAIN_FLAGS)
    flags[flags.index("--dataset_id") + 1], flags[flags.index("--train_split") + 1] = str(data), "train"
    out = str(folder / "run")
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", out, *flags, "--no-preflight"]) == 0
    return str(data), out


def test_a_one_file_run_is_evaluated_on_exactly_the_rows_it_held_out(jsonl_run, tmp_path):
    import data_utils

    data, run = jsonl_run
    with open(os.path.join(run, "run_config.json")) as f:
        config = json.load(f)
    held_out = config["held_out"]
    assert held_out["source"] == "carved from train" and config["train_rows"] + held_out["rows"] == 40
    out = str(tmp_path / "e.json")
    assert _run_eval("--model_dir", run, "--max_completion_length", "4", "--output_file", out) == 0
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    with open(out) as f:
        records = json.load(f)
    assert summary["held_out"]["problems_sha256"] == held_out["problems_sha256"]
    assert summary["n_records"] == held_out["rows"] and summary["dropped"]["contaminated"] == 0
    trained = data_utils.training_problems(data, "train", "test")
    assert not {data_utils.normalise_problem(r["problem"]) for r in records} & trained
    assert "training rows of the run" in summary["contamination"]["checked_against"]


def test_eval_refuses_a_run_whose_data_changed_since_training(jsonl_run, tmp_path):
    data, run = jsonl_run
    copy = shutil.copytree(run, tmp_path / "run")
    changed = tmp_path / "math.jsonl"
    extra = [{"problem": f"What is {i} + 2?", "solution": f"\\boxed{{{i + 2}}}"} for i in range(40)]
    with open(data, encoding="utf-8") as f:
        changed.write_text(f.read() + "".join(json.dumps(r) + "\n" for r in extra), encoding="utf-8")
    with open(copy / "run_config.json") as f:
        config = json.load(f)
    config["args"]["dataset_id"] = str(changed)
    (copy / "run_config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as err:
        _run_eval("--model_dir", str(copy), "--output_file", str(tmp_path / "e.json"))
    assert "not those the run held out" in str(err.value) and "dataset changed since training" in str(err.value)


def test_a_test_split_sharing_problems_with_training_is_scored_without_them(jsonl_run, tmp_path):
    """A test file given by the user that repeats training problems: they are left out, counted, said."""
    data, run = jsonl_run
    from datasets import Dataset, DatasetDict

    import data_utils

    trained = sorted(data_utils.training_problems(data, "train", "test"))[:3]
    rows = [{"problem": p, "solution": "\\boxed{1}"} for p in trained] + [
        {"problem": "What is 9 x 9?", "solution": "\\boxed{81}"}
    ]
    folder = tmp_path / "other"
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(str(folder))
    out = str(tmp_path / "e.json")
    args = ["--model_dir", run, "--dataset_id", str(folder), "--max_completion_length", "4", "--output_file", out]
    assert _run_eval(*args) == 0
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert summary["dropped"]["contaminated"] == 3 and summary["n_records"] == 1


def test_the_runs_own_training_rows_are_said_to_be_so(jsonl_run, tmp_path, capsys):
    data, run = jsonl_run
    out = str(tmp_path / "e.json")
    assert _run_eval("--model_dir", run, "--split", "train", "--max_completion_length", "4", "--output_file", out) == 0
    assert "Not a held-out measure" in capsys.readouterr().out
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    with open(os.path.join(run, "run_config.json")) as f:
        assert summary["n_records"] == json.load(f)["train_rows"]


@pytest.mark.parametrize(
    "change,named",
    [("data", "rows_sha256"), ("dtype", "dtype"), ("fast_paths", "fast_paths"), ("weights", "weights")],
)
def test_resume_refuses_a_partial_of_other_data_precision_paths_or_weights(
    tiny_run, tmp_path, monkeypatch, change, named
):
    import torch
    from safetensors.torch import load_file, save_file

    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns(".*.lock", ".run.lock"))
    data = tmp_path / "d.jsonl"
    rows = [{"problem": f"What is {i} + 1?", "answer": i + 1} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = str(tmp_path / "r.json")
    argv = ["--model_dir", str(run), "--dataset_id", str(data), "--split", "train", "--max_completion_length", "2"]
    argv += ["--output_file", out]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # stopped before the first problem: the partial file holds its settings line

    monkeypatch.setattr(evaluate_mod, "_generate_missing", interrupted)
    assert _run_eval(*argv) == 130
    monkeypatch.undo()
    if change == "data":
        rows[0]["answer"] = 999
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif change == "dtype":
        argv += ["--bf16"]
    elif change == "fast_paths":
        argv += ["--fast_paths", "off"]
    else:
        weights = run / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        first = next(iter(tensors))
        tensors[first] = tensors[first] + torch.ones_like(tensors[first])
        save_file(tensors, str(weights))
    with pytest.raises(SystemExit) as err:
        _run_eval(*argv, "--resume")
    assert "would mix results of another evaluation" in str(err.value) and f"{named}:" in str(err.value)


# ---------------------------------------------------------------- small things that gave a wrong number or a traceback
def test_an_evaluation_with_no_usable_gold_has_no_accuracy(tiny_run, tmp_path, capsys):
    data = tmp_path / "placeholders.jsonl"
    data.write_text("".join(json.dumps({"problem": f"p{i}?", "answer": "N/A"}) + "\n" for i in range(3)))
    out = str(tmp_path / "e.json")
    argv = ["--model_dir", tiny_run, "--dataset_id", str(data), "--split", "train", "--max_completion_length", "2"]
    assert _run_eval(*argv, "--output_file", out) == 0
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert summary["accuracy"] is None and summary["n"] == 0 and summary["accuracy_ci95"] is None
    assert "Accuracy: none (n = 0: none of the 3 problems has a usable gold answer" in capsys.readouterr().out


def test_prompts_past_the_models_context_are_dropped_even_without_a_limit(tiny_run, tmp_path):
    """--max_prompt_length 0 keeps every prompt the model can read; longer ones are dropped and counted."""
    data = tmp_path / "long.jsonl"
    rows = [{"problem": "What is 1 + 1?", "answer": "2"}, {"problem": "word " * 2000 + "?", "answer": "1"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "e.json")
    argv = ["--model_dir", tiny_run, "--dataset_id", str(data), "--split", "train", "--max_prompt_length", "0"]
    assert _run_eval(*argv, "--max_completion_length", "2", "--output_file", out) == 0
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert summary["n_records"] == 1 and summary["dropped"]["prompt_too_long"] == 1


@pytest.mark.slow
def test_sigterm_ends_an_evaluation_like_ctrl_c(tiny_run, tmp_path):
    out = str(tmp_path / "t.json")
    argv = ["--model_dir", tiny_run, "--limit", "60", "--batch_size", "1", "--max_completion_length", "8"]
    proc = subprocess.Popen(
        _eval_cmd(*argv, "--output_file", out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    partial, deadline = evaluate_mod.partial_path(out), time.time() + 600
    while time.time() < deadline and (not os.path.exists(partial) or _lines(partial) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    printed, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, printed[-2000:]
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert summary["complete"] is False and summary["n"] >= 2 and "--resume" in printed


def test_help_says_what_the_command_does_and_each_default_once(capsys):
    with pytest.raises(SystemExit):
        evaluate_mod.main(["--help"])
    text = capsys.readouterr().out
    assert "Evaluate a model or a trained adapter" in text and "summarize." in text
    flat = " ".join(text.split())
    assert "(default: the run's, else" in flat and "(default: None)" not in flat  # stated once, by the help itself


@pytest.mark.parametrize("command", ["eval.py", "main.py"])
def test_an_unknown_flag_is_one_line_naming_it(command):
    done = subprocess.run([sys.executable, command, "--bogus_flag", "1"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: unrecognized arguments: --bogus_flag 1. {command} --help lists the flags."
    ]


def test_a_refused_evaluation_gives_its_claim_back(tiny_run, tmp_path):
    """eval.py's main() called again in one process (a bench, a notebook): a refusal holds nothing."""
    out = tmp_path / "taken.json"
    out.write_text("[]")
    argv = ["--model_dir", tiny_run, "--limit", "1", "--max_completion_length", "2", "--output_file", str(out)]
    for _ in range(2):  # the second would say "being written by another process" if the first kept its claim
        with pytest.raises(SystemExit, match="already exists"):
            _run_eval(*argv)
    (tmp_path / "fresh.compare.json").write_text("[]")  # the --compare base column's file, taken
    compare = [*argv[:-1], str(tmp_path / "fresh.json"), "--compare", "base"]
    with pytest.raises(SystemExit, match="fresh.compare.json already exists"):
        _run_eval(*compare)
    assert _run_eval(*compare[:-2]) == 0  # fresh.json was claimed before its compare file was refused
