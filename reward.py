"""Format and accuracy rewards for the output contract, shared by training and evaluation.

    python reward.py            # the self-test table; exits non-zero if any case differs

The contract every completion is held to:

    <think>reasoning</think><answer>\\boxed{final answer}</answer>

Format rules (``format_reward``):
  * 0.0 unless the think and answer blocks are both properly paired: exactly one of each of
    ``<think>``, ``</think>``, ``<answer>``, ``</answer>``, in that order, each block holding
    non-whitespace text, nothing but whitespace before ``<think>`` or between ``</think>`` and
    ``<answer>``, and nothing but whitespace or end-of-sequence markers after ``</answer>``.
  * 1.0 when paired and the answer block holds a non-empty ``\\boxed{...}``.
  * 0.5 when paired without one (an empty ``\\boxed{}`` counts as none).
  When the prompt already ends with ``<think>`` (a prefilled assistant turn), the completion is
  scored as ``<think>`` + completion; this is detected from TRL's ``prompts`` keyword, or forced
  with ``think_prefilled=True``.

Accuracy rules (``accuracy_reward``):
  * gold: the dataset's ``answer`` column when present, else the last ``\\boxed{}`` of
    ``solution``; missing or unusable gold -> ``None`` (TRL skips the sample; never 1.0).
  * prediction: the last ``\\boxed{}`` of the last complete answer block after the reasoning,
    else the block's text. No answer block -> 0.0; a box inside ``<think>`` or after
    ``</answer>`` earns nothing.
  * equivalence: math-verify ``verify(gold, prediction)`` on parsed ``$...$`` expressions, so
    ``0.5 = \\frac12``, ``\\sqrt8 = 2\\sqrt2``, sets in any order, ``(0,1) != [0,1)``,
    ``12 = 12\\text{ sides} = 12 sides`` (unit words after a number dropped) and
    ``50\\% = 50 = 0.5`` (math-verify's rule); then a plain-text fallback (``red`` = ``\\text{Red}``).
  * every check runs in a killable helper process (answer_check.py) with a hard wall-clock bound
    per item and per call (``set_verify_timeout``); a runaway check scores 0.0. This holds
    in threads and worker processes, where math-verify's own signal-based timeout does not.

Box policy (boxes.py): ``\\boxed{...}`` and ``\\fbox{...}`` count, with nested and escaped braces;
``\\boxed 5`` (no braces) is not a box.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys

from answer_check import COUNTS, answers_equal, answers_equal_many, plain_text, set_verify_timeout  # noqa: F401 - re-exported
from answer_value import BOX_MARK, hedged_around_boxes
from boxes import BOX_COMMANDS, BOXED, around_boxes, extract_boxed, extract_boxes, join_parts  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

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


def hedged(text: str, gold: str | None = None) -> bool:
    """Whether the words around the boxes of a completion's answer block change their value
    (``not \\boxed{12}``, ``\\boxed{12} is wrong``): ``answer_value.hedged_around_boxes``.

    >>> ok = hedged("<think>.</think><answer>The answer is \\\\boxed{12}.</answer>")
    >>> ok, hedged("<think>.</think><answer>not \\\\boxed{12}</answer>")
    (False, True)
    """
    skeleton = around_boxes(answer_block(text) or "", BOX_MARK)
    return skeleton is not None and hedged_around_boxes(skeleton, gold)


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
)  # fmt: skip
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


# ---------------------------------------------------------------- batched rewards (TRL's shape)
def prefilled_flags(prompts, n: int, think_prefilled: bool | None) -> list[bool]:
    """Per completion: was ``<think>`` already in the prompt? Explicit flag wins over detection."""
    if think_prefilled is not None:
        return [think_prefilled] * n
    if prompts is None:
        return [False] * n
    return [completion_text(p).rstrip().endswith(THINK_START) for p in prompts]


def format_reward(completions, prompts=None, think_prefilled: bool | None = None, **kwargs) -> list[float]:
    """Format reward per completion: 0.0, 0.5 or 1.0 under the strict contract rules.

    Args:
        completions: strings, or lists of chat messages (``[{"role": "assistant", "content": ...}]``).
        prompts: TRL passes these; a prompt ending in ``<think>`` means the think block was prefilled.
        think_prefilled: force the prefilled reading on (True) or off (False) for all items.
        **kwargs: other dataset columns and trainer arguments, ignored.

    Returns:
        One float per completion.

    >>> format_reward(["<think>1+1=2</think><answer>\\\\boxed{2}</answer>", "<answer>2</answer>"])
    [1.0, 0.0]
    """
    texts = [completion_text(c) for c in completions]
    flags = prefilled_flags(prompts, len(texts), think_prefilled)
    return [format_score(t, f) for t, f in zip(texts, flags, strict=True)]


def accuracy_reward(completions, solution, answer=None, problem=None, **kwargs) -> list[float | None]:
    """Accuracy reward per completion: 1.0 correct, 0.0 wrong or unanswered, None for unusable gold.

    Args:
        completions: strings, or lists of chat messages.
        solution: the ``solution`` column that ``data_utils`` emits (final answer in ``\\boxed{}``).
        answer: the optional ``answer`` column (gold final answer alone); preferred when present.
        problem: the ``problem`` column (the problem text): its nouns count as units (``12 apples``).
        **kwargs: other dataset columns and trainer arguments, ignored.

    Returns:
        One float or None per completion. Only the value is credited: ``\\boxed{12 is wrong}``,
        ``not \\boxed{12}`` and ``\\boxed{13 = 12}`` earn 0.0 for the gold 12 (answer_value.py).

    >>> accuracy_reward(["<think>.</think><answer>\\\\boxed{42}</answer>"] * 2, ["\\\\boxed{42}", "no box"])
    [1.0, None]
    """
    n = len(completions)
    answers = answer if answer is not None else [None] * n
    problems = problem if problem is not None else [None] * n
    golds = [gold_answer(sol, ans) for sol, ans in zip(solution, answers, strict=True)]
    texts = [completion_text(c) for c in completions]
    preds = [None if hedged(t, g) else extract_answer(t) for t, g in zip(texts, golds, strict=True)]
    if len(preds) != len(golds) or len(problems) != n:
        raise ValueError(f"{n} completions but {len(golds)} solutions and {len(problems)} problems.")
    scored = [i for i, (g, p) in enumerate(zip(golds, preds, strict=True)) if g is not None and p is not None]
    checks = answers_equal_many([(golds[i], preds[i]) for i in scored], problems=[problems[i] for i in scored])
    verdicts = dict(zip(scored, checks, strict=True))
    return [None if g is None else float(verdicts.get(i, False)) for i, g in enumerate(golds)]


class GuardedReward:
    """A reward function that never raises: a failing batch is rescored item by item, and an
    item that still raises scores None (skipped by TRL) with the error logged. TRL does not
    catch reward exceptions, so one bad sample would otherwise end a training run."""

    def __init__(self, func) -> None:
        self.func = func
        self.__name__ = func.__name__  # TRL logs rewards/<__name__>/mean

    def __call__(self, completions, **kwargs):
        try:
            return self.func(completions, **kwargs)
        except Exception:  # isolate the failing item below
            if not isinstance(completions, (list, tuple)):
                logger.error(
                    "%s got completions of type %s, not a list: nothing scored",
                    self.__name__,
                    type(completions).__name__,
                )
                return []
            logger.exception("%s failed on a batch of %d; rescoring item by item", self.__name__, len(completions))
        out = []
        for i in range(len(completions)):
            item_kwargs = {
                k: (v[i : i + 1] if isinstance(v, list) and len(v) == len(completions) else v)
                for k, v in kwargs.items()
            }
            try:
                out.extend(self.func(completions[i : i + 1], **item_kwargs))
            except Exception as exc:  # noqa: BLE001
                logger.error("%s raised on item %d (%s: %s): scored None", self.__name__, i, type(exc).__name__, exc)
                out.append(None)
        return out


# Names users pass to --reward_funcs. TRL logs each as rewards/<function name>/mean.
REWARD_FUNCS = {
    "format": format_reward,
    "accuracy": accuracy_reward,
}


def get_reward_funcs(names) -> list:
    """Reward functions for ``names`` (a list or a comma-separated string), in order, each guarded: the
    names of ``REWARD_FUNCS``, ``path/to/file.py:function`` or ``package.module:function`` (TRL's
    signature: completions plus dataset columns as keyword arguments, a list of floats or None).

    >>> [f.__name__ for f in get_reward_funcs("format,accuracy")]
    ['format_reward', 'accuracy_reward']
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No reward functions given. Expected one or more of {sorted(REWARD_FUNCS)}.")
    funcs = [GuardedReward(REWARD_FUNCS[n] if n in REWARD_FUNCS else _user_reward(n)) for n in names]
    seen = [f.__name__ for f in funcs]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"--reward_funcs names {twice[0]!r} twice: TRL logs each reward by its function name.")
    return funcs


