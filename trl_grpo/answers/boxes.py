"""Boxed answers in text: ``\\boxed{...}`` / ``\\fbox{...}`` found with balanced braces, and the parts
of an answer written in several boxes joined into one.

    python -m pytest --doctest-modules trl_grpo/answers/boxes.py

Box policy: ``\\boxed{...}`` and ``\\fbox{...}`` count, with nested and escaped braces;
``\\boxed 5`` (no braces) is not a box: it renders ambiguously (LaTeX boxes one token). Every
function here is linear in the text (a megabyte of boxes is read in well under a second), so the
reward's time bound is never spent before an answer reaches it. A leaf: reward.py re-exports it.
"""

from __future__ import annotations

import re

BOXED = "\\boxed"
BOX_COMMANDS = ("\\boxed", "\\fbox")
# More distinct parts than this and the joined answer is over equivalence.MAX_ANSWER_CHARS anyway
# (each part a character plus ", "): the pairwise containment check, quadratic, is skipped.
_MAX_PRUNED_PARTS = 400


def _box_end(text: str, brace: int) -> int:
    """Index just past the brace closing the one at ``brace`` (-1 when it never closes)."""
    depth, i, n = 0, brace, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2
            continue
        depth += (ch == "{") - (ch == "}")
        i += 1
        if depth == 0:
            return i
    return -1


def box_spans(text: str | None) -> list[tuple[int, int]] | None:
    """``(start, end)`` of every top-level box in ``text`` (``text[start:end]`` is ``\\boxed{...}``),
    in order; boxes nested in a box are part of it. None when a box never closes.

    >>> box_spans(r"a \\boxed{1} b \\fbox{\\boxed{2}}")
    [(2, 11), (14, 30)]
    """
    spans, i, n = [], 0, len(text or "")
    nxt = {cmd: (text or "").find(cmd + "{") for cmd in BOX_COMMANDS}
    while True:
        for cmd, j in nxt.items():  # each command's next position, searched again only once passed
            if 0 <= j < i:
                nxt[cmd] = text.find(cmd + "{", i)
        found = [(j, cmd) for cmd, j in nxt.items() if j >= 0]
        if not found:
            return spans
        j, cmd = min(found)
        end = _box_end(text, j + len(cmd))
        if end < 0:
            return None
        spans.append((j, end))
        i = end
        if i >= n:
            return spans


def extract_boxed(text: str | None) -> str | None:
    """Content of the LAST ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``, braces balanced, stripped.

    Returns None when there is no box or the last box is unbalanced. Escaped braces
    (``\\{``, ``\\}``) inside the box do not count toward the balance.

    >>> extract_boxed(r"so \\boxed{1} then \\boxed{\\frac{\\sqrt{2}}{2}}")
    '\\\\frac{\\\\sqrt{2}}{2}'
    """
    if not text:
        return None
    best = max((pos + len(cmd) for cmd in BOX_COMMANDS if (pos := text.rfind(cmd + "{")) >= 0), default=-1)
    end = _box_end(text, best) if best >= 0 else -1
    return text[best + 1 : end - 1].strip() if end > 0 else None  # surrounding spaces are not the answer


def extract_boxes(text: str | None) -> list[str]:
    """Contents of every top-level ``\\boxed{}`` / ``\\fbox{}`` in ``text``, in order, stripped (of a box
    holding boxes, as ``extract_boxed`` reads it). Empty when there is none or one never closes.

    >>> extract_boxes(r"For part 1: \\boxed{\\frac{6}{5}} - for part 2: \\boxed{2}")
    ['\\\\frac{6}{5}', '2']
    """
    return [extract_boxed(text[start:end]) for start, end in box_spans(text) or []]


def around_boxes(text: str, mark: str) -> str | None:
    """``text`` with each top-level box replaced by ``mark`` (None when it holds no complete box).

    >>> around_boxes(r"so \\boxed{1} or \\boxed{2}.", "#")
    'so # or #.'
    """
    spans = box_spans(text)
    if not spans:
        return None
    pieces, i = [], 0
    for start, end in spans:
        pieces.append(text[i:start])
        i = end
    return mark.join([*pieces, text[i:]])


def join_parts(parts: list[str]) -> str | None:
    """One answer from several boxed parts, as a mathematician reads them: repeats count once; of two
    parts where one contains the other (a derivation ending in a boxed value, a restatement such as
    ``\\lambda < 0 \\text{ and } \\lambda \\neq -1`` then ``\\lambda < 0``) the later one stands; the
    rest are the parts, joined with commas (math-verify compares them as an order-free set, tuples
    as tuples). None if all are empty.

    >>> join_parts(["52", " 52"]), join_parts(["10", "52"]), join_parts(["1", "12"]), join_parts(["a = 2", "2"])
    ('52', '10, 52', '1, 12', '2')
    """
    distinct = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if len(distinct) > _MAX_PRUNED_PARTS:
        return ", ".join(distinct)
    kept = [p for i, p in enumerate(distinct) if not any(_overlaps(p, q) for q in distinct[i + 1 :])]
    return ", ".join(kept) if kept else None


def _overlaps(a: str, b: str) -> bool:
    """Whether one of two answers appears whole inside the other (not as part of a longer token)."""
    short, long = sorted((a, b), key=len)
    return re.search(r"(?<![\w.])" + re.escape(short) + r"(?![\w.])", long) is not None
