"""The system prompts and how a prompt is rendered: one source of truth for training and evaluation.

    python -c "from trl_grpo.data.prompts import system_prompt; print(system_prompt('worked_example'))"

Both templates are built from reward.py's tag constants, so the prompt and the reward can never
drift apart. ``render_prompt`` is the text the model sees in training and in evaluation alike. A
leaf: no torch.
"""

from __future__ import annotations

from trl_grpo.answers.boxes import BOXED
from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START

# The original project's system prompt, byte for byte (tests/data/original_system_prompt.json),
# its literal "\{" and "\}" around the box included; built from the reward's tag constants.
_ORIGINAL_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    f"the answer. The reasoning process and answer are enclosed within {THINK_START} {THINK_END} and "
    f"{ANSWER_START} {ANSWER_END} tags, respectively, and the final answer is enclosed within "
    f"{BOXED}\\{{\\}} tags, i.e., {THINK_START} think process here {THINK_END}{ANSWER_START} solution here "
    f"{BOXED}\\{{your final answer here\\}} {ANSWER_END}"
)
# Explicit rules plus one worked example: small models copy a shown format far more readily
# than they follow a described one (see README "What to expect" for the measured effect).
_WORKED_EXAMPLE_PROMPT = (
    "You are a careful math assistant. Think step by step inside "
    f"{THINK_START}{THINK_END} tags, then give only the final answer inside "
    f"{ANSWER_START}{ANSWER_END} tags, written as {BOXED}{{answer}}. Write nothing after "
    f"{ANSWER_END}.\n"
    "Example:\n"
    "User: What is 12 + 30?\n"
    f"Assistant: {THINK_START}12 + 30 = 42{THINK_END}{ANSWER_START}{BOXED}{{42}}{ANSWER_END}"
)
PROMPT_TEMPLATES = {
    "original": _ORIGINAL_PROMPT,
    "worked_example": _WORKED_EXAMPLE_PROMPT,
}
SYSTEM_PROMPT = PROMPT_TEMPLATES["original"]


def system_prompt(template: str) -> str:
    """The system prompt for a template name (``--prompt_template``)."""
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"Unknown prompt template {template!r}. Expected one of {sorted(PROMPT_TEMPLATES)}.")
    return PROMPT_TEMPLATES[template]


PROMPT_FORMATS = ("chat", "raw")


def render_prompt(tokenizer, conversation: list[dict], prefill_think: bool, prompt_format: str = "chat") -> str:
    """The prompt text the model sees. ``chat``: the chat template, and with ``prefill_think`` the
    assistant turn starts with ``<think>``. ``raw``: the original project's evaluation prompt,
    ``system prompt + "\\n" + problem`` with no template and nothing prefilled.

    Training and evaluation both call this, so a model is always measured on the prompt it was
    trained on. ``reward.format_reward`` sees a trailing ``<think>`` and counts it.
    """
    if prompt_format == "raw":
        return "\n".join(m["content"] for m in conversation)
    kwargs = getattr(tokenizer, "prompt_template_kwargs", None) or {}  # --chat_template_kwargs (models/loading.py)
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True, **kwargs)
    return text + THINK_START if prefill_think else text
