"""How a run goes around ``trainer.train``: complete checkpoints marked, a clean stop on a signal, a
watch for reward hacking, and a checkpoint already at the last step taken as it is.

    python main.py [flags]          # train.py runs every training through these

``CheckpointMarker`` writes COMPLETE into a checkpoint once it is fully written (resume never picks
a half-written one); ``StopOnSignal`` with ``train_with_signal_stop`` turns the first Ctrl-C /
SIGTERM into "finish the step, save, stop"; ``RewardHackingWatch`` warns when the training reward
rises while held-out accuracy falls; ``take_finished_checkpoint`` finishes a resumed run whose
checkpoint is at its last step (the trainer would train one step past it).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time

from transformers import TrainerCallback

from trl_grpo.answers.rewards import GuardedReward, RewardError, RewardStuck
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import disk_full, read_json
from trl_grpo.runs.folders import COMPLETE_MARKER, checkpoint_step

logger = logging.getLogger(__name__)


class CheckpointMarker(TrainerCallback):
    """Writes COMPLETE into a checkpoint once the trainer has finished writing it."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                with open(os.path.join(folder, COMPLETE_MARKER), "w") as f:
                    f.write(f"step {state.global_step}\n")


class StopOnSignal(TrainerCallback):
    """First Ctrl-C / SIGTERM: finish the step, save a checkpoint, stop. Second Ctrl-C: abort."""

    def __init__(self):
        self.stop_requested = False

    def request_stop(self, signum, frame):
        stuck = GuardedReward.running()
        if stuck:  # the step cannot end while a reward hangs: stop here, naming it
            name, seconds, where = stuck
            raise RewardStuck(f"reward {name} was still running after {seconds:.0f} s, at {where}")
        if self.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_requested = True
        logger.warning("Signal %d: saving a checkpoint after this step, then stopping (Ctrl-C again aborts).", signum)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class RewardHackingWatch(TrainerCallback):
    """Warns when the training reward rises between two --eval_steps evaluations while the
    held-out accuracy falls: the policy may be gaming the rewards rather than solving problems."""

    def __init__(self):
        self.rewards, self.last = [], None  # train rewards since the last evaluation; (reward, accuracy) then

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if logs.get("reward") is not None:
            self.rewards.append(logs["reward"])
        accuracy = logs.get("eval_rewards/accuracy_reward/mean")
        if accuracy is None or not self.rewards:
            return
        reward = sum(self.rewards) / len(self.rewards)
        if self.last and reward > self.last[0] and accuracy < self.last[1] - 0.02:
            logger.warning(
                "training reward rose %.3f -> %.3f while held-out accuracy fell %.3f -> %.3f: the policy may be "
                "gaming the rewards; look at telemetry/* and completions.jsonl (python report.py RUN)",
                self.last[0],
                reward,
                self.last[1],
                accuracy,
            )
        self.last, self.rewards = (reward, accuracy), []


