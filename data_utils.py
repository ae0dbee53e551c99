"""Load any math dataset (or the built-in one) into one schema and render its prompts.

    python data_utils.py                       # prints a few built-in problems and split sizes
    python data_utils.py --dataset_id PATH     # shows how a local dataset is read and mapped

Output schema, whatever comes in:
    prompt    the conversation: [system, user] messages (``standardize``)
    problem   the problem text alone (the ``problem`` keyword of ``reward.accuracy_reward``: its
              nouns count as units after a number)
    solution  text whose final answer is in ``\\boxed{}`` (the ``solution`` keyword of
              ``reward.accuracy_reward``)
    answer    the gold final answer alone, or "" when unknown (the ``answer`` keyword)

Sources ``load_and_process_data`` accepts as ``dataset_id``:
    builtin, builtin:1, builtin:1-2, builtin:1,3   the generated dataset, all or some levels
    builtin:1-2,3-4@0.25                           ... with a quarter of levels 3-4's train rows
    a hub id (AI-MO/NuminaMath-TIR)                 from the hub, or its local cache offline
    a folder from ``Dataset.save_to_disk``, a folder of parquet/json/jsonl/csv files laid
    out like a hub dataset, or a single such file.

``load_and_process_data`` is the original project's entry point, here with this tool's defaults
(trl_grpo/settings/flags.py). Behind it, in trl_grpo/data/: sources (loading and splits), columns
(which column is which), prompts (the system prompts), prepare (the rows a trainer or evaluation
gets), splits (test rows carved once and never trained on).
"""

import argparse
import logging

from trl_grpo.data.columns import standardize
from trl_grpo.data.prepare import prompt_rows
from trl_grpo.data.prompts import PROMPT_TEMPLATES, SYSTEM_PROMPT, render_prompt, system_prompt
from trl_grpo.data.sources import load_splits
from trl_grpo.data.splits import TEST_FRACTION
from trl_grpo.settings.flags import DEFAULT_PROMPT_TEMPLATE

__all__ = [
    "PROMPT_TEMPLATES",
    "SYSTEM_PROMPT",
    "load_and_process_data",
    "load_splits",
    "prompt_rows",
    "render_prompt",
    "standardize",
    "system_prompt",
]


def load_and_process_data(
    dataset_id: str = "builtin",
    train_split: str | None = "train",
    test_split: str | None = "test",
    problem_column: str | None = None,
    solution_column: str | None = None,
    answer_column: str | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    test_fraction: float = TEST_FRACTION,
    dataset_config: str | None = None,
    system: str | None = None,
):
    """Load ``dataset_id`` and return ``(train, test)`` datasets in the output schema.

    Args:
        dataset_id: ``builtin[:levels]``, a local path, or a hub id.
        train_split / test_split: split expressions such as ``train[:5%]``; ``None`` skips one.
            A ``test`` split the dataset lacks is carved from its train split by problem text
            (``test_fraction`` of the problems, the same rows every time), and the train rows
            exclude it. A test split that takes training rows is refused.
        problem_column / solution_column / answer_column: override column detection.
        prompt_template: a name from ``PROMPT_TEMPLATES``; ``system``: your own system prompt instead.
        dataset_config: a hub dataset's configuration (or a local folder's configuration subfolder).

    Returns:
        ``(train, test)``; either is None when its split expression is None.

    >>> train, test = load_and_process_data("builtin:1", "train[:10]", "test[:4]")
    >>> len(train), len(test), sorted(test.column_names)
    (10, 4, ['answer', 'problem', 'prompt', 'solution'])
    """
    columns = (problem_column, solution_column, answer_column)
    train, test, _ = load_splits(
        dataset_id,
        train_split,
        test_split,
        columns,
        prompt_template=prompt_template,
        test_fraction=test_fraction,
        config=dataset_config,
        system=system,
    )
    return train, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_id", default="builtin", help="builtin[:levels], a local path, or a hub id")
    parser.add_argument("--train_split", default="train", help="split expression for training rows")
    parser.add_argument("--test_split", default="test", help="split expression for evaluation rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    train, test = load_and_process_data(args.dataset_id, args.train_split, args.test_split)
    print(f"train: {len(train)} rows, test: {len(test)} rows")
    for row in test.select(range(min(3, len(test)))):
        print(row["prompt"][1]["content"], "->", row["answer"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
