"""The built-in dataset: math word problems generated deterministically, in four levels.

    python -c "from trl_grpo.data.builtin import builtin_records; print(builtin_records([1])['test'][0])"

Level 1: two-number addition; 2: subtraction and multiplication; 3: two-step word problems;
4: linear equations. 2,000 train and 200 test problems per level from ``BUILTIN_SEED``, test
never overlapping train. It is code, so nothing is downloaded; data_utils.py serves it as
``--dataset_id builtin``, ``builtin:LEVELS`` or ``builtin:1-2,3-4@0.25`` (a share of some levels'
train rows) in the same schema as any other dataset.
"""

from __future__ import annotations

import random

from trl_grpo.answers.boxes import BOXED

BUILTIN_SEED = 20261125
BUILTIN_TRAIN_PER_LEVEL = 2000
BUILTIN_TEST_PER_LEVEL = 200
BUILTIN_LEVELS = {
    1: "two-number addition",
    2: "subtraction and multiplication",
    3: "two-step word problems",
    4: "linear equations",
}
_NAMES = ["Ava", "Ben", "Chen", "Dina", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena"]
_ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells"]


def _level1(rng: random.Random) -> tuple[str, str, int]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    s = a + b
    return f"What is {a} + {b}?", f"{a} + {b} = {s}.", s


def _level2(rng: random.Random) -> tuple[str, str, int]:
    if rng.random() < 0.5:
        a, b = rng.randint(20, 99), rng.randint(10, 99)
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", f"{a} - {b} = {a - b}.", a - b
    a, b = rng.randint(2, 9), rng.randint(11, 49)
    return f"What is {a} \\times {b}?", f"{a} \\times {b} = {a * b}.", a * b


def _level3(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b, c = rng.randint(3, 40), rng.randint(2, 9), rng.randint(2, 12)
    if rng.random() < 0.5:
        problem = (
            f"{name} has {a} {item} and buys {b} packs with {c} {item} in each. How many {item} does {name} have now?"
        )
        return (
            problem,
            f"The packs hold {b} \\times {c} = {b * c} {item}, so {name} has {a} + {b * c} = {a + b * c}.",
            a + b * c,
        )
    total = a + b * c
    problem = f"{name} has {total} {item} and gives {b} friends {c} {item} each. How many {item} are left?"
    return problem, f"{name} gives away {b} \\times {c} = {b * c} {item}, leaving {total} - {b * c} = {a}.", a


def _level4(rng: random.Random) -> tuple[str, str, int]:
    a, x, b = rng.randint(2, 9), rng.randint(-12, 15), rng.randint(1, 30)
    c = a * x + b
    sol = f"Subtract {b}: {a}x = {c - b}. Divide by {a}: x = {x}."
    return f"Solve for $x$: ${a}x + {b} = {c}$.", sol, x


_GENERATORS = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def parse_builtin_spec(dataset_id: str) -> dict[int, float]:
    """Levels named by ``builtin[:LEVELS]``, each with the share of its train rows kept.

    ``builtin``, ``builtin:2``, ``builtin:1-3``, ``builtin:1,4``; ``@SHARE`` after a part keeps that
    share of its levels' train rows (test rows stay whole): ``builtin:1-2,3-4@0.25`` trains on
    levels 1-2 and a quarter of 3-4 (bench/README.md, "Learning beyond addition").

    >>> parse_builtin_spec("builtin:1-2,4@0.25")
    {1: 1.0, 2: 1.0, 4: 0.25}
    """
    _, _, spec = dataset_id.partition(":")
    if not spec:
        return dict.fromkeys(sorted(BUILTIN_LEVELS), 1.0)
    shares: dict[int, float] = {}
    try:
        for part in spec.split(","):
            levels, at, share = part.partition("@")
            lo, _, hi = levels.partition("-")
            for level in range(int(lo), int(hi or lo) + 1):
                if level in shares:
                    raise ValueError(
                        f"Built-in dataset id {dataset_id!r} names level {level} twice. Name each level once, "
                        "e.g. 'builtin:1-2,3-4@0.25'."
                    )
                shares[level] = float(share) if at else 1.0
        ok = shares and set(shares) <= set(BUILTIN_LEVELS) and all(0 < v <= 1 for v in shares.values())
    except ValueError as exc:
        if "twice" in str(exc):
            raise
        ok = False
    if not ok:
        raise ValueError(
            f"Bad built-in dataset id {dataset_id!r}. Use 'builtin' for all levels, or name levels from "
            f"{sorted(BUILTIN_LEVELS)} like 'builtin:1', 'builtin:1-2' or 'builtin:1,3' ({BUILTIN_LEVELS}); "
            "'@SHARE' (0 < SHARE <= 1) after a part keeps that share of its train rows, e.g. 'builtin:1-2,3-4@0.25'."
        )
    return dict(sorted(shares.items()))


def builtin_records(
    levels: list[int] | None = None, seed: int = BUILTIN_SEED, shares: dict[int, float] | None = None
) -> dict[str, list[dict]]:
    """The built-in dataset as ``{"train": [...], "test": [...]}`` in the NuminaMath-TIR schema.

    Deterministic for a seed; test problems are drawn first and never appear in train. ``shares``
    keeps that share of a level's train rows (the first ones drawn), its test rows untouched.

    >>> d = builtin_records([1]); len(d["train"]), len(d["test"]), d["test"][0]["solution"][-11:]
    (2000, 200, '\\\\boxed{87}.')
    """
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for level in levels or sorted(BUILTIN_LEVELS):
        rng = random.Random(seed * 10 + level)
        seen: set[str] = set()
        train = max(1, round(BUILTIN_TRAIN_PER_LEVEL * (shares or {}).get(level, 1.0)))
        for split, size in (("test", BUILTIN_TEST_PER_LEVEL), ("train", train)):
            rows: list[dict] = []
            while len(rows) < size:
                problem, work, ans = _GENERATORS[level](rng)
                if problem in seen:
                    continue
                seen.add(problem)
                solution = f"{work} The answer is {BOXED}{{{ans}}}."
                rows.append(
                    {
                        "problem": problem,
                        "solution": solution,
                        "answer": str(ans),
                        "level": level,
                        "messages": [
                            {"role": "user", "content": problem},
                            {"role": "assistant", "content": solution},
                        ],
                    }
                )
            out[split].extend(rows)
    return out
