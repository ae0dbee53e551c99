"""The rewards on real model output (hand-labelled), math-verify's regression cases, and the reward benchmark."""

import json
import os

import pytest

from trl_grpo.answers.rewards import accuracy_reward, format_reward

SEED_DATA = os.path.join(os.path.dirname(__file__), "data", "seed_eval_qwen2.5-3b_numinamath_test50.json")


OK = "<think>reasoning</think><answer>{}</answer>"


# ---------------------------------------------------------------- real model output
# Labels decided by reading each record (prompt prefix stripped): does the answer block hold
# the gold answer, and does the completion follow the strict contract?
SEED_CORRECT = {1, 2, 3, 4, 5, 9, 12, 16, 18, 24, 25, 28, 29, 32, 34, 37, 42, 47}
# 1/22/23/30/45: a stray second </answer>; 3/18/25/28/34: no think pair; others: truncated or untagged
SEED_FORMAT_HALF = {2, 4, 5, 9, 10, 12, 16, 24, 29, 32, 37, 38, 42, 44, 47, 49}


def _seed_records():
    with open(SEED_DATA) as f:
        records = json.load(f)
    for r in records:
        c = r["completion"]
        r["completion"] = c[len(r["prompt"]) :] if c.startswith(r["prompt"]) else c
    return records


def test_real_model_output_matches_hand_labels():
    records = _seed_records()
    acc = accuracy_reward([r["completion"] for r in records], [r["solution"] for r in records])
    fmt = format_reward([r["completion"] for r in records])
    assert {i for i, a in enumerate(acc) if a == 1.0} == SEED_CORRECT
    assert None not in acc  # every NuminaMath gold here has a box
    assert {i for i, f in enumerate(fmt) if f == 0.5} == SEED_FORMAT_HALF
    assert not any(f == 1.0 for f in fmt)  # no record boxed its answer inside <answer>


# ---------------------------------------------------------------- Math-Verify's public regression cases
# Indices (in tests/data/mathverify_regression.json) where our verdict differs from the expected one, and why.
EXCEPTIONS_AS_ANSWER = {
    48: "two different boxes (20, 143) in one answer block are two parts; math-verify takes the last box",
}
EXCEPTIONS_AS_SOLUTION = {
    **EXCEPTIONS_AS_ANSWER,
    19: "'$1$ and $2$ and $3$' mixes prose and math: not wholly one expression, so None",
    25: "the gold is a broken box (doubled backslashes, no closing brace) in prose: None",
    26: "'$21,16$ or $11$' mixes prose and math: None",
}


def _regression_verdicts(column: str) -> dict[int, float | None]:
    with open(os.path.join(os.path.dirname(__file__), "data", "mathverify_regression.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    out = {}
    for i, case in enumerate(cases):
        completion = OK.format(case["prediction"])
        if column == "answer":
            got = accuracy_reward([completion], [""], answer=[case["gold"]])[0]
        else:
            got = accuracy_reward([completion], [case["gold"]])[0]
        out[i] = (got, float(case["expected"]))
    return out


@pytest.mark.parametrize("column,exceptions", [("answer", EXCEPTIONS_AS_ANSWER), ("solution", EXCEPTIONS_AS_SOLUTION)])
def test_mathverify_regression_cases(column, exceptions):
    """51 gold/prediction pairs from Math-Verify's tests, each prediction in our contract: every
    verdict agrees except the named ones (was 41/51 as the answer column, 4/51 as the solution)."""
    verdicts = _regression_verdicts(column)
    misses = {i for i, (got, want) in verdicts.items() if got != want}
    assert misses == set(exceptions), {i: verdicts[i] for i in misses ^ set(exceptions)}


@pytest.mark.slow
def test_the_reward_benchmark_times_every_path_on_the_same_scores():
    """bench/reward_speed.py (make bench): TRL, ours with the cache off, emptied and warm, one JSON line."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "bench/reward_speed.py", "--n", "60", "--repeats", "1"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("trl_items_per_s", "ours_items_per_s", "ours_nocache_items_per_s", "ours_warm_cache_items_per_s"):
        assert result[key] > 0, key
    assert result["n"] == 60 and result["ours_correct"] + result["ours_none"] <= 60