def train_with_signal_stop(trainer, stopper, resume_ckpt: str | None) -> float:
    """``trainer.train`` with Ctrl-C / SIGTERM turned into save-and-stop; returns the wall time (s)."""
    previous = {sig: signal.signal(sig, stopper.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    start = time.time()
    resume = f"python main.py --output_dir {trainer.args.output_dir} --resume_from_checkpoint last"
    try:
        trainer.train(resume_from_checkpoint=resume_ckpt)
    except RewardError as err:
        raise UsageError(f"{err}, then resume from the last checkpoint: {resume}") from None
    except RewardStuck as err:
        raise UsageError(f"stopped: {err}. Fix the reward, then resume from the last checkpoint: {resume}") from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        needed = _drop_unfinished_checkpoint(trainer.args.output_dir)
        folder = os.path.dirname(err.filename) if err.filename else trainer.args.output_dir  # the full one
        then = f"free some space, then resume from the last checkpoint: {resume}"
        raise UsageError(disk_full(folder, then, needed)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return time.time() - start


def _drop_unfinished_checkpoint(folder: str) -> int | None:
    """Remove the checkpoint a full disk cut short (no completeness marker: never resumed from, and it
    holds the space the next save needs); the size of the last complete one, as the space needed."""
    import shutil

    names = [n for n in os.listdir(folder) if re.fullmatch(r"checkpoint-\d+", n)] if os.path.isdir(folder) else []
    complete = [n for n in names if os.path.isfile(os.path.join(folder, n, COMPLETE_MARKER))]
    for name in set(names) - set(complete):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    if not complete:
        return None
    last = os.path.join(folder, max(complete, key=lambda n: int(n.split("-")[1])))
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(last) for f in files)


def nothing_left(checkpoint: str, max_steps: int) -> bool:
    """Whether a checkpoint is already at the run's last step (``max_steps``, or the checkpoint's own when
    the run goes by epochs)."""
    state = read_json(os.path.join(checkpoint, "trainer_state.json"), "checkpoint state")
    target = max_steps if max_steps > 0 else state.get("max_steps")
    return isinstance(target, int) and target > 0 and state.get("global_step", 0) >= target


def take_finished_checkpoint(trainer, checkpoint: str) -> float:
    """The run's model becomes the checkpoint's (its adapter, or full fine-tuning's weights), trained no
    further; returns the wall time (0)."""
    from trl_grpo.models.start import load_saved_weights

    load_saved_weights(trainer.model, checkpoint)
    trainer.state.global_step = checkpoint_step(checkpoint)
    trainer.state.max_steps = trainer.state.global_step
    trainer.state.log_history = read_json(os.path.join(checkpoint, "trainer_state.json"), "checkpoint state").get(
        "log_history", []
    )
    logger.warning(
        "%s is at the run's last step: nothing left to train; its weights are saved as the run's.", checkpoint
    )
    return 0.0


class ReplanOnExtend:
    """Trainer mixin: a finished run resumed with a larger ``--max_steps`` gets a learning-rate schedule
    planned anew for the new length, continuing at the checkpoint's step. Restored as saved, the
    schedule had ended with the first plan, and every added step trained at learning rate 0."""

    replan_from: int | None = None  # the checkpoint's step, when the run is extended

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint and self.replan_from is not None:
            import warnings

            self.lr_scheduler = None
            self.create_scheduler(num_training_steps=self.args.max_steps, optimizer=self.optimizer)
            with warnings.catch_warnings():  # stepping the schedule alone, to the checkpoint's step
                warnings.simplefilter("ignore")
                for _ in range(self.replan_from):
                    self.lr_scheduler.step()


def resume_notes(checkpoint: str, max_steps: int) -> tuple[int | None, list[str]]:
    """``(replan_from, lines to print)`` for resuming ``checkpoint`` with ``max_steps``: a longer run
    than the checkpoint's plan replans its schedule (``ReplanOnExtend``), and a checkpoint saved without
    optimizer state (``save_only_model``) goes on with a fresh optimizer and schedule; both are said."""
    path = os.path.join(checkpoint, "trainer_state.json")
    state = read_json(path, "checkpoint state") if os.path.isfile(path) else {}
    planned, step = state.get("max_steps"), state.get("global_step", checkpoint_step(checkpoint))
    replan, lines = None, []
    if planned and max_steps > planned:
        replan = step
        lines.append(
            f"Extending the run from {planned} to {max_steps} steps: the learning-rate schedule is planned anew "
            f"for {max_steps} steps and goes on from step {step} (the first plan's had ended)."
        )
    names = os.listdir(checkpoint) if os.path.isdir(checkpoint) else []
    if not any(n.startswith(("optimizer", "global_step")) for n in names):  # .pt, .bin (FSDP), DeepSpeed's
        lines.append(
            f"{checkpoint} holds no optimizer state (saved with save_only_model): training goes on from its "
            "weights with a fresh optimizer and learning-rate schedule, not as if it had never stopped."
        )
    return replan, lines
