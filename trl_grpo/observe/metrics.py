"""Scoring evaluation records with the training rewards, their summary statistics, and the table
eval.py prints.

    python -m pytest --doctest-modules trl_grpo/observe/metrics.py

Pure Python (no torch): accuracy with a Wilson interval, the format-reward distribution, lenient
accuracy, pass@k and maj@k; ``print_table`` lays summaries side by side.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from trl_grpo.answers import contract, equivalence, rewards
from trl_grpo.answers.contract import completion_text
from trl_grpo.answers.equivalence import plain_text


def wilson_interval(successes: float, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval for a proportion (sound at 0 and 1, unlike the normal one).

    >>> wilson_interval(50, 100)
    [0.4038, 0.5962]
    """
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 4)
    (0.25, 0.5, 0.0)
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(answers: list[str | None], correct: list[float | None]) -> float:
    """1.0 when the most common extracted answer (ties: first seen) is a correct one."""
    keyed = [(plain_text(a), c) for a, c in zip(answers, correct, strict=True) if a is not None]
    if not keyed:
        return 0.0
    counts = Counter(k for k, _ in keyed)
    top = max(counts.values())
    winner = next(k for k, _ in keyed if counts[k] == top)
    return float(any(c == 1.0 for k, c in keyed if k == winner))


# The rewards every record is scored with; a run's other rewards (--reward_funcs file.py:function) come as ``extra``.
OWN_REWARDS = ("format_reward", "accuracy_reward")


def _as_float(verdict: bool | None) -> float | None:
    return None if verdict is None else float(verdict)


def score(prompt: str, row: dict, outs: list[str], token_ids: list[list[int]], truncated: list[bool], extra=()) -> dict:
    """One problem's record: its k completions scored with the training rewards (and the run's ``extra``
    rewards, called as TRL calls them: completions plus the row's columns)."""
    k = len(outs)
    fmt = rewards.format_reward(outs, prompts=[prompt] * k)
    problem = row.get("problem")
    acc = rewards.accuracy_reward(outs, [row["solution"]] * k, answer=[row["answer"]] * k, problem=[problem] * k)
    gold = contract.gold_answer(row["solution"], row["answer"])
    extracted = [contract.extract_answer(c) for c in outs]
    lenient_answers = [contract.extract_final_answer_lenient(c) for c in outs]
    lenient = (
        [float(a is not None and equivalence.answers_equal(gold, a, problem=problem)) for a in lenient_answers]
        if gold
        else [None] * k
    )
    plain_gold = row.get("answer") or row["solution"]  # as lighteval reads a dataset's gold
    plain = [_as_float(equivalence.plain_math_verify(plain_gold, c)) for c in outs] if gold else [None] * k
    return {
        "prompt": prompt,
        "problem": problem,
        "completion": outs[0],
        "solution": row["solution"],
        "reward": acc[0] if k == 1 else (None if gold is None else sum(acc) / k),
        "format_reward": fmt[0] if k == 1 else sum(fmt) / k,
        "extracted_answer": extracted[0],
        "gold_answer": gold,
        "lenient_reward": lenient[0],
        "completion_tokens": len(token_ids[0]),
        "completions": outs,
        "completion_lengths": [len(t) for t in token_ids],
        "truncated": truncated,
        "rewards": acc,
        "format_rewards": fmt,
        "math_verify_rewards": plain,
        "lenient_rewards": lenient,
        "original_rules_rewards": [original_rules_accuracy(c, row["solution"]) for c in outs],
        "extracted_answers": extracted,
        "extra_rewards": {f.__name__: _extra(f, prompt, row, outs, token_ids) for f in extra},
    }


def _extra(func, prompt: str, row: dict, outs: list[str], token_ids) -> list:
    columns = {key: [value] * len(outs) for key, value in row.items() if key != "prompt"}
    return list(func(outs, prompts=[prompt] * len(outs), completion_ids=token_ids, trainer_state=None, **columns))


def summarize(records: list[dict], k: int) -> dict:
    """Accuracy, format distribution, lenient accuracy, pass@k / maj@k, and counts."""
    scored = [r for r in records if r["gold_answer"] is not None]
    samples_acc = [a for r in scored for a in r["rewards"]]
    samples_fmt = [f for r in records for f in r["format_rewards"]]
    lenient = [a for r in scored for a in r["lenient_rewards"]]
    original = [a for r in records for a in r.get("original_rules_rewards", [])]
    n = len(scored)
    acc = sum(samples_acc) / len(samples_acc) if samples_acc else None  # no usable gold: no accuracy, not 0.0
    dist = Counter(samples_fmt)
    out = {
        "n": n,
        "n_records": len(records),
        "skipped_unparseable_gold": len(records) - n,
        "num_samples": k,
        "accuracy": None if acc is None else round(acc, 4),
        "accuracy_ci95": None if acc is None else wilson_interval(acc * n, n),
        "correct": round(sum(samples_acc), 2),
        "format_reward_mean": round(sum(samples_fmt) / len(samples_fmt), 4) if samples_fmt else 0.0,
        "format_distribution": {"0.0": dist.get(0.0, 0), "0.5": dist.get(0.5, 0), "1.0": dist.get(1.0, 0)},
        "lenient_accuracy": round(sum(lenient) / len(lenient), 4) if lenient else None,
        # the original project's scorer on the same completions, over every record (it skips none)
        "accuracy_original_rules": round(sum(original) / len(original), 4) if original else 0.0,
        "reward_means": _reward_means(records),
    }
    out.update(_plain_score(scored))
    if k > 1 and n:
        ks = sorted({2**i for i in range(int(math.log2(k)) + 1)} | {k})
        for kk in ks:
            out[f"pass@{kk}"] = round(sum(pass_at_k(k, int(sum(r["rewards"])), kk) for r in scored) / max(n, 1), 4)
        out[f"maj@{k}"] = round(
            sum(majority_correct(r["extracted_answers"], r["rewards"]) for r in scored) / max(n, 1), 4
        )
    return out


