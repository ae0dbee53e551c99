"""Whether a predicted answer equals the gold one: math-verify in killable helper processes.

    python -c "from trl_grpo.answers.equivalence import answers_equal; print(answers_equal('0.5', '\\\\frac{1}{2}'))"

Used by reward.py's accuracy reward (and eval's lenient accuracy). First the prediction is reduced
to its value (trl_grpo/answers/values.py: lead-in and units off; a hedge such as ``12 is wrong`` earns
nothing; each number-only side of an equation must equal the gold, so ``13 = 12`` earns nothing).
Plain integers are compared here directly; everything else goes to math-verify
(``verify(gold, prediction)`` on ``$...$`` parses, then a plain-text fallback) in a helper
process, because math-verify's own timeout is signal-based: it fails off the main thread and
does not stop every runaway sympy call.

Bounds: each check has a hard wall-clock bound (``set_verify_timeout``; the environment
variable ``TRL_GRPO_VERIFY_TIMEOUT`` sets it for processes main.py/eval.py do not start); up to
``POOL_SIZE`` helpers check one call's items side by side, and a call waits at most
``CALL_BOUNDS`` bounds. A check that runs out of time, or whose helper dies, gives no verdict:
it scores 0.0, is counted in ``COUNTS`` and is not cached; the helper restarts in the background.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections import Counter, OrderedDict
from fractions import Fraction

from trl_grpo.answers.values import numeric_sides, value_of

logger = logging.getLogger(__name__)

# Answers longer than this score 0.0 unchecked (no answer is that long; parsing one could run away).
MAX_ANSWER_CHARS = 1000


_INT = re.compile(r"[-+]?\d+")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|operatorname)\s*\{([^{}]*)\}")


def plain_text(s: str) -> str:
    """Normalised plain text of an answer: wrappers, $, punctuation at the ends and case removed."""
    s = _TEXT_WRAP.sub(r"\1", s)
    s = s.replace("$", "").replace("\\!", "").replace("\\,", " ").replace("~", " ")
    s = re.sub(r"\s+", " ", s).strip().strip(".").strip().lower()
    return s


# A gold answer is trusted: any words after its number are its unit ("18 yuan", "12\text{ sides}").
# Predictions are reduced by values.value_of, which credits only units and nouns of the problem.
_NUMBER_WITH_UNIT = re.compile(
    r"([-+]?\d[\d,]*(?:\.\d+)?)(?:\s*\\(?:text|mbox|mathrm)\{[A-Za-z .]*\}|\s+[A-Za-z]{2,}[A-Za-z .]*)"
)


def strip_unit(answer: str) -> str:
    """``18`` from a gold ``18 yuan`` or ``12\\text{ sides}``: a number followed only by unit words.

    >>> strip_unit("18 yuan"), strip_unit("x + 1")
    ('18', 'x + 1')
    """
    m = _NUMBER_WITH_UNIT.fullmatch(answer.strip())
    return m.group(1) if m else answer


# "\\quad \\text{and} \\quad" between the parts of one answer: math-verify reads ";" as that joint.
_JOINER = re.compile(r"(?:\s|\\q?quad|\\[,;: ])*\\text\{\s*(?:and|or)\s*\}(?:\s|\\q?quad|\\[,;: ])*")


def joined_parts(answer: str) -> str:
    """``p = 5, q = 2 \\quad \\text{and} \\quad p = 7, q = 2`` -> ``p = 5, q = 2;p = 7, q = 2``: parts of one
    answer joined by a written "and"/"or" become the list math-verify compares order-free.

    >>> joined_parts(r"6 \\text{ and } 8"), joined_parts("x + 1")
    ('6;8', 'x + 1')
    """
    return _JOINER.sub(";", answer)


def _fast_equal(gold: str, pred: str) -> bool | None:
    """Exact answer for the easy, common case (both plain integers), else None (ask math-verify)."""
    g, p = gold.strip().strip("$").strip(), pred.strip().strip("$").strip()
    if _INT.fullmatch(g) and _INT.fullmatch(p) and len(g) < 50 and len(p) < 50:
        return Fraction(int(g)) == Fraction(int(p))
    return None


def _math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify equivalence of two LaTeX answers, plus the plain-text fallback. Runs in the helper."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold_parsed = parse(f"${joined_parts(gold)}$", extraction_config=config, parsing_timeout=None)
    pred_parsed = parse(f"${joined_parts(pred)}$", extraction_config=config, parsing_timeout=None)
    if gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True
    gold_text, pred_text = plain_text(gold), plain_text(pred)
    return bool(gold_text) and gold_text == pred_text


def _plain_verify(gold: str, completion: str) -> bool:
    """math-verify as lighteval's math metric uses it: the gold parsed, the whole completion parsed (its
    last boxed or LaTeX expression, else a plain one), ``verify``; no rule of this project's. In the helper."""
    from math_verify import parse, verify

    # a bare gold (10\sqrt{2}, \dfrac{1}{2}) is LaTeX: math-verify reads it only between $...$
    gold_parsed = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(completion, parsing_timeout=None)
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _worker_main(fd: int) -> None:
    """Helper process loop: receive (gold, pred) pairs, send back True/False (or an error string)."""
    from multiprocessing.connection import Connection

    logging.disable(logging.WARNING)  # math-verify warns once per process about disabled timeouts
    conn = Connection(fd)
    import math_verify.grader  # noqa: F401  (pay the import once, before the first timed item)

    conn.send("ready")
    while True:
        try:
            gold, pred, *plain = conn.recv()
        except EOFError:
            return
        try:
            result = _plain_verify(gold, pred) if plain else _math_verify_equal(gold, pred)
        except Exception as exc:  # noqa: BLE001 - any parser failure means "not equal", reported upstream
            result = f"{type(exc).__name__}: {exc}"
        conn.send(result)


