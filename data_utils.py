"""Load any math dataset (or the built-in one, builtin_data.py) into one schema and render its prompts.

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

This module is a leaf: no torch import, so it loads and tests in milliseconds. Anything that
needs a tokenizer receives it as an argument.
"""

from __future__ import annotations

import logging
import os
import re

import builtin_data
import data_files
from data_files import cell_text
from prompts import (  # noqa: F401 - re-exported: data_utils is where callers find the prompt pipeline
    DEFAULT_PROMPT_TEMPLATE,
    PROMPT_FORMATS,
    PROMPT_TEMPLATES,
    SYSTEM_PROMPT,
    render_prompt,
    system_prompt,
)
from reward import BOXED, extract_boxed, gold_answer
from splits import (
    TEST_FRACTION,
    DataError,
    carve,
    check_disjoint,
    contaminated,
    held_out_record,
    normalise_problem,
    parse_split,
    slice_range,
)

logger = logging.getLogger(__name__)

# The dataset main.py trains on and eval.py measures when none is named: the easiest level,
# the one a 135M model learns on 2 CPU cores in minutes.
DEFAULT_DATASET_ID = "builtin:1"


def is_builtin(dataset_id: str) -> bool:
    """Whether ``dataset_id`` names the built-in dataset; ``BUILTIN:1`` and the like are refused with the
    spelling that works, rather than sent to the hub.

    >>> is_builtin("builtin:1-2"), is_builtin("AI-MO/NuminaMath-TIR")
    (True, False)
    """
    head = dataset_id.split(":")[0]
    if head != "builtin" and head.strip().lower() == "builtin":
        raise DataError(
            f"Dataset id {dataset_id!r}: the built-in dataset is written in lower case, "
            f"{'builtin' + dataset_id[len(head) :]!r}."
        )
    return head == "builtin"


def parse_builtin_spec(dataset_id: str) -> dict[int, float]:
    """Levels named by ``builtin``, ``builtin:2``, ``builtin:1-3``, ``builtin:1,4`` or ``builtin:1-2,3@0.25``,
    each with its share of train rows (``DataError`` otherwise)."""
    try:
        return builtin_data.parse_builtin_spec(dataset_id)
    except ValueError as exc:
        raise DataError(str(exc)) from None


# ---------------------------------------------------------------- loading
PROBLEM_COLUMNS = ("problem", "question", "query", "instruction", "input")
SOLUTION_COLUMNS = ("solution", "reasoning", "output")
ANSWER_COLUMNS = ("final_answer", "answer", "expected_answer", "target")
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


def _apply_slice(ds, name: str, slice_: str, expr: str):
    """Rows of ``ds`` selected by a slice such as ``[:5%]``."""
    return ds.select(slice_range(name, slice_, len(ds), expr)) if slice_ else ds


def _load_all_splits(dataset_id: str, config: str | None = None):
    """A ``DatasetDict`` of every split a source has (builtin, local path or hub id); ``config``: a hub
    dataset's configuration, or the subfolder of a local folder laid out by configuration."""
    from datasets import Dataset, DatasetDict, load_dataset

    if is_builtin(dataset_id):
        if config:
            raise DataError(f"--dataset_config {config!r}: the built-in dataset has no configurations; drop it.")
        shares = parse_builtin_spec(dataset_id)
        records = builtin_data.builtin_records(list(shares), shares=shares)
        return DatasetDict({k: Dataset.from_list(v) for k, v in records.items()})
    path = os.path.expanduser(dataset_id)
    if os.path.exists(path):
        return data_files.load_local(path, config)
    if os.sep in dataset_id.strip("/") and dataset_id.count("/") != 1 or dataset_id.startswith((".", "/", "~")):
        raise DataError(f"Dataset path {dataset_id!r} does not exist. Check the path, or use 'builtin'.")
    try:
        return load_dataset(dataset_id, config)
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types; all mean "not available"
        raise DataError(
            f"Could not load dataset {dataset_id!r} from the hub or its local cache ({type(exc).__name__}: "
            f"{str(exc)[:200]}). With no hub reachable, download it elsewhere and pass the folder "
            "(save_to_disk or the repo's data files) as --dataset_id, or use the built-in dataset: "
            "--dataset_id builtin."
        ) from None


def _pick(
    columns: list[str], flag_value: str | None, candidates: tuple[str, ...], what: str, flag: str, required: bool
):
    if flag_value:
        if flag_value not in columns:
            raise DataError(f"Column {flag_value!r} given by {flag} is not in the dataset. Its columns are {columns}.")
        return flag_value
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DataError(
            f"No {what} column found. The dataset's columns are {columns}; name the {what} column with {flag} "
            f"(looked for {list(candidates)})."
        )
    return None


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" but not "(1, 2)" or "1,2"


