"""Names, claims, reads and atomic writes for run folders (ckpts/) and result files (results/).

    python -c "import run_files; print(run_files.safe_name('Qwen/Qwen2.5-0.5B-Instruct'))"

Shared by main.py, train.py and eval.py so all of them name outputs the same safe way, hold an
output exclusively while writing it (``claim``), read the JSON they wrote with errors that name
the file, never leave a half-written JSON file behind, and report a bad flag or input as one
line with exit code 2 (``UsageError``, ``cli``, ``Parser``). Run folders: which one a run writes,
what resuming picks, reuse of one left before its first checkpoint, the attempts in
run_state.json. Result files of eval.py: result_files.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import socket
import sys

from model_utils import EMBEDDED_MODEL_ID, EMBEDDED_NAME

logger = logging.getLogger(__name__)


class UsageError(SystemExit):
    """A bad flag, input file or output place: the message says what and how to fix it.

    Raised before heavy work where possible; ``cli`` prints it as one ``error: ...`` line per
    problem and exits with code 2 (no traceback). Code calling ``main()`` directly, such as tests,
    sees the message as ``str(err)``.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def user_errors():
    """Inside, a problem with the user's data or model (``DataError``, ``ModelError``) becomes a
    ``UsageError``: the one path by which every user error reaches ``cli`` (one line, exit 2)."""
    from model_utils import ModelError
    from splits import DataError

    try:
        yield
    except (DataError, ModelError) as exc:
        raise UsageError(str(exc)) from None


def cli(main) -> int:
    """Run an entry point's ``main()``; a user error becomes ``error: ...`` lines and exit code 2."""
    try:
        with user_errors():
            return main()
    except UsageError as err:
        print("\n".join(f"error: {line}" for line in err.message.splitlines()), file=sys.stderr)
        return 2


class Parser(argparse.ArgumentParser):
    """The commands' argument parser: the whole first paragraph of a docstring as the description,
    each default shown once, and a bad flag as one ``error:`` line (exit code 2) that names it and
    where the flags are listed, rather than the whole usage first."""

    def __init__(self, doc: str, **kwargs):
        first = doc.strip().split("\n\n")[0]
        super().__init__(description=" ".join(first.split()), formatter_class=_DefaultsOnce, **kwargs)

    def error(self, message: str):
        import difflib

        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            words = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
            near = [m for w in words for m in difflib.get_close_matches(w, known, n=1, cutoff=0.75)]
            hint = f" Did you mean {', '.join(near)}?" if near else ""
        self.exit(2, f"error: {message}.{hint} {self.prog} --help lists the flags.\n")


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` only where the help text does not already speak of a default, and there
    is one to show (not None)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "").lower() or action.default is None:
            return action.help
        return super()._get_help_string(action)


# ---------------------------------------------------------------- exclusive claims
_HELD: dict[str, int] = {}  # lock path -> open descriptor, kept for the claim's lifetime


def claim(lock_path: str, what: str) -> str:
    """Hold ``lock_path`` exclusively until ``release`` or the end of the process.

    An OS lock (``flock``) on a small file that names its holder: the OS drops it when the
    process ends, however it ends (kill -9 included), so a crashed holder never blocks anyone,
    while two live processes can never both hold it. The file itself stays (deleting it could let
    two processes lock two different files of one name). Raises ``UsageError`` naming the
    holder's pid and start time, or the folder that cannot be written.
    """
    import fcntl

    folder = os.path.dirname(os.path.abspath(lock_path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot write {what} in {folder!r} ({exc.strerror}). Choose a writable place.") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise UsageError(
            f"{what} is being written by another process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}: {holder.get('command', '?')}). Wait for it to finish, or choose "
            "another output."
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[os.path.abspath(lock_path)] = fd
    return lock_path


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def release(lock_path: str) -> None:
    """Give up a claim made by this process (a no-op when it holds none)."""
    fd = _HELD.pop(os.path.abspath(lock_path), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


# ---------------------------------------------------------------- reading what we wrote
def read_json(path: str, what: str):
    """A JSON file this project wrote, or ``UsageError`` naming the file when it is unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(
            f"{what} {path!r} cannot be read ({type(exc).__name__}: {exc}). Restore it from a copy, or remove the "
            "folder it belongs to."
        ) from None


def safe_name(text: str) -> str:
    """A folder- or file-name piece from a model id, path or split: no separators, no '..'.

    >>> safe_name("Qwen/Qwen2.5-0.5B-Instruct"), safe_name("../x"), safe_name("test[:5%]")
    ('Qwen2.5-0.5B-Instruct', 'x', 'test-5')
    """
    base = os.path.basename(os.path.normpath(text)) or text
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "x"


def finite(obj):
    """``obj`` with NaN and infinities replaced by None, so it is valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: str, obj) -> None:
    """Write JSON through a temp file and a rename: a crash never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(finite(obj), f, indent=1, ensure_ascii=False, allow_nan=False, default=str)
    os.replace(tmp, path)


# ---------------------------------------------------------------- run folders (training)
COMPLETE_MARKER = "COMPLETE"
RUN_LOCK = ".run.lock"  # held (flock) by the process writing the folder
RUN_STATE = "run_state.json"  # what happened after the start: attempts, steps, wall time, fast paths
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_EARLY_FILES = {"run_config.json", RUN_STATE, "log_history.json", "reward_curves.png", "runs", "preflight.json"}
_EARLY_FILES |= {"completions.jsonl", "report.html", "wandb", "completions", "README.md"}  # wandb, TRL and model card
_EARLY_FILES |= {"sft_log_history.json", "preflight_after_sft.json"}
_PREVIOUS_PREFIX = "previous-attempt-"
SFT_DIR = "sft"  # the cold start's folder inside a run folder (sft.py)


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
    checkpoint of it (sft.py)."""
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
