"""open-r1's math rewards by their names, written for this project's output contract.

    python main.py --reward_funcs format,accuracy,tag_count,reasoning_steps,cosine,repetition_penalty,length

open-r1 (src/open_r1/rewards.py) scores ``<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`` with
its own correctness check; here each reward keeps its idea and reads the contract this tool trains:
the tags are contract.py's, correctness is ``accuracy_reward`` (the value and nothing else), a
prefilled ``<think>`` counts as written, and an unusable gold gives None (skipped), never a score.

``tag_count``          0.25 for each of the four tags written exactly once.
``reasoning_steps``    min(1, steps / 3) for the steps in the reasoning ("Step 2:", "1.", "- ",
                       "First,", "Next,", "Finally,").
``cosine``             length-scaled correctness (cosine schedule over ``cosine_max_len`` characters):
                       a short right answer earns ``cosine_max_value_correct``, a long one
                       ``cosine_min_value_correct``; a short wrong one ``cosine_min_value_wrong``,
                       a long one ``cosine_max_value_wrong`` (open-r1's defaults: 1.0 to 0.5
                       when right, 0.0 to -0.5 when wrong: rambling costs either way).
``repetition_penalty`` ``repetition_max_penalty`` x the share of repeated word n-grams
                       (``repetition_n_grams``): 0 for no repetition.
``length``             Kimi 1.5's length reward over the batch: 0.5 - (len - min) / (max - min) for
                       right answers, min(0, that) for wrong ones, 0 when all lengths are equal.
Each is a class instance (picklable) whose parameters are flags of the same names (settings/flags.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START, completion_text
from trl_grpo.answers.rewards import accuracy_reward, prefilled_flags

_STEP = re.compile(r"(Step \d+:|^\d+\.|\n-|\n\*|First,|Second,|Next,|Finally,)", re.M)


def _texts(completions, prompts) -> list[str]:
    """Completion texts with a prefilled ``<think>`` put back in front."""
    texts = [completion_text(c) for c in completions]
    flags = prefilled_flags(prompts, len(texts), None)
    return [(THINK_START if pre else "") + t for t, pre in zip(texts, flags, strict=True)]


def tag_count_reward(completions, prompts=None, **kwargs) -> list[float]:
    """0.25 for each contract tag written exactly once.

    >>> tag_count_reward(["<think>a</think><answer>b</answer>", "<think>a</think>", "<answer>x</answer><answer>"])
    [1.0, 0.5, 0.25]
    """
    tags = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
    return [sum(0.25 for tag in tags if t.count(tag) == 1) for t in _texts(completions, prompts)]


def reasoning_steps_reward(completions, prompts=None, **kwargs) -> list[float]:
    """min(1, steps / 3) for the steps written in the reasoning (before ``</think>``).

    >>> reasoning_steps_reward(["<think>Step 1: a\\nStep 2: b\\nStep 3: c</think>", "<think>42</think>"])
    [1.0, 0.0]
    """
    thoughts = [t.split(THINK_END, 1)[0] for t in _texts(completions, prompts)]
    return [min(1.0, len(_STEP.findall(t)) / 3) for t in thoughts]


@dataclass
class CosineReward:
    """Length-scaled correctness (open-r1's ``get_cosine_scaled_reward``); length in characters."""

    min_value_wrong: float = 0.0
    max_value_wrong: float = -0.5
    min_value_correct: float = 0.5
    max_value_correct: float = 1.0
    max_len: int = 1000
    __name__ = "cosine_scaled_reward"  # what TRL logs (a class attribute, not a parameter)

    def __call__(self, completions, solution, prompts=None, **kwargs) -> list[float | None]:
        correct = accuracy_reward(completions, solution, **_answer_columns(kwargs))
        out = []
        for text, right in zip(_texts(completions, prompts), correct, strict=True):
            if right is None:
                out.append(None)
                continue
            cosine = math.cos(min(1.0, len(text) / self.max_len) * math.pi)
            if right:
                low, high = self.min_value_correct, self.max_value_correct
            else:  # wrong: the long end is the mild one
                low, high = self.max_value_wrong, self.min_value_wrong
            out.append(low + 0.5 * (high - low) * (1.0 + cosine))
        return out


@dataclass
class RepetitionPenalty:
    """``max_penalty`` x the share of repeated word n-grams (open-r1's ``get_repetition_penalty_reward``)."""

    n_grams: int = 3
    max_penalty: float = -1.0
    __name__ = "repetition_penalty_reward"

    def __call__(self, completions, prompts=None, **kwargs) -> list[float]:
        out = []
        for text in _texts(completions, prompts):
            words = text.lower().split()
            grams = [tuple(words[i : i + self.n_grams]) for i in range(len(words) - self.n_grams + 1)]
            out.append((1 - len(set(grams)) / len(grams)) * self.max_penalty if grams else 0.0)
        return out


def len_reward(completions, solution, prompts=None, **kwargs) -> list[float | None]:
    """Kimi 1.5's length reward over the batch (open-r1's ``len_reward``), correctness as here.

    >>> short, long = "<think>.</think>", "<think>....</think>"
    >>> len_reward([t + "<answer>\\\\boxed{2}</answer>" for t in (short, long)], ["\\\\boxed{2}"] * 2)
    [0.5, -0.5]
    """
    correct = accuracy_reward(completions, solution, **_answer_columns(kwargs))
    lengths = [len(t) for t in _texts(completions, prompts)]
    low, high = min(lengths, default=0), max(lengths, default=0)
    if high == low:
        return [None if c is None else 0.0 for c in correct]
    out = []
    for n, right in zip(lengths, correct, strict=True):
        weight = 0.5 - (n - low) / (high - low)
        out.append(None if right is None else weight if right else min(0.0, weight))
    return out


def _answer_columns(kwargs: dict) -> dict:
    return {k: kwargs[k] for k in ("answer", "problem") if k in kwargs}


# open-r1's names (--reward_funcs), and the flags that set their parameters (open-r1's names too).
PARAMETERS = {
    "cosine": {
        "cosine_min_value_wrong": "min_value_wrong",
        "cosine_max_value_wrong": "max_value_wrong",
        "cosine_min_value_correct": "min_value_correct",
        "cosine_max_value_correct": "max_value_correct",
        "cosine_max_len": "max_len",
    },
    "repetition_penalty": {"repetition_n_grams": "n_grams", "repetition_max_penalty": "max_penalty"},
}


def open_r1_reward(name: str, params: dict | None = None):
    """The reward open-r1 calls ``name``, its parameters from ``params`` (flag name -> value), or None."""
    params = params or {}
    if name == "tag_count":
        return tag_count_reward
    if name == "reasoning_steps":
        return reasoning_steps_reward
    if name == "length":
        return len_reward
    if name in PARAMETERS:
        kind = CosineReward if name == "cosine" else RepetitionPenalty
        given = {field: params[flag] for flag, field in PARAMETERS[name].items() if params.get(flag) is not None}
        return kind(**given)
    return None