class _Checker:
    """Owns one helper process; restarts it after a timeout or crash, and after a fork."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.conn = None
        self.ready = False
        self.pid = os.getpid()
        self.restarts = 0

    def _start(self) -> None:
        """Start a helper (its imports take a second or two: it gets ready while we do other work)."""
        from multiprocessing.connection import Connection

        parent_sock, child_sock = socket.socketpair()
        # The folder holding the package, so the helper imports this module wherever we run from.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        fd = child_sock.fileno()
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            f"from trl_grpo.answers import equivalence; equivalence._worker_main({fd})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(child_sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.ready = False

    def _wait_ready(self) -> None:
        if self.ready:
            return
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            self._kill()
            raise RuntimeError("reward: the math-verify helper process did not start; is math-verify installed?")
        self.ready = True

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None

    def check(self, gold: str, pred: str, timeout_s: float, plain: bool = False) -> bool | None:
        """True/False: the verdict; None: no verdict (timed out, or the helper died). ``plain``: math-verify
        alone on a whole completion (``_plain_verify``)."""
        with self.lock:
            if self.pid != os.getpid():  # forked: the helper belongs to the parent
                self.proc, self.conn, self.pid = None, None, os.getpid()
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            self._wait_ready()
            try:
                self.conn.send((gold, pred, "plain") if plain else (gold, pred))
                if self.conn.poll(timeout_s):
                    result = self.conn.recv()
                else:
                    logger.warning(
                        "answer check exceeded %.1fs (gold=%.60r pred=%.60r): scored 0.0", timeout_s, gold, pred
                    )
                    self._kill()
                    self._start()  # the replacement imports while the caller goes on
                    self.restarts += 1
                    COUNTS["timed_out"] += 1
                    return None
            except (EOFError, OSError, BrokenPipeError) as exc:
                logger.warning("answer-check helper died (%s): restarting, item scored 0.0", exc)
                self._kill()
                self.restarts += 1
                COUNTS["helper_died"] += 1
                return None
        if isinstance(result, str):
            logger.debug("math-verify failed on gold=%.60r pred=%.60r: %s", gold, pred, result)
            return False
        return bool(result)

    def close(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                self._kill()


# Up to this many helper processes check one reward call's items side by side, so a batch of
# runaway items costs about one time bound, not one per item (each is started on first need).
POOL_SIZE = 4
_CHECKERS: list[_Checker] = []
_IDLE: list[_Checker] = []
_POOL_LOCK = threading.Condition()


def _borrow() -> _Checker:
    with _POOL_LOCK:
        while not _IDLE and len(_CHECKERS) >= POOL_SIZE:
            _POOL_LOCK.wait()
        if _IDLE:
            return _IDLE.pop()
        checker = _Checker()
        _CHECKERS.append(checker)
        return checker


def _give_back(checker: _Checker) -> None:
    with _POOL_LOCK:
        _IDLE.append(checker)
        _POOL_LOCK.notify()


@atexit.register
def _close_helpers() -> None:
    for checker in list(_CHECKERS):
        checker.close()


# Checks that gave no verdict, by reason (logged as they happen; eval.py reports them).
COUNTS: Counter = Counter()
_CACHE: OrderedDict[tuple[str, str], bool] = OrderedDict()
_CACHE_SIZE = 65536
# Hard wall-clock bound for one check; TRL_GRPO_VERIFY_TIMEOUT sets it for processes that
# main.py/eval.py do not start (--verify_timeout sets it for those that they do).
_VERIFY_TIMEOUT_S = float(os.environ.get("TRL_GRPO_VERIFY_TIMEOUT", "5"))
# A reward call never waits on checks longer than this many bounds: items not checked by then
# score 0.0 and are counted as "past_call_deadline".
CALL_BOUNDS = 2


def set_verify_timeout(seconds: float) -> None:
    """Set the hard wall-clock bound (seconds) for one answer check; used by ``--verify_timeout``."""
    global _VERIFY_TIMEOUT_S
    if not seconds > 0:
        raise ValueError(f"verify timeout must be a positive number of seconds, got {seconds!r}.")
    _VERIFY_TIMEOUT_S = float(seconds)


def answers_equal(gold: str, pred: str, timeout_s: float | None = None, problem: str | None = None) -> bool:
    """Whether ``pred`` is mathematically equivalent to ``gold``, within a hard time bound.
    ``problem``: the problem text, whose nouns count as units after a number (``12 apples``).

    >>> answers_equal("0.5", "\\\\frac{1}{2}"), answers_equal("12", "12 is wrong"), answers_equal("12", "13 = 12")
    (True, False, False)
    """
    return answers_equal_many([(gold, pred)], timeout_s, [problem])[0]


def plain_math_verify(gold: str, completion: str, timeout_s: float | None = None) -> bool | None:
    """Whether math-verify alone, as lighteval scores math, finds ``completion`` equal to ``gold`` (None: no
    verdict within the time bound). eval.py reports it beside this project's stricter accuracy, so a score
    can be set beside published ones."""
    if not gold or not completion:
        return False
    checker = _borrow()
    try:
        return checker.check(gold, completion, timeout_s or _VERIFY_TIMEOUT_S, plain=True)
    finally:
        _give_back(checker)


def plan_checks(gold: str, pred: str, problem: str | None = None) -> list[tuple[str, str]] | None:
    """The (gold, value) checks that must all hold for ``pred`` to equal ``gold``, or None when it is
    refused unchecked (empty, too long, or a hedge: values.py)."""
    if not gold or not pred or len(pred) > MAX_ANSWER_CHARS:
        return None
    value = value_of(pred, problem, gold)
    if value is None:
        return None
    gold = strip_unit(gold)
    sides = [] if "=" in gold else numeric_sides(value)
    return [(gold, v) for v in dict.fromkeys([value, *sides])]


def _known_verdict(gold: str, pred: str) -> bool | None:
    """The verdict of one planned check when it needs no helper (plain integers, cached), else None."""
    fast = _fast_equal(gold, pred)
    if fast is not None:
        return fast
    key = (gold, pred)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    return None


def _check(gold: str, pred: str, timeout_s: float) -> bool | None:
    """One helper check; verdicts are cached, a timeout is not (a higher bound may decide it)."""
    checker = _borrow()
    try:
        result = checker.check(gold, pred, timeout_s)
    finally:
        _give_back(checker)
    if result is not None:
        _CACHE[(gold, pred)] = result
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def answers_equal_many(
    pairs: list[tuple[str, str]], timeout_s: float | None = None, problems: list[str | None] | None = None
) -> list[bool]:
    """``answers_equal`` for many (gold, pred) pairs (``problems``: each pair's problem text): checks
    needing math-verify run on up to ``POOL_SIZE`` helpers at once, each within the per-item bound,
    and the whole call within ``CALL_BOUNDS`` bounds (what is left then scores False and is counted)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    bound = timeout_s or _VERIFY_TIMEOUT_S
    deadline = time.monotonic() + CALL_BOUNDS * bound
    problems = problems if problems is not None else [None] * len(pairs)
    plans = [plan_checks(g, p, q) for (g, p), q in zip(pairs, problems, strict=True)]
    checks = list(dict.fromkeys(c for plan in plans if plan for c in plan))  # each distinct check once per call
    verdicts = {c: _known_verdict(*c) for c in checks}
    todo = [c for c, v in verdicts.items() if v is None]
    late: list[tuple[str, str]] = []

    def one(check: tuple[str, str]) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            late.append(check)
            return False
        return bool(_check(*check, min(bound, left)))

    if len(todo) == 1:
        verdicts[todo[0]] = one(todo[0])
    elif todo:
        with ThreadPoolExecutor(min(POOL_SIZE, len(todo))) as pool:
            for check, verdict in zip(todo, pool.map(one, todo), strict=True):
                verdicts[check] = verdict
    if late:
        COUNTS["past_call_deadline"] += len(late)
        logger.warning(
            "reward call reached its %.0fs bound: %d unchecked items scored 0.0", CALL_BOUNDS * bound, len(late)
        )
    return [bool(plan) and all(verdicts[c] for c in plan) for plan in plans]
