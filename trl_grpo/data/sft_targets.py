"""The cold start's data: each training row's worked solution written in the output contract, the
target of the supervised steps (``--sft_steps``) that run before GRPO.

    python -c "from trl_grpo.data.sft_targets import sft_target; print(sft_target(r'2 + 3 = \\boxed{5}.', '5', True))"

GRPO can only reinforce a right answer it samples; on problems where the model never samples one
every group scores the same and nothing is learned. A few supervised steps on worked solutions,
rendered exactly as GRPO's completions are scored (``<think>steps</think><answer>\\boxed{gold}
</answer>`` after the same prompt and ``<think>`` prefill), give GRPO something to sharpen: the
DeepSeek-R1 recipe's cold start. A leaf: no torch, so it tests instantly.
"""

from __future__ import annotations

import re

from trl_grpo.answers.boxes import BOXED, box_spans, extract_boxed
from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START, gold_answer

_TAGS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
# What may stand beside the final answer without being a worked step ("The answer is 5.", "$5$").
_FILLER = re.compile(r"(?i)\b(the|final|answer|is|so|thus|therefore|hence)\b|[\s.,:;$\\()\[\]{}]")
# Why a training row gives no target, in the order they are checked (run_config.json counts each).
SKIP_REASONS = ("no_gold", "unbalanced_box", "no_worked_steps", "contract_tags")


def open_boxes(text: str) -> str | None:
    """``text`` with each top-level box replaced by what it holds (None when a box never closes): in the
    thinking, a box would be a second final answer.

    >>> open_boxes(r"12 + 30 = 42, so \\boxed{42}."), open_boxes(r"\\boxed{1")
    ('12 + 30 = 42, so 42.', None)
    """
    spans = box_spans(text)
    if spans is None:
        return None
    pieces, i = [], 0
    for start, end in spans:
        pieces += [text[i:start], extract_boxed(text[start:end]) or ""]
        i = end
    return "".join([*pieces, text[i:]])


def worked_steps(solution: str, gold: str) -> tuple[str | None, str | None]:
    """``(steps, None)``: the solution as thinking text, its boxes opened; or ``(None, reason)`` when it is
    no worked solution (only the answer, as a dataset with an answer column and no solution gives)
    or would break the contract (it holds one of the tags).

    >>> worked_steps(r"The answer is \\boxed{5}.", "5")
    (None, 'no_worked_steps')
    >>> worked_steps(r"2 + 3 = 5. The answer is \\boxed{5}.", "5")
    ('2 + 3 = 5. The answer is 5.', None)
    """
    steps = open_boxes(solution)
    if steps is None:
        return None, "unbalanced_box"
    steps = steps.strip()
    if any(tag in steps for tag in _TAGS):
        return None, "contract_tags"
    if not _FILLER.sub("", steps.replace(gold, "", 1)):
        return None, "no_worked_steps"
    return steps, None


def sft_target(solution: str, answer: str, prefill_think: bool) -> tuple[str | None, str | None]:
    """``(completion, None)`` for one row, the text GRPO would score 1.0 for format and accuracy, or
    ``(None, reason)`` (one of ``SKIP_REASONS``). With ``prefill_think`` the prompt already ends in
    ``<think>``, so the completion starts inside it, as sampled completions do.

    >>> sft_target(r"2 + 3 = 5, so \\boxed{5}.", "5", True)[0]
    '2 + 3 = 5, so 5.</think><answer>\\\\boxed{5}</answer>'
    """
    gold = gold_answer(solution, answer)
    if gold is None:
        return None, "no_gold"
    steps, why = worked_steps(solution, gold)
    if steps is None:
        return None, why
    opening = "" if prefill_think else THINK_START
    return f"{opening}{steps}{THINK_END}{ANSWER_START}{BOXED}{{{gold}}}{ANSWER_END}", None


def sft_rows(prompts: list[str], solutions: list[str], answers: list[str], prefill_think: bool):
    """``(rows, skipped)``: ``{"prompt", "completion"}`` for every training row with a worked solution
    (``prompts``: the rendered prompt texts GRPO samples from) and the count of rows left out by
    reason. Raises ``ValueError`` naming the column flags when no row has one.
    """
    rows, skipped = [], dict.fromkeys(SKIP_REASONS, 0)
    for prompt, solution, answer in zip(prompts, solutions, answers, strict=True):
        completion, why = sft_target(solution or "", answer or "", prefill_think)
        if completion is None:
            skipped[why] += 1
        else:
            rows.append({"prompt": prompt, "completion": completion})
    if not rows:
        raise ValueError(
            f"--sft_steps trains on worked solutions, and none of the {len(prompts)} training rows has one "
            f"(left out: { {k: v for k, v in skipped.items() if v} }). Name the column of worked solutions with "
            "--solution_column (and the final answer's with --answer_column), or set --sft_steps 0."
        )
    return rows, skipped
