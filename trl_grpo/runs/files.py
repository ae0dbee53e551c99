"""Files the commands own: exclusive claims, JSON read with errors naming the file, atomic writes.

    python -c "from trl_grpo.runs.files import safe_name; print(safe_name('Qwen/Qwen2.5-0.5B-Instruct'))"

A claim (``claim``) holds an output exclusively while a command writes it; ``write_json_atomic``
never leaves a half-written file or a NaN behind; ``safe_name`` turns a model id into a file name
that stays in its folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import re
import shutil
import socket
import sys

from trl_grpo.runs.cli import UsageError

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


def write_json_atomic(path: str, obj, then: str = "free some space and run the command again") -> None:
    """Write JSON through a temp file and a rename: a crash or a full disk never leaves a half-written
    file or the temp file behind; a full disk is one ``UsageError`` line naming the folder (``then``:
    what to do after freeing space)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with no_space_left(folder, then):
            with open(tmp, "w") as f:
                json.dump(finite(obj), f, indent=1, ensure_ascii=False, allow_nan=False, default=str)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def disk_full(folder: str, then: str, needed: int | None = None) -> str:
    """One line: the disk holding ``folder`` is full, how much is free (and needed), and what next."""
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    need = f"; about {needed / 1e6:,.0f} MB needed" if needed else ""
    return f"the disk holding {folder} is full ({free}{need}): {then}."


@contextlib.contextmanager
def no_space_left(folder: str, then: str, needed: int | None = None):
    """Inside, a full disk (ENOSPC, or EDQUOT: a quota) becomes ``UsageError(disk_full(...))``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UsageError(disk_full(folder, then, needed)) from None
        raise
