"""What is written right beside a box and changes the value it holds: arithmetic that makes the box a
term of a larger expression, a question mark ending its sentence, another number offered with "or".

    python -c "from trl_grpo.answers.attached import attached; print(attached('\\x00 + 1'))"

The text is an answer block with each box replaced by a mark (values.BOX_MARK). Refused:
``\\boxed{12} + 1``, ``\\boxed{12}\\,+1``, ``\\boxed{12}0``, ``\\boxed{12}.5``, ``\\boxed{12}x``,
``\\boxed{12}^2``, ``(\\boxed{12})^2``, ``-\\boxed{12}``, ``5 - \\boxed{12}``, ``2\\boxed{12}``,
``2(\\boxed{12})``, ``\\sqrt{\\boxed{12}}``, ``\\frac{1}{\\boxed{12}}``, ``\\boxed{12} 13``,
``Is it \\boxed{12}?``. Kept: a ``- `` bullet opening a line, a list label (``1) \\boxed{2} 2)
\\boxed{3}``), ``Part 2 \\boxed{3}``, ``\\boxed{30}^\\circ``, ``\\boxed{12}!`` and ``\\boxed{12}.``
ending a sentence, a dash before words (``\\boxed{2} - for part 2``), units (``\\boxed{12} cm``).
Every look is a short window around each mark, so the time is linear however many boxes there are.
"""

from __future__ import annotations

import re

from trl_grpo.answers.hedges import FOREIGN_OR, QUESTION_MARKS, unspaced

_GAP = re.compile(r"(?:[ \t]|\\[,;:! ]|~|\\q?quad(?![A-Za-z]))*")  # spaces, as written in LaTeX too
_OPERATOR = re.compile(r"[-+−*/×÷·^_]|\\(?:times|cdot|div|pm|mp)(?![A-Za-z])")
_GLUED = re.compile(r"\d|\.\d|[A-Za-z](?![A-Za-z])|\\pi(?![A-Za-z])")  # 120, 12.5, 12x, 12pi
_DEGREES = re.compile(r"\^\s*(?:\\circ|\{\s*\\circ\s*\})")
_LIST_LABEL = re.compile(r"\d+[.)](?:\s|$)")
_TERMINATORS = ".!;。！\n" + "".join(QUESTION_MARKS)


def _after(text: str, end: int) -> bool:
    """Arithmetic attached after the box ending at ``end``."""
    rest = text[end : end + 40]
    if _GLUED.match(rest):
        return True
    skip = _GAP.match(rest).end()
    if rest[skip : skip + 1] == ")":  # (\boxed{12})^2
        skip += 1 + _GAP.match(rest, skip + 1).end() - (skip + 1)
    tail = rest[skip:]
    if _DEGREES.match(tail):
        return False
    op = _OPERATOR.match(tail)
    if op:
        operand = tail[op.end() :].lstrip(" \t~")
        return bool(re.match(r"[\d(\\{]|[A-Za-z](?![A-Za-z])", operand))  # an operand, not a word
    return bool(re.match(r"\d", tail)) and skip > 0 and not _LIST_LABEL.match(tail)


def _before(text: str, start: int) -> bool:
    """Arithmetic attached before the box starting at ``start`` (its line, at most 40 characters)."""
    window = max(0, start - 40)
    before = text[max(window, text.rfind("\n", window, start) + 1) : start]
    if re.fullmatch(r"\s*-\s+", before):  # "- \boxed{12}" opening a line: a bullet
        return False
    if before[-1:].isdigit() or before.rstrip(" \t~").endswith("{"):  # 2\boxed{12}; \sqrt{\boxed{12}}
        return True
    bare = re.sub(r"(?:[ \t~]|\\[,;:! ])+$", "", before)
    if re.search(r"[\d)]\s*\($", bare):  # 2(\boxed{12})
        return True
    op = re.search(r"(?:[-+−*/×÷·^_]|\\(?:times|cdot|div|pm|mp)(?![A-Za-z]))\s*$", bare)
    if not op:
        return False
    operand = bare[: op.start()].rstrip(" \t~")
    return not operand or bool(re.search(r"(?:[\d)}]|(?<![A-Za-z])[A-Za-z])$", operand))  # -\boxed, 5 - \boxed


def asked(text: str, end: int) -> bool:
    """Whether the sentence of the box ending at ``end`` ends with a question mark."""
    for ch in text[end : end + 200]:
        if ch in _TERMINATORS:
            return ch in QUESTION_MARKS
    return False


def attached(skeleton: str, mark: str = "\x00") -> bool:
    """Whether a box in ``skeleton`` is a term of a larger expression or asked rather than answered.

    >>> attached("The answer is \\x00."), attached("\\x00 + 1"), attached("Is it \\x00?"), attached("- \\x00")
    (False, True, True, False)
    """
    for m in re.finditer(re.escape(mark), skeleton):
        if _after(skeleton, m.end()) or _before(skeleton, m.start()) or asked(skeleton, m.end()):
            return True
    return False


def or_beside_a_number(skeleton: str) -> bool:
    """Another language's "or" with a number beside it outside the boxes (``\\boxed{12} oder 13``)."""
    for word in FOREIGN_OR:
        for m in re.finditer(re.escape(word), skeleton):
            before, after = skeleton[max(0, m.start() - 40) : m.start()], skeleton[m.end() : m.end() + 40]
            if not unspaced(word) and (before[-1:].isalpha() or after[:1].isalpha()):
                continue  # inside another word
            if before.rstrip()[-1:].isdigit() or after.lstrip()[:1].isdigit():
                return True
    return False
