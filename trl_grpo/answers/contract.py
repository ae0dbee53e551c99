"""The output contract: its tags, whether a completion keeps it, and what its answer and the gold are.

    python reward.py            # the self-test, which runs these rules over every case

The contract every completion is held to:

    <think>reasoning</think><answer>\\boxed{final answer}</answer>

Properly paired (``split_contract``): exactly one of each of ``<think>``, ``</think>``,
``<answer>``, ``</answer>``, in that order, each block holding non-whitespace text, nothing but
whitespace before ``<think>`` or between ``</think>`` and ``<answer>``, and nothing but whitespace
or end-of-sequence markers after ``</answer>``. ``format_score`` gives 1.0 when paired with a
non-empty ``\\boxed{...}`` in the answer block, 0.5 when paired without one, else 0.0.

The prediction (``extract_answer``) is the last complete answer block after the reasoning: its
boxes, else its text. The gold (``gold_answer``) is the ``answer`` column when present, else the
boxes of ``solution``; a placeholder or prose gold is None, never a target. The prompts are
built from these tags (trl_grpo/data/prompts.py), so prompt and reward cannot drift apart. No
torch: imports and tests in milliseconds.
"""

from __future__ import annotations

import re

from trl_grpo.answers.boxes import extract_boxed, extract_boxes, join_parts
from trl_grpo.answers.equivalence import plain_text

# ---------------------------------------------------------------- the output contract
THINK_START = "<think>"


THINK_END = "</think>"


ANSWER_START = "<answer>"


ANSWER_END = "</answer>"


# End-of-sequence markers of common chat templates that may survive decoding.
EOS_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<eos>")


_TAGS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)


EOS_TAIL = re.compile("(?:\\s|" + "|".join(re.escape(m) for m in EOS_MARKERS) + ")*")