def _user_reward(spec: str):
    """The function ``spec`` names (``file.py:function`` or ``package.module:function``); ValueError if none."""
    import importlib
    import importlib.util

    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise ValueError(
            f"Unknown reward {spec!r}. Expected one or more of {sorted(REWARD_FUNCS)}, path/to/file.py:function or "
            "package.module:function, e.g. --reward_funcs format,accuracy,my_rewards.py:length_reward."
        )
    if source.endswith(".py"):
        if not os.path.isfile(source):
            raise ValueError(f"--reward_funcs {spec}: no such file {source!r} (relative paths are read from here).")
        module_name = "user_reward_" + re.sub(r"\W", "_", os.path.abspath(source))
        loader = importlib.util.spec_from_file_location(module_name, source)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # picklable: the function's module can be found again
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: any error is theirs to see, in one line
            raise ValueError(
                f"--reward_funcs {spec}: {source} failed to import ({type(exc).__name__}: {exc})."
            ) from None
    else:
        try:
            module = importlib.import_module(source)
        except Exception as exc:  # noqa: BLE001 - as above
            raise ValueError(
                f"--reward_funcs {spec}: cannot import {source!r} ({type(exc).__name__}: {exc})."
            ) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"--reward_funcs {spec}: {source} has no function {name!r}.")
    return func


