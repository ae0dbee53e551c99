"""eval.py around the run it scores: eval.sh, the original's rules, held-out rows only, resume, refusals."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_TRAIN_FLAGS
from trl_grpo.answers import rewards
from trl_grpo.evaluation import pipeline as evaluate_mod
from trl_grpo.observe import metrics


def _run_eval(*argv):
    return evaluate_mod.main(list(argv))


def _lines(path):
    with open(path) as f:
        return sum(1 for _ in f)


def _eval_cmd(*argv):
    return [sys.executable, "eval.py", *argv]


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
    assert rewards.accuracy_reward([completion], [solution]) == [ours]
    assert metrics.original_rules_accuracy(completion, solution) == original


def test_raw_prompt_format_is_the_originals_evaluation_prompt(tiny_run):
    import data_utils
    from trl_grpo.data import prepare, prompts
    from trl_grpo.models import loading

    tokenizer = loading.load_tokenizer(tiny_run)
    rows, _, _ = prepare.prompt_rows(
        tokenizer, "builtin:1", "test[:2]", "eval", template="original", prompt_format="raw"
    )
    _, standard = data_utils.load_and_process_data("builtin:1", None, "test[:2]", prompt_template="original")
    assert rows[0]["prompt"] == prompts.SYSTEM_PROMPT + "\n" + standard[0]["prompt"][1]["content"]


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
    from trl_grpo.data import sources

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
    trained = sources.training_problems(data, "train", "test")
    assert not any(trained.match(r["problem"]) for r in records)
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

    from trl_grpo.data import sources

    trained = sorted(sources.training_problems(data, "train", "test").exact)[:6]
    fullwidth = str.maketrans("0123456789", "０１２３４５６７８９")
    disguised = [
        trained[3].translate(fullwidth),  # fullwidth digits
        trained[4][:2] + "\u200b" + trained[4][2:].replace("?", " ?"),  # a zero-width space, a space before "?"
        trained[5].replace("a", "\u0430", 1).replace("o", "\u03bf", 1),  # Cyrillic a, Greek o
    ]
    assert all(sources.normalise_problem(d) not in trained for d in disguised)  # not the same text
    rows = [{"problem": p, "solution": "\\boxed{1}"} for p in trained[:3] + disguised] + [
        {"problem": "What is 9 x 9?", "solution": "\\boxed{81}"}
    ]
    folder = tmp_path / "other"
    DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(str(folder))
    out = str(tmp_path / "e.json")
    args = ["--model_dir", run, "--dataset_id", str(folder), "--max_completion_length", "4", "--output_file", out]
    assert _run_eval(*args) == 0
    with open(evaluate_mod.summary_path(out)) as f:
        summary = json.load(f)
    assert summary["dropped"]["contaminated"] == 6 and summary["n_records"] == 1
    assert summary["contamination"]["matched"] == {"same text": 3, "after Unicode folding": 3}


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
