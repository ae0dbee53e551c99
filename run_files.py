"""Names, claims, reads and atomic writes for run folders (ckpts/) and result files (results/).

    python -c "import run_files; print(run_files.safe_name('Qwen/Qwen2.5-0.5B-Instruct'))"

Shared by main.py, train.py and eval.py so all of them name outputs the same safe way, hold an
output exclusively while writing it, read the JSON they wrote with errors that name the file,
never leave a half-written JSON file behind, and report a bad flag or input as one line with
exit code 2.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import socket
import sys

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


def cli(main) -> int:
    """Run an entry point's ``main()``; a ``UsageError`` becomes ``error: ...`` lines and exit code 2."""
    try:
        return main()
    except UsageError as err:
        print("\n".join(f"error: {line}" for line in err.message.splitlines()), file=sys.stderr)
        return 2


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
            f"started {holder.get('started', '?')}: {holder.get('command', '?')}). Wait for it to finish, or choose another output."
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
            f"{what} {path!r} cannot be read ({type(exc).__name__}: {exc}). Restore it from a copy, or remove the folder it belongs to."
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


# ---------------------------------------------------------------- evaluation results
def summary_path(output_file: str) -> str:
    stem = output_file[:-5] if output_file.endswith(".json") else output_file
    return f"{stem}.summary.json"


def partial_path(output_file: str) -> str:
    """Records written as they are scored, one JSON line each; renamed away on success."""
    stem = output_file[:-5] if output_file.endswith(".json") else output_file
    return f"{stem}.partial.jsonl"


def lock_path(output_file: str) -> str:
    folder, name = os.path.split(os.path.abspath(output_file))
    return os.path.join(folder, f".{name}.lock")


class PartialResults:
    """Records appended to ``<stem>.partial.jsonl`` as they are scored (a header line holds the
    settings), so an interruption keeps them and ``--resume`` continues where it stopped."""

    def __init__(self, output_file: str, settings: dict, resume: bool):
        self.path, self.settings, self.records = partial_path(output_file), settings, {}
        if resume:
            self._load()
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"settings": settings}) + "\n")

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        try:
            header = json.loads(lines[0])["settings"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"{self.path} is not a partial result of eval.py (no settings line). Use --overwrite to start over."
            ) from None
        differ = [f"{k}: {header.get(k)!r} then, {v!r} now" for k, v in self.settings.items() if header.get(k) != v]
        if differ:
            raise UsageError(
                f"--resume with other settings than the interrupted evaluation ({'; '.join(differ)}). Use the same flags, or --overwrite to start over."
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except ValueError:
                break  # a line cut short by the interruption: that problem is generated again
            self.records[record.pop("index")] = record
        logger.info("Resuming: %d problems already scored in %s", len(self.records), self.path)

    def add(self, index: int, record: dict) -> None:
        self.records[index] = record
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(finite({"index": index, **record}), ensure_ascii=False) + "\n")
