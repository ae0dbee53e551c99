"""What a run's completions do with the output contract: the telemetry counted per batch.

    python -m pytest --doctest-modules telemetry.py

Each known way to game or break ``<think>...</think><answer>\\boxed{...}</answer>`` (repeated
blocks, a box outside the answer, an empty reasoning block, text after the answer, an answer
with no reasoning), and completions cut at the length limit. Training logs these as
``telemetry/<name>`` at every logging step (tensorboard, wandb, log_history.json, the reward
curves' telemetry panel); every evaluation summary has them under ``"telemetry"``.
"""

from __future__ import annotations

from reward import (
    ANSWER_END,
    ANSWER_START,
    BOX_COMMANDS,
    EOS_TAIL,
    THINK_END,
    THINK_START,
    completion_text,
    prefilled_flags,
)

SHORT_THINK_CHARS = 10  # a think block with fewer non-space characters is "trivially short"


def contract_telemetry(completions, prompts=None, truncated=None, lengths=None) -> dict[str, float]:
    """Over a batch of completions, the share showing each known way to game or break the output
    contract, plus the share cut at the length limit and the mean length (when given):
    ``several_blocks`` (more than one think or answer block), ``box_outside_answer`` (a box
    outside the answer block), ``short_think`` (a think block under ``SHORT_THINK_CHARS``),
    ``text_after_answer``, ``answer_without_reasoning`` (an answer block, no reasoning block),
    ``truncated``, ``mean_length``. Training logs them as ``telemetry/<name>``; eval summaries too.

    >>> batch = ["<think>ok</think><answer>\\boxed{1}</answer> more", "<answer>2</answer>"]
    >>> contract_telemetry(batch)["text_after_answer"], contract_telemetry(batch)["answer_without_reasoning"]
    (0.5, 0.5)
    """
    texts = [completion_text(c) for c in completions]
    flags = prefilled_flags(prompts, len(texts), None)
    counts = dict.fromkeys(("several_blocks", "box_outside_answer", "short_think", "text_after_answer"), 0)
    counts["answer_without_reasoning"] = 0
    for text, prefilled in zip(texts, flags, strict=True):
        text = THINK_START + text if prefilled else text
        counts["several_blocks"] += text.count(THINK_START) > 1 or text.count(ANSWER_START) > 1
        a0, a1 = text.rfind(ANSWER_START), text.rfind(ANSWER_END)
        has_answer = 0 <= a0 < a1
        outside = text[:a0] + text[a1 + len(ANSWER_END) :] if has_answer else text
        counts["box_outside_answer"] += any(cmd + "{" in outside for cmd in BOX_COMMANDS)
        t0, t1 = text.find(THINK_START), text.find(THINK_END)
        think = text[t0 + len(THINK_START) : t1] if 0 <= t0 < t1 else None
        counts["short_think"] += think is not None and len("".join(think.split())) < SHORT_THINK_CHARS
        counts["text_after_answer"] += has_answer and EOS_TAIL.fullmatch(text[a1 + len(ANSWER_END) :]) is None
        counts["answer_without_reasoning"] += has_answer and not (think and think.strip())
    n = max(len(texts), 1)
    out = {k: round(v / n, 4) for k, v in counts.items()}
    if truncated is not None:
        out["truncated"] = round(sum(map(bool, truncated)) / n, 4)
    if lengths is not None:
        out["mean_length"] = round(sum(lengths) / n, 2)
    return out