def reward_sources(names: str) -> list[dict]:
    """What each reward is, for run_config.json: its name, where it comes from, and a file's SHA-256."""
    import hashlib

    out = []
    for spec in (n.strip() for n in names.split(",") if n.strip()):
        entry = {"spec": spec, "name": REWARD_FUNCS[spec].__name__ if spec in REWARD_FUNCS else spec.rpartition(":")[2]}
        path = spec.rpartition(":")[0]
        if path.endswith(".py") and os.path.isfile(path):
            with open(path, "rb") as f:
                entry.update(file=os.path.abspath(path), sha256=hashlib.sha256(f.read()).hexdigest()[:16])
        out.append(entry)
    return out


# ---------------------------------------------------------------- self-test (python reward.py)
# Every case of the original project's self-test, verbatim, with the value it printed and ours
# (and why, where they differ on purpose), then this project's own cases: tests/data.
SELFTEST_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests", "data", "reward_selftest.json")
_SELFTEST_FUNCS = {
    "extract_boxed": lambda c: extract_boxed(c["input"]),
    "format_reward": lambda c: format_reward([c["input"]])[0],
    "accuracy_reward": lambda c: accuracy_reward([c["input"]], [c["solution"]])[0],
    "value": lambda c: accuracy_reward([c["input"]], [c["solution"]], problem=[c["problem"]])[0],
}


def _shown(value, width: int = 60) -> str:
    """A case's input as the original printed it: the text itself (not its repr), cut after ``width``."""
    text = str(value).replace("\n", " / ")
    return text if len(text) <= width else text[: width - 3] + "..."


def _self_test() -> int:
    """Print every case (input, the original's value, ours, why they differ); 1 if ours changed."""
    with open(SELFTEST_FILE, encoding="utf-8") as f:
        cases = json.load(f)
    failures = total = 0
    for section in ("original", "ours"):
        print(f"== {'the original project' if section == 'original' else 'this project'}'s cases")
        for kind, rows in cases[section].items():
            for case in rows:
                got = _SELFTEST_FUNCS[kind](case)
                ok = got == case["ours"]
                failures, total = failures + (not ok), total + 1
                original = f"  original={case['original']!r}" if "original" in case else ""
                note = f"  ({case.get('why') or case.get('note')})" if case.get("why") or case.get("note") else ""
                print(
                    f"{'ok  ' if ok else 'FAIL'} {kind:<15} {_shown(case['input']):<62}{original}  ours={got!r}{note}"
                )
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(_self_test())