def standardize(
    ds, problem_column=None, solution_column=None, answer_column=None, template: str = "original", system=None
):
    """Map a dataset's columns to the schema ``prompt, solution, answer`` (see the module docstring).

    Detected layouts: NuminaMath-TIR / MATH (problem, solution), GSM8K (question, answer ending
    in ``#### 72``), DeepMath-style (question, final_answer); flags override detection.
    """
    columns = list(ds.column_names)
    pcol = _pick(columns, problem_column, PROBLEM_COLUMNS, "problem", "--problem_column", True)
    scol = _pick(columns, solution_column, SOLUTION_COLUMNS, "solution", "--solution_column", False)
    acol = _pick(columns, answer_column, ANSWER_COLUMNS, "answer", "--answer_column", False)
    if acol == pcol:
        acol = None
    if scol is None and acol is None:
        raise DataError(
            f"No solution or answer column found. The dataset's columns are {columns}; name one with "
            f"--solution_column or --answer_column (looked for {list(SOLUTION_COLUMNS + ANSWER_COLUMNS)})."
        )
    sysmsg = system or system_prompt(template)

    def convert(example):
        solution = cell_text(example[scol]) if scol else ""
        answer = cell_text(example[acol]) if acol else ""
        gsm = _GSM8K_ANSWER.search(answer) if answer else None
        if gsm:  # GSM8K: the rationale and the final answer share one column; "1,000" is a thousand
            solution = solution or answer[: gsm.start()].strip()
            answer = _THOUSANDS.sub("", gsm.group(1)).strip()
        if not answer:  # the gold alone: all the solution's boxed parts, or a solution that is only math
            answer = gold_answer(solution) or ""
        if answer and extract_boxed(solution) is None:
            solution = f"{solution}\n{BOXED}{{{answer}}}".strip()
        problem = "" if example[pcol] is None else str(example[pcol]).strip()
        return {
            "prompt": [{"role": "system", "content": sysmsg}, {"role": "user", "content": problem}],
            "problem": problem,
            "solution": solution,
            "answer": answer,
        }

    from datasets import Features, List, Value

    text = Value("string")  # stated: an input column of numbers would otherwise keep its numeric type
    message = {"role": text, "content": text}
    features = Features({"prompt": List(message), "problem": text, "solution": text, "answer": text})
    return ds.map(convert, remove_columns=columns, features=features, desc="Formatting prompts")


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
            (splits.py: ``test_fraction`` of the problems, the same rows every time), and the train
            rows exclude it. A test split that takes training rows is refused.
        problem_column / solution_column / answer_column: override column detection.
        prompt_template: a name from ``PROMPT_TEMPLATES``; ``system``: your own system prompt instead.
        dataset_config: a hub dataset's configuration (or a local folder's configuration subfolder).

    Returns:
        ``(train, test)``; either is None when its split expression is None.

    >>> train, test = load_and_process_data("builtin:1", "train[:10]", "test[:4]")
    >>> len(train), len(test), sorted(test.column_names)
    (10, 4, ['answer', 'problem', 'prompt', 'solution'])
    """
    train, test, _ = load_splits(
        dataset_id, train_split, test_split, (problem_column, solution_column, answer_column), prompt_template,
        test_fraction, config=dataset_config, system=system,
    )  # fmt: skip
    return train, test


def load_splits(
    dataset_id: str,
    train_split: str | None,
    test_split: str | None,
    columns: tuple = (None, None, None),
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    test_fraction: float = TEST_FRACTION,
    roles: tuple[str, ...] = ("train", "test"),
    config: str | None = None,
    system: str | None = None,
):
    """``(train, test, held_out)``: the rows of each split expression given (standardized for the
    ``roles`` asked, else None) and ``held_out``, what the test rows are (``splits.held_out_record``:
    carved or the dataset's, how many, a hash of their problems; None without a test split)."""
    system_prompt(prompt_template)  # fail on a bad name before any loading
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}.")
    exprs = {role: expr for role, expr in (("train", train_split), ("test", test_split)) if expr is not None}
    wanted = {role: parse_split(expr) for role, expr in exprs.items()}
    available = dict(_load_all_splits(dataset_id, config))
    held_out = None
    if "test" in wanted and wanted["test"][0] == "test" and "test" not in available and "train" in available:
        available["train"], available["test"], problems = _carve(available["train"], columns[0], test_fraction)
        held_out = held_out_record("carved from train", test_split, problems, test_fraction)
        logger.info(
            "Dataset %s has no test split: %d of its %d problems are held out as test rows, chosen by their text "
            "(splits.py); training never sees them.",
            dataset_id, len(available["test"]), len(available["test"]) + len(available["train"]),
        )  # fmt: skip
    for role, (name, _) in wanted.items():
        if name not in available:
            raise DataError(
                f"Split {name!r} (from {exprs[role]!r}) is not in dataset {dataset_id!r}. Its splits are "
                f"{sorted(available)}."
            )
    if len(wanted) == 2 and wanted["train"][0] == wanted["test"][0]:
        check_disjoint(train_split, test_split, len(available[wanted["train"][0]]))
    out = {}
    for role in set(roles) & set(wanted):
        name, slice_ = wanted[role]
        ds = _apply_slice(available[name], name, slice_, exprs[role])
        if len(ds) == 0:
            raise DataError(f"Split {name}{slice_} of {dataset_id!r} is empty. Widen the slice or check the data.")
        out[role] = standardize(ds, *columns, prompt_template, system)
    if held_out is None and "test" in out:
        held_out = held_out_record("the dataset's split", test_split, out["test"]["problem"])
    elif held_out is None and "test" in wanted:
        held_out = {"source": "the dataset's split", "split": test_split}
    return out.get("train"), out.get("test"), held_out