# ---------------------------------------------------------------- pure helpers on one string
def completion_text(completion) -> str:
    """Text of a completion given as a string or as a list of chat messages (TRL's two shapes)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion.get("content") or ""
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(m) for m in completion)
    return str(completion)


def split_contract(text: str, think_prefilled: bool = False) -> tuple[str, str] | None:
    """(think, answer) contents when ``text`` is properly paired under the strict rules, else None."""
    if think_prefilled:
        text = THINK_START + text
    if any(text.count(tag) != 1 for tag in _TAGS):
        return None
    t0, t1 = text.index(THINK_START), text.index(THINK_END)
    a0, a1 = text.index(ANSWER_START), text.index(ANSWER_END)
    if not t0 < t1 < a0 < a1:
        return None
    if text[:t0].strip() or text[t1 + len(THINK_END) : a0].strip():
        return None
    tail = text[a1 + len(ANSWER_END) :]
    if EOS_TAIL.fullmatch(tail) is None:
        return None
    think = text[t0 + len(THINK_START) : t1]
    answer = text[a0 + len(ANSWER_START) : a1]
    if not think.strip() or not answer.strip():
        return None
    return think, answer


def format_score(text: str, think_prefilled: bool = False) -> float:
    """Format reward of one completion text: 0.0, 0.5 or 1.0 (rules in the module docstring)."""
    parts = split_contract(text, think_prefilled)
    if parts is None:
        return 0.0
    boxed = extract_boxed(parts[1])
    return 1.0 if boxed is not None and boxed.strip() else 0.5


def answer_block(text: str) -> str | None:
    """The text of the last complete ``<answer>...</answer>`` block after the last ``</think>``, or None.

    The last <answer> that is closed is the last one before the last </answer> (a stray extra
    </answer> is ignored). Three scans, so linear in the text: a megabyte of unclosed tags costs
    milliseconds, not the minutes a search from every <answer> would.
    """
    if not text:
        return None
    cut = text.rfind(THINK_END)
    region = text[cut + len(THINK_END) :] if cut >= 0 else text
    last_end = region.rfind(ANSWER_END)
    start = region.rfind(ANSWER_START, 0, last_end) if last_end >= 0 else -1
    if start < 0:
        return None
    return region[start + len(ANSWER_START) : region.find(ANSWER_END, start)]


def extract_answer(text: str) -> str | None:
    """The final answer a completion commits to, or None when it has no answer block.

    Looks only after the last ``</think>`` (reasoning earns nothing), takes the last complete
    ``<answer>...</answer>`` block there, and returns its boxes' content (several distinct boxes are
    one answer in several parts: ``join_parts``), else the block's text.

    >>> extract_answer("<think>2+2</think><answer>\\\\boxed{4}</answer>")
    '4'
    """
    block = answer_block(text)
    if block is None:
        return None
    boxes = extract_boxes(block)
    return join_parts(boxes) if boxes else (block.strip() or None)


def extract_final_answer_lenient(text: str) -> str | None:
    """The answer block's answer, else the last ``\\boxed{}`` anywhere (eval's lenient accuracy)."""
    answer = extract_answer(text)
    if answer is None:
        boxed = extract_boxed(text)
        answer = boxed.strip() if boxed and boxed.strip() else None
    return answer


# Gold "answers" that are not answers: a model that copies one must not earn 1.0.
_PLACEHOLDERS = frozenset(
    ("", "n/a", "na", "none", "null", "nil", "nan", "-", "--", "?", "...", "tbd", "unknown", "no answer")
    + ("not applicable", "see above", "see solution", "see solution above", "see below", "see explanation")
    + ("see the solution", "answer", "solution")
)


_PROSE = re.compile(r"(?:[A-Za-z]+[\s,.;:]+){5,}[A-Za-z]*[.!]?")  # six or more plain words


def usable_gold(gold: str | None) -> str | None:
    """``gold`` unless it is a placeholder (``N/A``, ``none``, ``see solution above``) or plain prose
    of six or more words with no number or math in it; short text answers stay usable.

    >>> usable_gold("N/A"), usable_gold(r"\\text{odd}"), usable_gold("See the worked solution above for details")
    (None, '\\\\text{odd}', None)
    """
    if gold is None:
        return None
    plain = plain_text(gold).strip(" .")
    if plain in _PLACEHOLDERS:
        return None
    if _PROSE.fullmatch(gold.strip()) and not re.search(r"[\d\\=^_+*/<>]", gold):
        return None
    return gold


_WHOLE_MATH = re.compile(r"\$\$(.+)\$\$|\$([^$]+)\$|\\\((.+)\\\)|\\\[(.+)\\\]", re.S)


def math_only(text: str) -> str | None:
    """The expression when ``text`` is wholly one math span (``$...$``, ``$$...$$``, ``\\(...\\)`` or
    ``\\[...\\]``), else None: an answer written without a box, told apart from a worked solution.

    >>> math_only("$(p,q)=(3,2)$"), math_only("$1$ and $2$"), math_only("The answer is $5$.")
    ('(p,q)=(3,2)', None, None)
    """
    m = _WHOLE_MATH.fullmatch(text.strip())
    return next((g.strip() for g in m.groups() if g is not None), None) if m else None


def gold_answer(solution: str | None, answer: str | None = None) -> str | None:
    """The gold final answer, None when there is none or it is a placeholder (``usable_gold``).

    From the ``answer`` column when given (its boxes, else the whole text, a math wrapper removed);
    else from ``solution``: its boxes (several distinct ones are one answer in several parts), or,
    without a box, the solution itself when it is wholly one math expression (``$(3,2)$``). A
    worked solution in prose without a box is None: a number buried in prose is never the gold.
    """
    if answer is not None and str(answer).strip():
        text = str(answer).strip()
        boxes = extract_boxes(text)
        return usable_gold(join_parts(boxes) if boxes else (math_only(text) or text))
    boxes = extract_boxes(solution or "")
    return usable_gold(join_parts(boxes) if boxes else math_only(solution or ""))
