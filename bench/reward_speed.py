"""Accuracy-reward throughput: reward.accuracy_reward vs TRL's trl.rewards.accuracy_reward.

    python bench/reward_speed.py            # or: make bench
    python bench/reward_speed.py --n 2000 --repeats 5

Scores the same N realistic completions with both, in one process, after a warm-up, and prints
medians of several rounds. Each round times every path once, in turn (TRL; ours with the cache
off; ours with the answer cache emptied first; ours again with the cache that call left), so the
warming of math-verify's own caches in our helper process, which makes every later call faster,
falls on all paths about alike. Within one call each distinct (gold, answer) check runs once
whatever the cache; the cache pays across calls ("warm": a second pass over the same pairs, as a
second epoch or a repeated evaluation makes). The count of distinct pairs is printed.

Completions come from tests/data (50 real Qwen2.5-3B outputs on NuminaMath-TIR, prompt prefix
stripped; tests/data/README.md) when it is there, else from the built-in test split; each
problem yields the model's own completion plus right, wrong, unboxed, unpaired and malformed
variants. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trl_grpo.answers import contract, equivalence, rewards

SEED_DATA = os.path.join(ROOT, "tests", "data", "seed_eval_qwen2.5-3b_numinamath_test50.json")


def source_rows() -> tuple[list[tuple[str, str]], str]:
    """(completion, solution) pairs of real model output, or of the built-in data as a fallback."""
    if os.path.isfile(SEED_DATA):
        with open(SEED_DATA) as f:
            records = json.load(f)
        rows = []
        for r in records:
            c = r["completion"]
            rows.append((c[len(r["prompt"]) :] if c.startswith(r["prompt"]) else c, r["solution"]))
        return rows, "tests/data seed_eval_qwen2.5-3b_numinamath_test50.json"
    from trl_grpo.data import builtin

    test = builtin.builtin_records()["test"][:50]
    return [
        (f"<think>{r['solution']}</think><answer>{r['answer']}</answer>", r["solution"]) for r in test
    ], "built-in test split"


def build_completions(n: int) -> tuple[list[str], list[str], str]:
    """N completions mixing right, wrong and malformed, cycling over the source problems."""
    rows, source = source_rows()
    variants = []
    for i, (completion, solution) in enumerate(rows):
        gold = contract.gold_answer(solution) or "0"
        wrong = f"{gold}+{i % 7 + 1}"
        variants += [
            (completion, solution),  # the model's own output, as it was
            (f"<think>work</think><answer>\\boxed{{{gold}}}</answer>", solution),  # right
            (f"<think>work</think><answer>\\boxed{{{wrong}}}</answer>", solution),  # wrong
            (f"<think>work</think><answer>{gold}</answer>", solution),  # right, no box
            (f"I think the answer is \\boxed{{{gold}}}", solution),  # no tags at all
            (f"<think>work</think><answer>\\boxed{{{gold}", solution),  # cut off mid-answer
        ]
    picked = [variants[(i * 7) % len(variants)] for i in range(n)]
    return [c for c, _ in picked], [s for _, s in picked], source


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="completions to score")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    from trl.rewards import accuracy_reward as trl_accuracy_reward

    completions, solutions, source = build_completions(args.n)
    conversational = [[{"role": "assistant", "content": c}] for c in completions]
    # warm-up: imports, our helper process, sympy caches on both sides
    trl_accuracy_reward(conversational[:30], solutions[:30])
    rewards.accuracy_reward(conversational[:30], solutions[:30])

    def cold():
        equivalence._CACHE.clear()
        return rewards.accuracy_reward(conversational, solutions)

    def without_cache():
        equivalence._CACHE.clear()
        saved = equivalence._CACHE_SIZE
        equivalence._CACHE_SIZE = 0  # every item goes to the helper process (or the integer fast path)
        try:
            return rewards.accuracy_reward(conversational, solutions)
        finally:
            equivalence._CACHE_SIZE = saved

    def warm():  # the cache as the previous call (cold or warm) left it: every pair seen before
        return rewards.accuracy_reward(conversational, solutions)

    # warm right after ours: it finds the cache that cold call filled
    paths = {"trl": lambda: trl_accuracy_reward(conversational, solutions), "nocache": without_cache}
    paths |= {"ours": cold, "warm": warm}
    times, outs = {name: [] for name in paths}, {}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - start)
    trl_s, nocache_s, ours_s, warm_s = (statistics.median(times[name]) for name in paths)
    trl_scores, our_scores, nocache_scores = outs["trl"], outs["ours"], outs["nocache"]
    assert outs["warm"] == our_scores
    assert nocache_scores == our_scores
    agree = sum(a == b for a, b in zip(trl_scores, our_scores, strict=True))
    pairs = {(contract.gold_answer(s), contract.extract_answer(c)) for c, s in zip(completions, solutions, strict=True)}
    print(
        f"source: {source}; {args.n} completions, {len(pairs)} distinct (gold, answer) pairs; median of {args.repeats}"
    )
    print(f"TRL accuracy_reward : {trl_s:8.3f} s  {args.n / trl_s:9.1f} items/s  (no hard time bound)")
    print(
        f"ours accuracy_reward: {ours_s:8.3f} s  {args.n / ours_s:9.1f} items/s  (hard bound "
        f"{equivalence._VERIFY_TIMEOUT_S:.0f} s per item)"
    )
    print(f"ours, cache off     : {nocache_s:8.3f} s  {args.n / nocache_s:9.1f} items/s")
    print(f"ours, cache warm    : {warm_s:8.3f} s  {args.n / warm_s:9.1f} items/s  (the same pairs again)")
    print(
        f"agreement: {agree}/{args.n} (TRL credits a box anywhere, ours only in the answer block; TRL scores 1.0 "
        "where ours says None for unusable gold)"
    )
    result = {
        "trl_items_per_s": round(args.n / trl_s, 1),
        "ours_items_per_s": round(args.n / ours_s, 1),
        "ratio": round(trl_s / ours_s, 2),
        "ours_nocache_items_per_s": round(args.n / nocache_s, 1),
        "ratio_nocache": round(trl_s / nocache_s, 2),
        "ours_warm_cache_items_per_s": round(args.n / warm_s, 1),
        "ratio_warm_cache": round(trl_s / warm_s, 2),
        "agree": agree,
        "n": args.n,
        "distinct_pairs": len(pairs),
        "ours_none": sum(s is None for s in our_scores),
        "ours_correct": sum(s == 1.0 for s in our_scores),
        "trl_correct": sum(s == 1.0 for s in trl_scores),
        "source": source,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
