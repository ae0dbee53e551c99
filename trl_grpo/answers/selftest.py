"""The reward self-test: every case of the original project's self-test and this project's own.

    python reward.py            # prints the table; exits non-zero if any case differs

Each case shows its input, the value the original printed and ours, and why they differ where
they do on purpose; the cases live in tests/data/reward_selftest.json.
"""

from __future__ import annotations

import json
import os

from trl_grpo.answers.boxes import extract_boxed
from trl_grpo.answers.rewards import accuracy_reward, format_reward

# ---------------------------------------------------------------- self-test (python reward.py)
# Every case of the original project's self-test, verbatim, with the value it printed and ours
# (and why, where they differ on purpose), then this project's own cases: tests/data.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SELFTEST_FILE = os.path.join(_ROOT, "tests", "data", "reward_selftest.json")


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


def self_test() -> int:
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
