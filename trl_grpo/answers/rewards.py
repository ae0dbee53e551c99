"""Format and accuracy rewards in TRL's shape, shared by training and evaluation.

    python reward.py            # the self-test table over these functions (selftest.py)

``format_reward``: the contract's format score per completion (contract.py). When the prompt
already ends with ``<think>`` (a prefilled assistant turn), the completion is scored as
``<think>`` + completion; this is detected from TRL's ``prompts`` keyword, or forced with
``think_prefilled=True``.

``accuracy_reward``:
  * gold: the dataset's ``answer`` column when present, else the last ``\\boxed{}`` of
    ``solution``; missing or unusable gold -> ``None`` (TRL skips the sample; never 1.0).
  * prediction: the last ``\\boxed{}`` of the last complete answer block after the reasoning,
    else the block's text. No answer block -> 0.0; a box inside ``<think>`` or after
    ``</answer>`` earns nothing; words around the box that change its value (``not``, ``or``)
    earn nothing (values.py).
  * equivalence: math-verify ``verify(gold, prediction)`` on parsed ``$...$`` expressions, so
    ``0.5 = \\frac12``, ``\\sqrt8 = 2\\sqrt2``, sets in any order, ``(0,1) != [0,1)``,
    ``12 = 12\\text{ sides} = 12 sides`` (unit words after a number dropped) and
    ``50\\% = 50 = 0.5`` (math-verify's rule); then a plain-text fallback (``red`` = ``\\text{Red}``).
  * every check runs in a killable helper process (equivalence.py) with a hard wall-clock bound
    per item and per call (``set_verify_timeout``); a runaway check scores 0.0. This holds
    in threads and worker processes, where math-verify's own signal-based timeout does not.

Box policy (trl_grpo/answers/boxes.py): ``\\boxed{...}`` and ``\\fbox{...}`` count, with nested and escaped braces;
``\\boxed 5`` (no braces) is not a box. ``GuardedReward`` wraps every reward a run uses so one
failing sample scores None instead of ending training (TRL calls rewards without a try).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import sys
import threading
import time

from trl_grpo.answers.boxes import around_boxes
from trl_grpo.answers.contract import (
    THINK_START,
    answer_block,
    completion_text,
    extract_answer,
    format_score,
    gold_answer,
)
from trl_grpo.answers.equivalence import answers_equal_many
from trl_grpo.answers.values import BOX_MARK, hedged_around_boxes

logger = logging.getLogger(__name__)


def hedged(text: str, gold: str | None = None) -> bool:
    """Whether the words around the boxes of a completion's answer block change their value
    (``not \\boxed{12}``, ``\\boxed{12} is wrong``): ``values.hedged_around_boxes``.

    >>> ok = hedged("<think>.</think><answer>The answer is \\\\boxed{12}.</answer>")
    >>> ok, hedged("<think>.</think><answer>not \\\\boxed{12}</answer>")
    (False, True)
    """
    skeleton = around_boxes(answer_block(text) or "", BOX_MARK)
    return skeleton is not None and hedged_around_boxes(skeleton, gold)


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
        ``not \\boxed{12}`` and ``\\boxed{13 = 12}`` earn 0.0 for the gold 12 (trl_grpo/answers/values.py).

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


class RewardError(ValueError):
    """A reward returned what TRL cannot use (not one value per completion); the message names it."""


class RewardStuck(KeyboardInterrupt):
    """Ctrl-C while a reward ran past its time bound: the run stops here, naming the reward and where
    it was (a KeyboardInterrupt, so it unwinds through TRL and the Trainer without being caught)."""


class GuardedReward:
    """A reward function as training calls it, made safe against the user's code:

    * it gets its own copy of the completions (a reward that edits the list it is handed cannot
      change what the next reward scores or what the completion log records);
    * a batch that raises is rescored item by item, and an item that still raises scores None
      (skipped by TRL) with the error logged: TRL does not catch reward exceptions;
    * a NaN or infinite value scores None and is counted (``non_finite``), instead of poisoning
      its group's advantages;
    * a list of the wrong length is ``RewardError``, one line naming the reward;
    * a call running longer than ``time_bound_s`` is named on the console with where it is
      (``running()``), and Ctrl-C then stops the run naming it (runs/control.py).
    """

    time_bound_s: float = 300.0  # --reward_timeout
    _running: dict = {}  # thread id -> (name, start time) of the calls in progress, one per thread

    def __init__(self, func) -> None:
        self.func = func
        self.__name__ = func.__name__  # TRL logs rewards/<__name__>/mean
        self.non_finite = 0

    def __call__(self, completions, **kwargs):
        if not isinstance(completions, (list, tuple)):
            logger.error(
                "%s got completions of type %s, not a list: nothing scored", self.__name__, type(completions).__name__
            )
            return []
        watch = _Watch(self.__name__, self.time_bound_s)
        try:  # its own copy of everything it is handed: the gold and the completions stay as they are
            own = {k: _own_copy(v) for k, v in kwargs.items()}
            out = _materialised(self._scored(copy.deepcopy(list(completions)), own))
        finally:
            watch.done()
        if not isinstance(out, (list, tuple)) or len(out) != len(completions):
            size = len(out) if isinstance(out, (list, tuple)) else type(out).__name__
            raise RewardError(
                f"reward {self.__name__} returned {size} values for {len(completions)} completions: TRL needs "
                "one float (or None) per completion. Fix the reward"
            )
        return [self._finite(v) for v in out]

    def _scored(self, completions, kwargs):
        try:
            return self.func(completions, **kwargs)
        except Exception:  # isolate the failing item below
            logger.exception("%s failed on a batch of %d; rescoring item by item", self.__name__, len(completions))
        out = []
        for i in range(len(completions)):
            item_kwargs = {
                k: (v[i : i + 1] if isinstance(v, list) and len(v) == len(completions) else v)
                for k, v in kwargs.items()
            }
            try:
                got = self.func(completions[i : i + 1], **item_kwargs)
                out.append(got[0] if isinstance(got, (list, tuple)) and len(got) == 1 else None)
            except Exception as exc:  # noqa: BLE001
                logger.error("%s raised on item %d (%s: %s): scored None", self.__name__, i, type(exc).__name__, exc)
                out.append(None)
        return out

    def _finite(self, value):
        if finite_or_none(value) is None and value is not None:
            self.non_finite += 1
            return None
        return value

    @classmethod
    def running(cls) -> tuple | None:
        """(name, seconds so far, where) of the longest reward call past its time bound, else None."""
        calls = sorted(dict(cls._running).items(), key=lambda kv: kv[1][1])
        for thread, (name, start) in calls:
            if time.monotonic() - start >= cls.time_bound_s:
                return name, time.monotonic() - start, _where(thread)
        return None


def _own_copy(value):
    """A reward's own copy of a column (lists, tuples, dicts: the data); TRL's callables and trainer
    state are handed on as they are."""
    if not isinstance(value, (list, tuple, dict)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - a cell that cannot be copied: a shallow copy still keeps the list
        return type(value)(value) if not isinstance(value, dict) else dict(value)


def finite_or_none(value):
    """``value`` as a float when it is a finite number (numpy and torch scalars too), else None.

    >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(None), finite_or_none(True)
    (0.5, None, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _materialised(out):
    """What a reward returned, as TRL reads it: an awaited coroutine (an async reward), a numpy array or
    a generator as a list."""
    if inspect.isawaitable(out):
        import asyncio

        async def wait():
            return await out

        out = asyncio.run(wait())
    if out is not None and not isinstance(out, (list, tuple, str, dict)) and hasattr(out, "__iter__"):
        out = list(out)
    return out


class _Watch:
    """Names a reward call that runs past its bound on the console, once, with where it is."""

    def __init__(self, name: str, bound_s: float) -> None:
        self.thread = threading.get_ident()
        GuardedReward._running[self.thread] = (name, time.monotonic())
        self.timer = threading.Timer(bound_s, self._warn, args=(name, bound_s, threading.get_ident()))
        self.timer.daemon = True
        self.timer.start()

    @staticmethod
    def _warn(name: str, bound_s: float, thread: int) -> None:
        logger.warning(
            "reward %s has run for %g s and is still running, at %s. Ctrl-C stops the run here (--reward_timeout "
            "sets this bound).",
            name,
            bound_s,
            _where(thread),
        )

    def done(self) -> None:
        self.timer.cancel()
        GuardedReward._running.pop(self.thread, None)


def _where(thread: int) -> str:
    """file:line (function) of the innermost frame of ``thread``."""
    frame = sys._current_frames().get(thread)
    # Asked from a signal handler on the reward's own thread: step out of the handler's frames.
    while frame is not None and (frame.f_code.co_filename == __file__ or frame.f_code.co_name == "request_stop"):
        frame = frame.f_back
    if frame is None:
        return "an unknown place"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} ({frame.f_code.co_name})"


# Names users pass to --reward_funcs, and the one place a built-in reward is added: write it above
# (TRL's signature, a name ending in _reward) and name it here. TRL logs each as
# rewards/<function name>/mean.
REWARD_FUNCS = {
    "format": format_reward,
    "accuracy": accuracy_reward,
}
