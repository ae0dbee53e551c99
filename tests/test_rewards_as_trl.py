"""Rewards as TRL calls them: TRL's names, trl.rewards' own, dotted paths, and every dataset column
of the user's own reaching every reward, in training and in eval.py."""

import json
import os
import pickle
import re
import sys

import pytest

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.answers.registry import get_reward_funcs, reward_sources

OK = "<think>1 + 1 = 2</think><answer>\\boxed{2}</answer>"


def test_trls_names_for_the_built_in_rewards():
    funcs = get_reward_funcs("accuracy_reward,format_reward")
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward"]
    assert [f([OK], solution=["\\boxed{2}"]) for f in funcs] == [[1.0], [1.0]]


def test_trls_own_rewards_read_our_completions_as_trl_hands_them_on_chat_data():
    funcs = get_reward_funcs("think_format_reward,reasoning_accuracy_reward")
    prefilled = OK.removeprefix("<think>")  # the prompt ended in <think>: the completion starts inside it
    got = [f([prefilled, "no tags"], prompts=["p<think>"] * 2, solution=["\\boxed{2}"] * 2) for f in funcs]
    assert got == [[1.0, 0.0], [1.0, 0.0]]
    pickle.dumps(funcs)  # TRL and accelerate may pickle rewards


@pytest.mark.parametrize("spec", ["mypkg.rewards.short_reward", "mypkg.rewards:short_reward"])
def test_a_reward_by_dotted_path(tmp_path, monkeypatch, spec):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "rewards.py").write_text(
        "def short_reward(completions, **kwargs):\n    return [1.0 / len(c) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (func,) = get_reward_funcs(spec)
    assert func.__name__ == "short_reward" and func(["ab"]) == [0.5]
    assert reward_sources(spec)[0]["name"] == "short_reward"
    sys.modules.pop("mypkg.rewards", None)
    sys.modules.pop("mypkg", None)


def test_an_unknown_reward_names_every_accepted_form():
    with pytest.raises(ValueError, match="think_format_reward.*package.module.function"):
        get_reward_funcs("no_such_reward")


DIFFICULTY_REWARD = """
def difficulty_reward(completions, difficulty, **kwargs):
    return [float(d) for d in difficulty]  # a column of the user's own dataset, by its own name
"""


@pytest.mark.slow
def test_a_reward_reads_a_column_of_the_users_dataset_in_training_and_eval(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1), "difficulty": i % 3} for i in range(40)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "diff.py").write_text(DIFFICULTY_REWARD)
    out = str(tmp_path / "run")
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    flags += ["--dataset_id", str(tmp_path / "data.jsonl"), "--train_split", "train", "--output_dir", out]
    assert main.main([*flags, "--reward_funcs", "format,accuracy,diff.py:difficulty_reward"]) == 0
    by_problem = {f"What is {i} + 1?": i % 3 for i in range(40)}
    with open(os.path.join(out, "completions.jsonl")) as f:
        logged = [row for row in map(json.loads, f) if "prompt" in row]  # completion rows, not markers
    asked = [re.search(r"What is \d+ \+ 1\?", line["prompt"]).group(0) for line in logged]
    assert logged and [line["rewards"]["difficulty_reward"] for line in logged] == [by_problem[q] for q in asked]
    from trl_grpo.evaluation import pipeline

    result = str(tmp_path / "e.json")
    assert pipeline.main(["--model_dir", out, "--max_completion_length", "4", "--output_file", result]) == 0
    with open(result) as f:
        records = json.load(f)
    assert records and all(r["extra_rewards"]["difficulty_reward"][0] == by_problem[r["problem"]] for r in records)
