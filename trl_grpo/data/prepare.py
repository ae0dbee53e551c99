"""The rows training and evaluation get: loaded, standardized, unusable and seen rows dropped,
over-long prompts filtered, each prompt rendered to the exact text the model sees.

    python -c "import data_utils; help(data_utils.prompt_rows)"

Anything that needs a tokenizer receives it as an argument, so the module imports without torch.
"""

from __future__ import annotations

import logging

from trl_grpo.answers.contract import gold_answer
from trl_grpo.data.prompts import render_prompt
from trl_grpo.data.seen import FOLDED, SAME_TEXT, SeenProblems, contaminated
from trl_grpo.data.sources import load_splits
from trl_grpo.data.splits import (
    DataError,
)

logger = logging.getLogger(__name__)


def prompt_rows(
    tokenizer,
    dataset_id: str,
    split: str,
    role: str,
    *,
    held_out: str | None = "test",
    exclude: SeenProblems | None = None,
    template: str,
    system: str | None = None,
    dataset_config: str | None = None,
    prefill_think: bool = True,
    max_prompt_length: int | None = None,
    columns: tuple = (None, None, None),
    limit: int | None = None,
    prompt_format: str = "chat",
    context: int | None = None,
):
    """The one prompt pipeline of training and evaluation: load -> standardize -> drop unusable
    rows and problems seen in training -> drop prompts over ``max_prompt_length`` tokens -> render
    each prompt to the exact text the model sees (chat template, ``<think>`` prefilled or not).

    Args:
        tokenizer: the model's tokenizer (its chat template renders the prompts).
        dataset_id, split: as ``load_and_process_data``.
        role: 'train' (training rows: the test split ``held_out`` is kept out of them, carved when
            the dataset has none) or 'eval' (the rows ``split`` names; a missing ``test`` is carved).
        exclude: the training problems (``sources.training_problems``): test rows matching one, as
            written or in disguise (seen.py), are left out and counted as ``contaminated``, and
            ``contaminated_by`` says how each matched.
        columns: (problem, solution, answer) column overrides.
        template, system: the system prompt by name, or your own text (``system`` wins).
        dataset_config: a hub dataset's configuration (or a local folder's configuration subfolder).
        limit: keep only the first N rows of the split (before any filtering).
        context: the model's context length: with ``max_prompt_length`` 0, longer prompts still drop.
        prompt_format: 'chat' (as trained) or 'raw' (the original's evaluation prompt), see ``render_prompt``.
    Returns:
        ``(rows, dropped, held_out)``: rows with ``prompt`` (text), ``problem``, ``solution``,
        ``answer`` and ``problem_id`` (the row's index in the split); the count of rows left out
        by reason (``empty_problem``, ``contaminated``, ``prompt_too_long``) plus ``unusable_gold``
        (kept; the accuracy reward skips them); and what the test rows are (``load_splits``).
    """
    if role not in ("train", "eval"):
        raise ValueError(f"role must be 'train' or 'eval', got {role!r}")
    splits = (split, held_out, ("train",)) if role == "train" else (None, split, ("test",))
    train, test, record = load_splits(
        dataset_id,
        splits[0],
        splits[1],
        columns,
        prompt_template=template,
        roles=splits[2],
        config=dataset_config,
        system=system,
    )
    ds = train if role == "train" else test
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    ds = ds.add_column("problem_id", list(range(len(ds))))  # the row of the split, kept through the filters
    ds, dropped = drop_unusable_rows(ds)
    seen = contaminated(ds["problem"], exclude) if exclude else {}
    if seen:
        logger.warning(
            "Left out %d of %d problems that also occur in the training rows (contaminated): a model is not "
            "scored on what it trained on.",
            len(seen),
            len(ds),
        )
        ds = ds.select([i for i in range(len(ds)) if i not in seen])
        if len(ds) == 0:
            raise DataError(
                f"Every problem of {dataset_id!r} {split!r} also occurs in the training rows: there is nothing the "
                "model did not train on to score. Evaluate on another split or dataset."
            )
    dropped["contaminated"] = len(seen)
    if exclude is not None:  # how each left-out problem matched a training one
        dropped["contaminated_by"] = {how: list(seen.values()).count(how) for how in (SAME_TEXT, FOLDED)}
    ds, dropped["prompt_too_long"] = filter_by_prompt_length(
        ds, tokenizer, max_prompt_length, prefill_think, prompt_format, context
    )
    render = lambda ex: {"prompt": render_prompt(tokenizer, ex["prompt"], prefill_think, prompt_format)}
    ds = ds.map(render, desc="Rendering prompts")
    return ds, dropped, record


def drop_unusable_rows(ds):
    """``(rows, counts)``: rows without a problem text dropped; ``counts`` says how many, and how
    many kept rows have no usable gold answer (the accuracy reward skips those: None)."""
    empty = [i for i, p in enumerate(ds["prompt"]) if not p[-1]["content"]]
    if empty:
        logger.warning("Dropped %d of %d rows with an empty problem.", len(empty), len(ds))
        gone = set(empty)
        ds = ds.select([i for i in range(len(ds)) if i not in gone])
    if len(ds) == 0:
        raise DataError("Every row has an empty problem text. Check the problem column (--problem_column).")
    no_gold = sum(gold_answer(s, a) is None for s, a in zip(ds["solution"], ds["answer"], strict=True))
    if no_gold:
        logger.warning("%d of %d rows have no usable gold answer: the accuracy reward skips them.", no_gold, len(ds))
    return ds, {"empty_problem": len(empty), "unusable_gold": no_gold}


def filter_by_prompt_length(
    ds,
    tokenizer,
    max_prompt_length: int | None,
    prefill_think: bool = False,
    prompt_format: str = "chat",
    context: int | None = None,
):
    """``(rows, dropped)``: rows whose chat-templated prompt fits ``max_prompt_length`` tokens (0 or
    None: the model's ``context``), and how many were dropped (never truncated).

    TRL 1.x has no ``max_prompt_length``; truncating a math problem would corrupt it, so long
    prompts are dropped, and the count goes into the run's and the evaluation's records.
    """
    limit, what = max_prompt_length, f"--max_prompt_length {max_prompt_length} tokens"
    if not limit:
        if not context:
            return ds, 0
        limit, what = context, f"the model's context ({context} tokens)"  # nothing past what the model reads
    lengths = [
        len(tokenizer(render_prompt(tokenizer, p, prefill_think, prompt_format), add_special_tokens=False)["input_ids"])
        for p in ds["prompt"]
    ]
    keep = [i for i, n in enumerate(lengths) if n <= limit]
    dropped = len(ds) - len(keep)
    if dropped:
        logger.warning("Dropped %d of %d prompts longer than %s.", dropped, len(ds), what)
    if not keep:
        raise DataError(
            f"All {len(ds)} prompts are longer than {what} (shortest is {min(lengths)} tokens). Raise "
            "--max_prompt_length, or use a model with a longer context."
        )
    return (ds.select(keep) if dropped else ds), dropped
