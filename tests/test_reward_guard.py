"""A user's reward inside the training loop: it can rewrite its arguments, return NaN, inf or the wrong
length, or hang. Each is caught where it happens, said in one line, and never poisons a step."""

import json
import logging
import os
import signal
import threading
import time

import pytest

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.answers.rewards import GuardedReward, RewardError, RewardStuck, accuracy_reward
from trl_grpo.observe import preflight
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.control import StopOnSignal, train_with_signal_stop

RIGHT = "<think>4</think><answer>\\boxed{4}</answer>"


def _rewriting_reward(completions, **kwargs):
    completions[:] = ["<think>x</think><answer>\\boxed{5}</answer>"] * len(completions)  # edits what it was handed
    return [0.0] * len(completions)


def test_each_reward_gets_its_own_copy_of_the_completions():
    completions = [RIGHT, RIGHT]
    GuardedReward(_rewriting_reward)(completions, solution=["\\boxed{4}"] * 2)
    assert completions == [RIGHT, RIGHT]  # what the next reward scores and the log records
    assert GuardedReward(accuracy_reward)(completions, solution=["\\boxed{4}"] * 2) == [1.0, 1.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_is_scored_none_and_counted(bad):
    guarded = GuardedReward(lambda completions, **kw: [1.0, bad, 0.5])
    assert guarded(["a", "b", "c"]) == [1.0, None, 0.5] and guarded.non_finite == 1
    guarded(["a", "b", "c"])
    assert guarded.non_finite == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_value_on_the_first_batch_is_refused(bad):
    def nan_reward(completions, **kwargs):
        return [bad] * len(completions)

    rows = [{"prompt": "p", "problem": "What is 2+2?", "solution": "\\boxed{4}", "answer": "4"}]
    with pytest.raises(ValueError, match="reward nan_reward returned .* NaN and infinite values"):
        preflight.check_rewards([GuardedReward(nan_reward)], rows)


def test_a_wrong_length_in_training_is_one_line_with_the_resume_command(tmp_path):
    guarded = GuardedReward(lambda completions, **kw: [1.0])
    with pytest.raises(RewardError, match="returned 1 values for 3 completions"):
        guarded(["a", "b", "c"])

    class Trainer:
        args = type("A", (), {"output_dir": str(tmp_path / "run")})()

        def train(self, resume_from_checkpoint=None):
            guarded(["a", "b", "c"])

    with pytest.raises(UsageError) as err:
        train_with_signal_stop(Trainer(), StopOnSignal(), None)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "returned 1 values for 3 completions" in message
    assert f"python main.py --output_dir {tmp_path / 'run'} --resume_from_checkpoint last" in message


def _hanging_reward(completions, **kwargs):
    for _ in range(200):  # up to 10 s: a reward stuck in a loop
        time.sleep(0.05)
    return [0.0] * len(completions)


def test_a_hanging_reward_is_named_with_where_it_is_and_ctrl_c_stops_the_run(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(GuardedReward, "time_bound_s", 0.3)
    guarded = GuardedReward(_hanging_reward)

    class Trainer:
        args = type("A", (), {"output_dir": str(tmp_path / "run")})()

        def train(self, resume_from_checkpoint=None):
            guarded(["a"])

    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # the user presses Ctrl-C
    start = time.time()
    with caplog.at_level(logging.WARNING), pytest.raises(UsageError) as err:
        train_with_signal_stop(Trainer(), StopOnSignal(), None)
    assert time.time() - start < 5  # stopped at once, not after the reward's 10 s
    message = str(err.value)
    assert "reward _hanging_reward was still running after" in message and "test_reward_guard.py:" in message
    assert "--resume_from_checkpoint last" in message and len(message.splitlines()) == 1
    warned = [r.getMessage() for r in caplog.records if "is still running" in r.getMessage()]
    assert warned and "_hanging_reward" in warned[0] and "test_reward_guard.py:" in warned[0]
    assert GuardedReward.running() is None  # the call's record is cleared


def test_ctrl_c_before_the_bound_still_finishes_the_step(monkeypatch):
    """Under the bound a reward is working, not stuck: the first Ctrl-C asks for a save-and-stop."""
    monkeypatch.setattr(GuardedReward, "time_bound_s", 60)
    stopper = StopOnSignal()
    GuardedReward._running[threading.get_ident()] = ("slow_reward", time.monotonic())
    try:
        stopper.request_stop(signal.SIGINT, None)
    finally:
        GuardedReward._running.clear()
    assert stopper.stop_requested
    with pytest.raises(RewardStuck):
        monkeypatch.setattr(GuardedReward, "time_bound_s", 0.0)
        GuardedReward._running[threading.get_ident()] = ("slow_reward", time.monotonic() - 1)
        try:
            stopper.request_stop(signal.SIGINT, None)
        finally:
            GuardedReward._running.clear()


REWARD_FILE = "def bonus_reward(completions, **kwargs):\n    return [0.5] * len(completions)\n"


@pytest.mark.slow
def test_eval_refuses_a_reward_file_changed_since_training(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bonus.py").write_text(REWARD_FILE)
    out = str(tmp_path / "run")
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    assert main.main([*flags, "--output_dir", out, "--reward_funcs", "format,accuracy,bonus.py:bonus_reward"]) == 0
    from trl_grpo.evaluation import pipeline

    common = ["--model_dir", out, "--limit", "2", "--max_completion_length", "4"]
    assert pipeline.main([*common, "--output_file", str(tmp_path / "a.json")]) == 0  # unchanged: scored
    (tmp_path / "bonus.py").write_text(REWARD_FILE.replace("0.5", "1.0"))
    with pytest.raises(UsageError, match="reward file .*bonus.py changed since the run trained"):
        pipeline.main([*common, "--output_file", str(tmp_path / "b.json")])
    assert not os.path.exists(tmp_path / "b.json")
    assert pipeline.main([*common, "--output_file", str(tmp_path / "c.json"), "--allow_changed_rewards"]) == 0
    with open(tmp_path / "c.summary.json") as f:
        changed = json.load(f)["rewards_changed"]
    assert len(changed) == 1 and changed[0]["file"].endswith("bonus.py") and changed[0]["then"] != changed[0]["now"]


def test_rewards_as_trl_accepts_them_async_arrays_generators_and_numpy_scalars():
    import numpy as np

    async def async_reward(completions, **kwargs):
        return [1.0] * len(completions)

    assert GuardedReward(async_reward)(["a", "b"]) == [1.0, 1.0]
    assert GuardedReward(lambda completions, **kw: np.array([0.5, 1.0]))(["a", "b"]) == [0.5, 1.0]
    assert GuardedReward(lambda completions, **kw: (0.5 for _ in completions))(["a", "b"]) == [0.5, 0.5]
    guarded = GuardedReward(lambda completions, **kw: [np.float32("inf"), np.float64("nan"), np.float32(1.0)])
    assert guarded(["a", "b", "c"]) == [None, None, np.float32(1.0)] and guarded.non_finite == 2


def test_a_reward_that_edits_a_column_changes_nothing_for_the_next():
    def edit_gold(completions, solution, **kwargs):
        solution[0] = "\\boxed{999}"
        return [0.0] * len(completions)

    solution = ["\\boxed{4}"]
    GuardedReward(edit_gold)([RIGHT], solution=solution)
    assert solution == ["\\boxed{4}"] and GuardedReward(accuracy_reward)([RIGHT], solution=solution) == [1.0]


def test_two_rewards_running_at_once_are_both_watched(monkeypatch):
    monkeypatch.setattr(GuardedReward, "time_bound_s", 0.2)
    release = threading.Event()

    def slow(completions, **kwargs):
        release.wait(5)
        return [0.0] * len(completions)

    def quick(completions, **kwargs):
        return [0.0] * len(completions)

    worker = threading.Thread(target=GuardedReward(slow), args=(["a"],))
    worker.start()
    time.sleep(0.3)
    GuardedReward(quick)(["a"])  # finishing on another thread must not clear the slow call's record
    try:
        assert GuardedReward.running() and GuardedReward.running()[0] == "slow"
    finally:
        release.set()
        worker.join()
    assert GuardedReward.running() is None
