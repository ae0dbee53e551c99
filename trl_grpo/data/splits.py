"""Which rows train and which test: split expressions, a test split carved by problem text where a
dataset has none, overlapping splits refused, and (seen.py) test problems seen in training counted.

    python -m pytest --doctest-modules trl_grpo/data/splits.py

A dataset without a ``test`` split (a single .jsonl, most hub datasets' ``train`` alone) gets one
carved from ``train`` by content: a row is a test row when the SHA-256 of its normalised problem
text, read as a fraction, is below ``TEST_FRACTION``. The carve does not depend on row order, a
seed or a slice, a problem written twice lands on one side, and training (which always holds the
carved rows out) and every evaluation see the same rows; run_config.json records how many and a
hash of their problems (``held_out_record``). A leaf: no torch.
"""

from __future__ import annotations

import hashlib
import re

TEST_FRACTION = 0.1
CARVE_RULE = "sha256(normalised problem text) as a fraction of 2^256 < fraction"
_SPLIT_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*$")


class DataError(ValueError):
    """A dataset problem the user can fix (a split, a column, a file); the message says how.
    Defined in this leaf so the split rules raise it; data_utils re-exports it."""


def normalise_problem(text) -> str:
    """The problem text as compared for the carve and for contamination: spaces collapsed, case folded.

    >>> normalise_problem("  What is  2+2?\\n")
    'what is 2+2?'
    """
    return " ".join(str(text or "").split()).casefold()


def _position(text) -> float:
    """Where a problem falls in [0, 1): its normalised text's SHA-256 read as a fraction."""
    digest = hashlib.sha256(normalise_problem(text).encode("utf-8")).digest()
    return int.from_bytes(digest, "big") / 2**256


def carve(problems: list[str], fraction: float = TEST_FRACTION) -> list[bool]:
    """Per row, whether it is a test row (``CARVE_RULE``). At least one row of each side when there
    are two distinct problems or more: the lowest-placed problem's rows test, the highest's train.

    >>> sides = carve(["x", "y", "x", "z"], 0.5)
    >>> sides[0] == sides[2], carve(["z", "x", "y", "x"], 0.5) == [sides[3], sides[0], sides[1], sides[2]]
    (True, True)
    """
    places = [_position(p) for p in problems]
    test = [p < fraction for p in places]
    if len(set(places)) >= 2:
        if not any(test):
            test = [p == min(places) for p in places]
        if all(test):
            test = [p != max(places) for p in places]
    return test


def problems_digest(problems) -> str:
    """A short hash of a set of problems (order and repeats ignored), to tell two row sets apart."""
    joined = "\n".join(sorted({normalise_problem(p) for p in problems}))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:16]


def held_out_record(source: str, split: str | None, problems: list[str], fraction: float | None = None) -> dict:
    """What run_config.json and evaluation summaries say about the test rows: where they come from,
    how many, how chosen, and a hash of their problems."""
    record = {"source": source, "split": split, "rows": len(problems), "problems_sha256": problems_digest(problems)}
    if fraction is not None:
        record.update(fraction=fraction, rule=CARVE_RULE)
    return record


def parse_split(expr: str) -> tuple[str, str]:
    """(split name, slice) of a split expression such as ``train[:5%]``.

    >>> parse_split("train[:5%]"), parse_split("test")
    (('train', '[:5%]'), ('test', ''))
    """
    m = _SPLIT_RE.match(expr or "")
    if not m:
        raise DataError(
            f"Bad split expression {expr!r}. Use a split name with an optional slice, e.g. 'train', "
            "'test[:5%]', 'train[100:200]' or 'train[:50%]'."
        )
    return m.group(1), m.group(2) or ""


def slice_range(name: str, slice_: str, n: int, expr: str) -> range:
    """The rows of a split of ``n`` rows that a slice such as ``[:5%]`` selects (datasets' own grammar)."""
    if not slice_:
        return range(n)
    from datasets import ReadInstruction

    try:
        instr = ReadInstruction.from_spec(name + slice_).to_absolute({name: n})[0]
    except (ValueError, AssertionError) as exc:
        raise DataError(
            f"Bad split expression {expr!r}: {exc}. Slices look like '[:5%]', '[10:20]' or '[-10%:]'."
        ) from None
    return range(instr.from_ or 0, n if instr.to is None else instr.to)


def check_disjoint(train_expr: str, test_expr: str, n: int) -> None:
    """Refuse a test split that takes rows the train split takes (same split, overlapping slices).

    >>> check_disjoint("train[:80%]", "train[80%:]", 10)
    >>> try:
    ...     check_disjoint("train", "train[90%:]", 10)
    ... except DataError as exc:
    ...     print(str(exc)[:69])
    --test_split 'train[90%:]' overlaps --train_split 'train' (1 of its 1
    """
    (train_name, train_slice), (test_name, test_slice) = parse_split(train_expr), parse_split(test_expr)
    if train_name != test_name:
        return
    train_rows = slice_range(train_name, train_slice, n, train_expr)
    test_rows = slice_range(test_name, test_slice, n, test_expr)
    shared = len(set(train_rows) & set(test_rows))
    if shared:
        raise DataError(
            f"--test_split {test_expr!r} overlaps --train_split {train_expr!r} ({shared} of its {len(test_rows)} rows "
            f"are training rows). Give the two disjoint slices, e.g. --train_split '{train_name}[:90%]' --test_split "
            f"'{train_name}[90%:]', or leave --test_split as 'test'."
        )