def _plain_score(scored: list[dict]) -> dict:
    """math-verify alone (lighteval's way) over every sample (no verdict within the bound counts as 0.0, as
    this project's accuracy counts it, and is counted), and how often it and the accuracy disagree
    (``math_verify_differs``: samples; report.py lists the problems)."""
    pairs = [
        (mv, acc)
        for r in scored
        if r.get("math_verify_rewards") is not None  # records from before the score existed: left out
        for mv, acc in zip(r["math_verify_rewards"], r["rewards"], strict=False)
    ]
    if not pairs:
        return {"math_verify_accuracy": None, "math_verify_differs": 0, "math_verify_no_verdict": 0}
    return {
        "math_verify_accuracy": round(sum(mv or 0.0 for mv, _ in pairs) / len(pairs), 4),
        "math_verify_differs": sum(1 for mv, acc in pairs if acc is not None and (mv or 0.0) != acc),
        "math_verify_no_verdict": sum(1 for mv, _ in pairs if mv is None),
    }


def _reward_means(records: list[dict]) -> dict:
    """Each reward's mean over every scored completion (None samples left out), as TRL logs rewards/*/mean."""
    values = {"format_reward": [v for r in records for v in r["format_rewards"]]}
    values["accuracy_reward"] = [v for r in records for v in r["rewards"] if v is not None]
    for r in records:
        for name, got in (r.get("extra_rewards") or {}).items():
            values.setdefault(name, []).extend(v for v in got if v is not None)
    return {name: round(sum(v) / len(v), 4) if v else None for name, v in values.items()}


# ---------------------------------------------------------------- the printed table
_ROWS = [
    "n",
    "accuracy",
    "accuracy_ci95",
    "lenient_accuracy",
    "accuracy_original_rules",
    "format_reward_mean",
    "format_distribution",
    "reward_means",
    "dropped",
    "complete",
    "problems_per_s",
    "tokens_per_s",
]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return " ".join(f"{k}:{x}" for k, x in v.items())
    return str(v)


def print_table(columns: dict[str, dict]) -> None:
    """Summary rows, one column per evaluated model."""
    keys = _ROWS + sorted({k for s in columns.values() for k in s if k.startswith(("pass@", "maj@"))})
    width = max(len(k) for k in keys) + 2
    names = list(columns)
    colw = max(24, *(len(n) + 2 for n in names))
    print("".ljust(width) + "".join(n[-colw + 2 :].ljust(colw) for n in names))
    for key in keys:
        if any(key in s for s in columns.values()):
            values = [columns[n].get(key, "-") for n in names]
            if key == "dropped":  # only the reasons that left something out
                values = [{k: x for k, x in v.items() if x} or "none" if isinstance(v, dict) else v for v in values]
            print(key.ljust(width) + "".join(_fmt(v).ljust(colw) for v in values))


def accuracy_line(summary: dict) -> str:
    """The line eval.py prints first: accuracy and n, or why there is none.

    >>> accuracy_line({"accuracy": None, "n": 0, "n_records": 3})
    'Accuracy: none (n = 0: none of the 3 problems has a usable gold answer)'
    """
    if summary.get("accuracy") is None:
        return (
            f"Accuracy: none (n = 0: none of the {summary.get('n_records', 0)} problems has a usable gold answer"
            f"{dropped_note(summary)})"
        )
    return f"Accuracy: {summary['accuracy']:.4f} (n = {summary['n']} problems{dropped_note(summary)})"


def dropped_note(summary: dict) -> str:
    dropped = {k: v for k, v in summary.get("dropped", {}).items() if v}
    return "; not scored: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items()) if dropped else ""


# ---------------------------------------------------------------- the original project's scorer
_ORIGINAL_BOX = re.compile(r"\\boxed\{(.*?)\}")


def original_rules_accuracy(completion: str, solution: str) -> float:
    """The original project's accuracy, only to put numbers beside its published ones (never a
    training reward): the first ``\\boxed{...}`` anywhere in the completion (braces not nested),
    stripped, equal as a string to the solution's first box; 1.0 when the solution has no box,
    0.0 when the completion has none.

    >>> original_rules_accuracy("<answer>\\\\boxed{ 42 }</answer>", "\\\\boxed{42}")
    1.0
    >>> original_rules_accuracy("<answer>42</answer>", "\\\\boxed{42}")  # no box: 0.0 even when right
    0.0
    """
    gold = _ORIGINAL_BOX.search(solution or "")
    if gold is None:
        return 1.0
    pred = _ORIGINAL_BOX.search(completion_text(completion))
    return float(pred is not None and pred.group(1).strip() == gold.group(1).strip())
