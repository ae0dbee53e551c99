"""trl_grpo/training/dynamic_sampling.py: groups without signal replaced by groups of further prompts, within
the bound, logged, drawn alike on resume; refused where it cannot work."""

import json
import os

import pytest
import torch

import main
from conftest import TINY_TRAIN_FLAGS, tiny_trainer
from trl_grpo.runs.cli import UsageError
from trl_grpo.training import dynamic_sampling


def test_groups_are_taken_and_repadded_from_batches_of_different_widths():
    a = {
        "prompt_ids": torch.tensor([[0, 5], [0, 5], [6, 7], [6, 7]]),
        "prompt_mask": torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]]),
        "completion_ids": torch.tensor([[1, 0], [1, 1], [2, 0], [2, 2]]),
        "completion_mask": torch.tensor([[1, 0], [1, 1], [1, 0], [1, 1]]),
        "advantages": torch.tensor([0.0, 0.0, 1.0, -1.0]),
        "num_items_in_batch": torch.tensor(6),
    }
    b = {
        "prompt_ids": torch.tensor([[8, 9, 9], [8, 9, 9]]),
        "prompt_mask": torch.tensor([[1, 1, 1], [1, 1, 1]]),
        "completion_ids": torch.tensor([[3], [4]]),
        "completion_mask": torch.tensor([[1], [1]]),
        "advantages": torch.tensor([0.5, -0.5]),
        "num_items_in_batch": torch.tensor(2),
    }
    out = dynamic_sampling.take_groups([a, b], [(1, 0), (0, 1)], 2, pad_id=0)
    assert out["prompt_ids"].tolist() == [[8, 9, 9], [8, 9, 9], [0, 6, 7], [0, 6, 7]]  # prompts padded on the left
    assert out["prompt_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]
    assert out["completion_ids"].tolist() == [[3, 0], [4, 0], [2, 0], [2, 2]]  # completions on the right
    assert out["completion_mask"].tolist() == [[1, 0], [1, 0], [1, 0], [1, 1]]
    assert out["advantages"].tolist() == [0.5, -0.5, 1.0, -1.0]
    assert int(out["num_items_in_batch"]) == 5


def _scored_by_answer(trainer, signal):
    """Rewards that differ within a group exactly when ``signal(answer)``: the test decides which groups teach."""

    def rewards(inputs, prompts, completions, completion_ids_list):
        values = [float(signal(x["answer"]) and i % 2) for i, x in enumerate(inputs)]
        return torch.tensor(values).unsqueeze(1).repeat(1, len(trainer.reward_funcs))

    trainer._calculate_rewards = rewards


def _first_batch(trainer):
    trainer.model.train()
    return next(iter(trainer.get_train_dataloader()))


def test_groups_without_signal_are_replaced_and_the_extra_prompts_logged(tiny_model_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--dynamic_sampling", "3", "--train_split", "train[:64]")
    even = lambda answer: int(answer) % 2 == 0
    _scored_by_answer(trainer, even)
    inputs = _first_batch(trainer)
    k = trainer.num_generations
    assert not all(even(x["answer"]) for x in inputs[::k])  # some groups start without signal
    out = trainer._generate_and_score_completions(inputs)
    assert out["completion_ids"].size(0) == len(inputs) == out["advantages"].numel()  # the step keeps its size
    assert all(dynamic_sampling.groups_with_signal(out["advantages"], k))
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/frac_groups_with_signal"] == [1.0]
    assert metrics["dynamic_sampling/extra_prompts"][0] in (2.0, 4.0, 6.0)  # whole rounds of the batch's 2 prompts


def test_the_bound_holds_and_groups_without_signal_stay_when_none_is_found(tiny_model_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--dynamic_sampling", "2")
    _scored_by_answer(trainer, lambda answer: False)  # nothing ever teaches
    calls = []
    mro = type(trainer).__mro__
    after = mro[mro.index(dynamic_sampling.DynamicSampling) + 1]  # what it calls for each round
    real = after._generate_and_score_completions

    def counted(self, inputs):
        calls.append(len(inputs))
        return real(self, inputs)

    inputs = _first_batch(trainer)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(after, "_generate_and_score_completions", counted)
        out = trainer._generate_and_score_completions(inputs)
    assert len(calls) == 3  # the batch and 2 extra rounds, no more
    assert out["completion_ids"].size(0) == len(inputs)
    assert trainer._metrics["train"]["dynamic_sampling/frac_groups_with_signal"] == [0.0]
    assert trainer._metrics["train"]["dynamic_sampling/extra_prompts"] == [4.0]


def test_extra_prompts_are_drawn_alike_for_the_same_step_and_differ_by_step(tiny_model_dir, tmp_path):
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--dynamic_sampling", "1", "--train_split", "train[:64]")
    first = [x["problem"] for x in trainer._extra_inputs(3, 1)]
    assert first == [x["problem"] for x in trainer._extra_inputs(3, 1)]
    assert len(first) == 3 * trainer.num_generations and first[0] == first[1]  # each prompt k times, in a row
    trainer.state.global_step = 5
    assert first != [x["problem"] for x in trainer._extra_inputs(3, 1)]


def test_a_run_logs_dynamic_sampling_and_records_the_flag(tiny_model_dir, tmp_path):
    out = str(tmp_path / "run")
    assert (
        main.main(["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--dynamic_sampling", "1"])
        == 0
    )
    with open(os.path.join(out, "log_history.json")) as f:
        steps = [e for e in json.load(f) if "loss" in e]
    assert len(steps) == 2 and all("dynamic_sampling/extra_prompts" in e for e in steps)
    with open(os.path.join(out, "run_config.json")) as f:
        assert json.load(f)["args"]["dynamic_sampling"] == 1


def test_bad_dynamic_sampling_values_are_refused(tiny_model_dir, tmp_path):
    base = ["--model_id", tiny_model_dir, "--output_dir", str(tmp_path / "r"), *TINY_TRAIN_FLAGS]
    with pytest.raises(UsageError, match="--dynamic_sampling -1: must be >= 0"):
        main.main([*base, "--dynamic_sampling", "-1"])
    flags = ["--dynamic_sampling", "2", "--multi_objective_aggregation", "normalize_then_sum"]
    with pytest.raises(UsageError, match="needs --multi_objective_aggregation sum_then_normalize"):
        main.main([*base, *flags])
    with pytest.raises(UsageError, match="--dynamic_sampling needs --scale_rewards group or none"):
        main.main([*base, "--dynamic_sampling", "1", "--scale_rewards", "batch"])


def test_a_resumed_run_keeps_dynamic_sampling_and_draws_what_the_whole_run_would(tiny_model_dir, tmp_path):
    """Stopped after step 1 and resumed to 2, the run keeps --dynamic_sampling without it being given again,
    and step 2 samples the prompts the uninterrupted run sampled (completions.jsonl, its rows of step 2)."""
    from trl_grpo.settings import resolve

    flags = [*TINY_TRAIN_FLAGS, "--dynamic_sampling", "2", "--train_split", "train[:64]", "--no-preflight"]
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", whole, *flags]) == 0
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", part, *flags, "--max_steps", "1"]) == 0
    args, _ = resolve.parse("train", ["--output_dir", part, "--resume_from_checkpoint", "last", "--max_steps", "2"])
    assert args.dynamic_sampling == 2
    assert main.main(["--output_dir", part, "--resume_from_checkpoint", "last", "--max_steps", "2"]) == 0

    def step_two(run):
        with open(os.path.join(run, "completions.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        return [(r["prompt_index"], r["group"]) for r in rows if r["step"] == 2]  # the batch, then each round

    assert len(step_two(whole)) == 3 * 4 and step_two(part) == step_two(whole)  # the tiny model never scores: 2 rounds