def _carve(ds, problem_column: str | None, fraction: float):
    """(train rows, test rows, test problems) of a split with no test split beside it (``splits.carve``)."""
    pcol = _pick(list(ds.column_names), problem_column, PROBLEM_COLUMNS, "problem", "--problem_column", True)
    problems = ["" if p is None else str(p) for p in ds[pcol]]
    sides = carve(problems, fraction)
    test = [i for i, t in enumerate(sides) if t]
    train = [i for i, t in enumerate(sides) if not t]
    if not test or not train:
        raise DataError(
            f"The dataset has no test split, and {len(ds)} row(s) with {len(set(map(normalise_problem, problems)))} "
            "distinct problem(s) are too few to hold some out as test rows. Add rows, or give the test rows yourself: "
            "a folder with train.jsonl and test.jsonl (or train/test parquet files)."
        )
    return ds.select(train), ds.select(test), [problems[i] for i in test]


def training_problems(
    dataset_id: str, train_split: str, test_split: str | None, columns=(None, None, None), config: str | None = None
) -> set:
    """The normalised problem texts of a run's training rows (its test split held out), for counting
    test problems seen in training (``contaminated``)."""
    train, _, _ = load_splits(dataset_id, train_split, test_split, columns, roles=("train",), config=config)
    return {normalise_problem(p) for p in train["problem"]}


def prompt_rows(
    tokenizer,
    dataset_id: str,
    split: str,
    role: str,
    *,
    held_out: str | None = "test",
    exclude: set | None = None,
    template: str = DEFAULT_PROMPT_TEMPLATE,
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
        exclude: normalised problem texts known from training (``training_problems``): rows with
            one of them are left out and counted as ``contaminated``.
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
        dataset_id, splits[0], splits[1], columns, template, roles=splits[2], config=dataset_config, system=system
    )
    ds = train if role == "train" else test
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    ds = ds.add_column("problem_id", list(range(len(ds))))  # the row of the split, kept through the filters
    ds, dropped = drop_unusable_rows(ds)
    seen = set(contaminated(ds["problem"], exclude)) if exclude else set()
    if seen:
        logger.warning(
            "Left out %d of %d problems that also occur in the training rows (contaminated): a model is not "
            "scored on what it trained on.",
            len(seen), len(ds),
        )  # fmt: skip
        ds = ds.select([i for i in range(len(ds)) if i not in seen])
        if len(ds) == 0:
            raise DataError(
                f"Every problem of {dataset_id!r} {split!r} also occurs in the training rows: there is nothing the "
                "model did not train on to score. Evaluate on another split or dataset."
            )
    dropped["contaminated"] = len(seen)
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_id", default="builtin", help="builtin[:levels], a local path, or a hub id")
    parser.add_argument("--train_split", default="train", help="split expression for training rows")
    parser.add_argument("--test_split", default="test", help="split expression for evaluation rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    train, test = load_and_process_data(args.dataset_id, args.train_split, args.test_split)
    print(f"train: {len(train)} rows, test: {len(test)} rows")
    for row in test.select(range(min(3, len(test)))):
        print(row["prompt"][1]["content"], "->", row["answer"])
