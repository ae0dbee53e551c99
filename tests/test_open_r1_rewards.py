"""open-r1's math rewards by their names, for this output contract, with their parameters as flags."""

import pickle

import pytest

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.answers import open_r1
from trl_grpo.answers.registry import get_reward_funcs, parameters_of

RIGHT = "<think>2 + 2 = 4</think><answer>\\boxed{4}</answer>"
WRONG = "<think>2 + 2 = 5</think><answer>\\boxed{5}</answer>"


@pytest.mark.parametrize(
    "text, want",
    [
        (RIGHT, 1.0),  # each tag once
        ("<think>a</think>", 0.5),  # two of four
        ("<think>a</think><think>b</think><answer>c</answer>", 0.5),  # think twice: its tags earn nothing
        ("", 0.0),
    ],
)
def test_tag_count(text, want):
    assert open_r1.tag_count_reward([text]) == [want]


def test_tag_count_reads_a_prefilled_think():
    assert open_r1.tag_count_reward([RIGHT.removeprefix("<think>")], prompts=["p<think>"]) == [1.0]


@pytest.mark.parametrize(
    "thinking, want",
    [
        ("Step 1: a\nStep 2: b\nStep 3: c", 1.0),
        ("First, a. Next, b.", 2 / 3),
        ("1. a\n2. b\n3. c\n4. d", 1.0),
        ("just 4", 0.0),
    ],
)
def test_reasoning_steps_count_only_the_reasoning(thinking, want):
    text = f"<think>{thinking}</think><answer>Step 1: Step 2: Step 3: \\boxed{{4}}</answer>"
    assert open_r1.reasoning_steps_reward([text]) == [pytest.approx(want)]


def test_cosine_scales_by_length_and_correctness():
    reward = open_r1.CosineReward(max_len=len(RIGHT) * 2)
    long_right, long_wrong = RIGHT.replace("2 + 2", "2 + 2" * 20), WRONG.replace("2 + 2", "2 + 2" * 20)
    got = reward([RIGHT, long_right, WRONG, long_wrong, RIGHT], ["\\boxed{4}"] * 4 + ["N/A"])
    assert 0.5 < got[0] < 1.0 and got[1] == pytest.approx(0.5)  # right: shorter is better
    assert -0.5 < got[2] < 0.0 and got[3] == pytest.approx(-0.5)  # wrong: longer costs more
    assert got[4] is None  # unusable gold: skipped, never scored


@pytest.mark.parametrize(
    "text, want",
    [
        ("a b c a b c a b c", -(1 - 3 / 7)),  # 7 trigrams, 3 distinct
        ("one two three four five", 0.0),
        ("too short", 0.0),
    ],
)
def test_repetition_penalty(text, want):
    assert open_r1.RepetitionPenalty()([text]) == [pytest.approx(want)]


def test_length_reward_over_the_batch():
    short_right, long_right = RIGHT, RIGHT.replace("2 + 2", "2 + 2 + 0")
    short_wrong = WRONG
    got = open_r1.len_reward([short_right, long_right, short_wrong], ["\\boxed{4}"] * 3)
    assert got[0] > got[1] and got[2] <= 0.0
    assert open_r1.len_reward([RIGHT, RIGHT], ["\\boxed{4}"] * 2) == [0.0, 0.0]  # all the same length


def test_names_and_flags_reach_the_rewards():
    params = parameters_of({"cosine_max_len": 10, "repetition_n_grams": 2, "learning_rate": 1.0})
    assert params == {"cosine_max_len": 10, "repetition_n_grams": 2}
    funcs = get_reward_funcs("tag_count,reasoning_steps,cosine,repetition_penalty,length", params)
    names = [f.__name__ for f in funcs]
    assert names == ["tag_count_reward", "reasoning_steps_reward", "cosine_scaled_reward"] + [
        "repetition_penalty_reward",
        "len_reward",
    ]
    assert funcs[2].func.max_len == 10 and funcs[3].func.n_grams == 2
    pickle.dumps(funcs)


def test_a_run_trains_with_them(tiny_model_dir, tmp_path):
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    rewards = "format,accuracy,tag_count,reasoning_steps,cosine,repetition_penalty,length"
    argv = [*flags, "--output_dir", str(tmp_path / "run"), "--reward_funcs", rewards, "--cosine_max_len", "50"]
    assert main.main(argv) == 0


def test_trls_soft_overlong_punishment_by_name():
    (func,) = get_reward_funcs("soft_overlong_punishment", {"max_completion_length": 10, "soft_punish_cache": 4})
    assert func.__name__ == "soft_overlong_punishment_reward"
    got = func(["a", "b", "c"], completion_ids=[[0] * 5, [0] * 8, [0] * 11])
    assert got == [0.0, pytest.approx(-0.5), -1.0]  # free up to 6 tokens, -1 past 10
    pickle.dumps(func)
    (default,) = get_reward_funcs("get_soft_overlong_punishment", {"max_completion_length": 100})
    assert (default.func.max_len, default.func.cache) == (100, 20)  # a fifth, as DAPO


def test_a_run_trains_with_the_soft_overlong_punishment(tiny_model_dir, tmp_path):
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    argv = [*flags, "--output_dir", str(tmp_path / "run"), "--reward_funcs", "format,accuracy,soft_overlong_punishment"]
    assert main.main([*argv, "--soft_punish_cache", "4"]) == 0
