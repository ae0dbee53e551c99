"""Format and accuracy rewards for the output contract, shared by training and evaluation.

    python reward.py            # the self-test table; exits non-zero if any case differs

The contract: ``<think>reasoning</think><answer>\\boxed{final answer}</answer>``.
``format_reward``: 0.0 unless both blocks are properly paired, 1.0 with a non-empty ``\\boxed{}``
in the answer, 0.5 without. ``accuracy_reward``: 1.0 when the answer block's value equals the
gold answer, 0.0 otherwise, None where the gold is unusable. Both take TRL's arguments
(completions plus every dataset column as keyword arguments) and return one value per completion.

The rules in full: trl_grpo/answers/contract.py (tags, extraction, gold answers) and
trl_grpo/answers/rewards.py (the reward functions and their names); a user's own rewards:
trl_grpo/answers/registry.py; the case table: docs/rewards.md.
"""

import logging
import sys

from trl_grpo.answers.boxes import extract_boxed
from trl_grpo.answers.contract import extract_answer, gold_answer
from trl_grpo.answers.registry import get_reward_funcs
from trl_grpo.answers.rewards import REWARD_FUNCS, accuracy_reward, format_reward

__all__ = [
    "REWARD_FUNCS",
    "accuracy_reward",
    "extract_answer",
    "extract_boxed",
    "format_reward",
    "get_reward_funcs",
    "gold_answer",
]

if __name__ == "__main__":
    from trl_grpo.answers.selftest import self_test

    logging.basicConfig(level=logging.WARNING)
    sys.exit(self_test())
