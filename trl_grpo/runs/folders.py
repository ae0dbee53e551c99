"""Run folders (ckpts/): which one a run writes, what resuming picks, and the attempts recorded.

    python main.py --output_dir ckpts/my_run --resume_from_checkpoint last

A run folder is claimed before anything heavy loads; one left before its first checkpoint is
reused, a finished or running one is never overwritten; ``find_last_checkpoint`` picks only
checkpoints marked complete; ``record_attempt`` appends each start to run_state.json.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re

from trl_grpo.models.locate import EMBEDDED_MODEL_ID, EMBEDDED_NAME
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import claim, read_json, release, safe_name, write_json_atomic

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- run folders (training)
COMPLETE_MARKER = "COMPLETE"


RUN_LOCK = ".run.lock"  # held (flock) by the process writing the folder


RUN_STATE = "run_state.json"  # what happened after the start: attempts, steps, wall time, fast paths


_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


_EARLY_FILES = {"run_config.json", RUN_STATE, "log_history.json", "reward_curves.png", "runs", "preflight.json"}
_EARLY_FILES |= {
    "completions.jsonl",
    "report.html",
    "wandb",
    "trackio",
    "completions",
    "README.md",
}  # trackers, TRL, card
_EARLY_FILES |= {"sft_log_history.json", "preflight_after_sft.json"}  # the cold start's records


_PREVIOUS_PREFIX = "previous-attempt-"


SFT_DIR = "sft"  # the cold start's folder inside a run folder (trl_grpo/training/cold_start.py)


def default_output_dir(args) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = EMBEDDED_NAME if args.model_id == EMBEDDED_MODEL_ID else args.model_id
    return os.path.join("ckpts", f"{safe_name(model)}-{safe_name(args.dataset_id)}-{stamp}")


def find_last_checkpoint(output_dir: str) -> str | None:
    """Newest ``checkpoint-N`` in ``output_dir`` that was completely written (has the marker)."""
    if not os.path.isdir(output_dir):
        return None
    done = []
    for name in os.listdir(output_dir):
        m = _CHECKPOINT_RE.match(name)
        if m and os.path.isfile(os.path.join(output_dir, name, COMPLETE_MARKER)):
            done.append((int(m.group(1)), os.path.join(output_dir, name)))
    return max(done)[1] if done else None


def sft_progress(output_dir: str) -> bool:
    """Whether a run folder holds cold-start work to resume: the phase's finished adapter or a complete
    checkpoint of it (trl_grpo/training/cold_start.py)."""
    folder = os.path.join(output_dir, SFT_DIR)
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER)) or find_last_checkpoint(folder) is not None


def checkpoint_step(checkpoint: str) -> int | None:
    """The optimizer step a checkpoint was written at (its trainer_state.json), None if unreadable."""
    state = read_json(os.path.join(checkpoint, "trainer_state.json"), "checkpoint state")
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _left_early(output_dir: str, names: set[str]) -> bool:
    """Whether a folder's contents are what a run writes before its first complete checkpoint
    (its records, logs, a half-written checkpoint): nothing trained that a new run could lose."""

    def early(name):
        m = _CHECKPOINT_RE.match(name)
        if m:
            return not os.path.isfile(os.path.join(output_dir, name, COMPLETE_MARKER))
        if name == SFT_DIR:
            return not sft_progress(output_dir)
        return name in _EARLY_FILES or name.startswith(_PREVIOUS_PREFIX)

    return all(early(n) for n in names)


def _refuse_if_taken(output_dir: str) -> set[str]:
    """The folder's entries (the lock aside); ``UsageError`` if they hold more than an early stop's."""
    names = set(os.listdir(output_dir)) - {RUN_LOCK} if os.path.isdir(output_dir) else set()
    if names and not _left_early(output_dir, names):
        raise UsageError(
            f"output folder {output_dir!r} already holds files. Pick a new --output_dir, or continue that run "
            f"with --output_dir {output_dir} --resume_from_checkpoint last. Nothing was changed."
        )
    return names


def prepare_output_dir(args) -> tuple[str, str | None, bool]:
    """(output_dir, checkpoint to resume or None, whether the folder was created now), the folder
    claimed for this process.

    Refuses a folder another live run holds, and a non-empty one unless resuming it. A folder
    left by a run that stopped before its first complete checkpoint is reused: its files move
    into ``previous-attempt-<time>/`` inside it (nothing is deleted).
    """
    resume = args.resume_from_checkpoint
    if resume and resume != "last":
        output_dir = args.output_dir or os.path.dirname(os.path.abspath(resume))
    else:
        output_dir = args.output_dir or default_output_dir(args)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(
            f"--output_dir {output_dir!r} is a file, not a folder. Give a folder path such as ckpts/my-run."
        )
    into_other = resume and resume != "last" and not _same_dir(output_dir, os.path.dirname(os.path.abspath(resume)))
    if (not resume or into_other) and not os.path.exists(os.path.join(output_dir, RUN_LOCK)):
        _refuse_if_taken(output_dir)  # before the claim, so a refusal adds nothing to the folder
    created = not os.path.isdir(output_dir)
    if _is_rank_zero():  # one claim per run; the other processes of a multi-process run follow rank 0
        claim(os.path.join(output_dir, RUN_LOCK), f"run folder {output_dir!r}")
    try:
        return output_dir, _checkpoint_to_resume(args, output_dir), created
    except BaseException:
        release(os.path.join(output_dir, RUN_LOCK))
        raise


def _same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _checkpoint_to_resume(args, output_dir: str) -> str | None:
    """The checkpoint to resume (None for a new run), once the folder is claimed."""
    resume = args.resume_from_checkpoint
    if resume and resume != "last":
        if not os.path.isfile(os.path.join(resume, "trainer_state.json")):
            raise UsageError(
                f"{resume!r} is not a complete checkpoint (no trainer_state.json). Use 'last' to pick the newest "
                "complete one."
            )
        return resume
    if resume == "last":
        ckpt = find_last_checkpoint(output_dir)
        if ckpt is None and sft_progress(output_dir):
            return None  # stopped in the cold start, or before GRPO's first checkpoint: train.py goes on from there
        if ckpt is None:
            if os.path.isfile(os.path.join(output_dir, "run_config.json")):
                raise UsageError(
                    f"the run in {output_dir!r} stopped before its first complete checkpoint, so there is nothing to "
                    "resume. "
                    "Start it again: the same command without --resume_from_checkpoint reuses the folder."
                )
            raise UsageError(
                f"no complete checkpoint in {output_dir!r} to resume. Start a new run, or pass a checkpoint folder."
            )
        return ckpt
    names = _refuse_if_taken(output_dir)  # again, now that the folder is ours
    if names and _is_rank_zero():
        aside = os.path.join(output_dir, _PREVIOUS_PREFIX + _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f"))
        os.makedirs(aside)
        for name in names - {n for n in names if n.startswith(_PREVIOUS_PREFIX)}:
            os.rename(os.path.join(output_dir, name), os.path.join(aside, name))
        logger.warning(
            "%s held only an attempt that stopped before its first checkpoint; reusing it (its files are in %s).",
            output_dir,
            aside,
        )
    return None


def record_attempt(output_dir: str, attempt: dict) -> None:
    """Add or update this attempt (the last one) in run_state.json; run_config.json is never rewritten."""
    path = os.path.join(output_dir, RUN_STATE)
    state = read_json(path, "run state") if os.path.isfile(path) else {"attempts": []}
    attempts = state.setdefault("attempts", [])
    if attempts and attempts[-1].get("started") == attempt["started"]:
        attempts[-1] = attempt
    else:
        attempts.append(attempt)
    state.update({k: attempt[k] for k in ("steps", "finished", "complete") if k in attempt})
    write_json_atomic(path, state)
