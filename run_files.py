"""Names and atomic writes for run folders (ckpts/) and result files (results/).

    python -c "import run_files; print(run_files.safe_name('Qwen/Qwen2.5-0.5B-Instruct'))"

Shared by train.py and eval.py so both name outputs the same safe way and never leave a
half-written JSON file behind.
"""

from __future__ import annotations

import json
import math
import os
import re


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
