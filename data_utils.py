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

import json
import logging
import os
import re

import builtin_data
from reward import ANSWER_END, ANSWER_START, BOXED, THINK_END, THINK_START, extract_boxed, gold_answer

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- prompts
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
DEFAULT_PROMPT_TEMPLATE = "worked_example"
# The dataset main.py trains on and eval.py measures when none is named: the easiest level,
# the one a 135M model learns on 2 CPU cores in minutes.
DEFAULT_DATASET_ID = "builtin:1"
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
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return text + THINK_START if prefill_think else text


def parse_builtin_spec(dataset_id: str) -> dict[int, float]:
    """Levels named by ``builtin[:LEVELS]``, each with its share of train rows (``DataError`` if bad)."""
    try:
        return builtin_data.parse_builtin_spec(dataset_id)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def parse_builtin_levels(dataset_id: str) -> list[int]:
    """Levels named by ``builtin``, ``builtin:2``, ``builtin:1-3`` or ``builtin:1,4`` (``DataError`` otherwise)."""
    return list(parse_builtin_spec(dataset_id))


# ---------------------------------------------------------------- loading
_SPLIT_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(\[[^\]]*\])?\s*$")
_DATA_EXTS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
PROBLEM_COLUMNS = ("problem", "question", "query", "instruction", "input")
SOLUTION_COLUMNS = ("solution", "reasoning", "output")
ANSWER_COLUMNS = ("final_answer", "answer", "expected_answer", "target")
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)


class DataError(ValueError):
    """A dataset problem the user can fix; the message says how."""


def _parse_split(expr: str) -> tuple[str, str]:
    """(split name, slice) of a split expression such as ``train[:5%]``."""
    m = _SPLIT_RE.match(expr or "")
    if not m:
        raise DataError(
            f"Bad split expression {expr!r}. Use a split name with an optional slice, e.g. 'train', "
            "'test[:5%]', 'train[100:200]' or 'train[:50%]'."
        )
    return m.group(1), m.group(2) or ""


def _apply_slice(ds, name: str, slice_: str, expr: str):
    """Rows of ``ds`` selected by a slice such as ``[:5%]`` (datasets' own split grammar)."""
    if not slice_:
        return ds
    from datasets import ReadInstruction

    try:
        instr = ReadInstruction.from_spec(name + slice_).to_absolute({name: len(ds)})[0]
    except (ValueError, AssertionError) as exc:
        raise DataError(
            f"Bad split expression {expr!r}: {exc}. Slices look like '[:5%]', '[10:20]' or '[-10%:]'."
        ) from None
    return ds.select(range(instr.from_ or 0, len(ds) if instr.to is None else instr.to))


def _load_all_splits(dataset_id: str):
    """A ``DatasetDict`` of every split a source has (builtin, local path or hub id)."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if dataset_id.split(":")[0] == "builtin":
        shares = parse_builtin_spec(dataset_id)
        records = builtin_data.builtin_records(list(shares), shares=shares)
        return DatasetDict({k: Dataset.from_list(v) for k, v in records.items()})
    path = os.path.expanduser(dataset_id)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
            loaded = load_from_disk(path)
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        has_data = any(os.path.splitext(f)[1] in _DATA_EXTS for _, _, files in os.walk(path) for f in files)
        if not has_data:
            raise DataError(
                f"Dataset folder {path!r} holds no dataset: expected a folder written by Dataset.save_to_disk, "
                f"or data files ({', '.join(sorted(_DATA_EXTS))}) named by split, e.g. data/train-00000.parquet."
            )
        files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if os.path.splitext(f)[1] in _DATA_EXTS]
        return _loaded(lambda: load_dataset(path), files, path)
    if os.path.isfile(path):
        ext = os.path.splitext(path)[1].lower()
        if ext not in _DATA_EXTS:
            raise DataError(f"Unsupported dataset file {path!r}. Expected one of {sorted(_DATA_EXTS)}.")
        return _loaded(lambda: load_dataset(_DATA_EXTS[ext], data_files={"train": path}), [path], path)
    if os.sep in dataset_id.strip("/") and dataset_id.count("/") != 1 or dataset_id.startswith((".", "/", "~")):
        raise DataError(f"Dataset path {dataset_id!r} does not exist. Check the path, or use 'builtin'.")
    try:
        return load_dataset(dataset_id)
    except Exception as exc:  # noqa: BLE001 - the hub client raises many types; all mean "not available"
        raise DataError(
            f"Could not load dataset {dataset_id!r} from the hub or its local cache ({type(exc).__name__}: "
            f"{str(exc)[:200]}). With no hub reachable, download it elsewhere and pass the folder "
            "(save_to_disk or the repo's data files) as --dataset_id, or use the built-in dataset: "
            "--dataset_id builtin."
        ) from None


def _loaded(load, files: list[str], source: str):
    """``load()``'s splits, or a ``DataError`` that names the bad file (and line) and the fix."""
    for f in files:
        if os.path.getsize(f) == 0:
            raise DataError(f"Dataset file {f!r} is empty. Give a file with one problem per row.")
    try:
        splits = load()
    except Exception as exc:  # noqa: BLE001 - datasets wraps parse errors in many types; find the cause below
        for f in files:
            _diagnose(f)
        if "corresponds to no data" in str(exc):  # datasets' words for a file with a header and no rows
            raise DataError(f"Dataset {source!r} has no rows. Give a file with one problem per row.") from None
        raise DataError(
            f"Could not read dataset {source!r} ({type(exc).__name__}: {str(exc)[:200]}). Check its files' format."
        ) from None
    if not any(len(split) for split in splits.values()):
        raise DataError(f"Dataset {source!r} has no rows. Give a file with one problem per row.")
    return splits


def _diagnose(path: str) -> None:
    """Raise a ``DataError`` naming what is wrong in a text data file (encoding, bad JSON line)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".jsonl", ".csv"):
        return
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"Dataset file {path!r} is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}). Re-save it as UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > fixed{ext}"
        ) from None
    if ext == ".jsonl" or (ext == ".json" and not text.lstrip().startswith(("[", "{\n"))):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise DataError(
                        f"Dataset file {path!r}, line {n}: not valid JSON ({exc.msg}). Fix or remove that line."
                    ) from None
    elif ext == ".json":
        try:
            json.loads(text)
        except ValueError as exc:
            raise DataError(f"Dataset file {path!r}, line {exc.lineno}: not valid JSON ({exc.msg}).") from None


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


def standardize(ds, problem_column=None, solution_column=None, answer_column=None, template: str = "original"):
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
    sysmsg = system_prompt(template)

    def convert(example):
        solution = str(example[scol]) if scol and example[scol] is not None else ""
        answer = str(example[acol]) if acol and example[acol] is not None else ""
        gsm = _GSM8K_ANSWER.search(answer) if answer else None
        if gsm:  # GSM8K: the rationale and the final answer share one column
            solution = solution or answer[: gsm.start()].strip()
            answer = gsm.group(1).replace(",", "").strip()
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

    return ds.map(convert, remove_columns=columns, desc="Formatting prompts")


def load_and_process_data(
    dataset_id: str = "builtin",
    train_split: str = "train",
    test_split: str = "test",
    problem_column: str | None = None,
    solution_column: str | None = None,
    answer_column: str | None = None,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
    test_fraction: float = 0.1,
    seed: int = 42,
):
    """Load ``dataset_id`` and return ``(train, test)`` datasets in the output schema.

    Args:
        dataset_id: ``builtin[:levels]``, a local path, or a hub id.
        train_split / test_split: split expressions such as ``train[:5%]``; ``None`` skips one.
            A test split the dataset lacks is carved from its train split: seeded, disjoint,
            ``test_fraction`` of it.
        problem_column / solution_column / answer_column: override column detection.
        prompt_template: a name from ``PROMPT_TEMPLATES``.

    Returns:
        ``(train, test)``; either is None when its split expression is None.

    >>> train, test = load_and_process_data("builtin:1", "train[:10]", "test[:4]")
    >>> len(train), len(test), sorted(test.column_names)
    (10, 4, ['answer', 'problem', 'prompt', 'solution'])
    """
    system_prompt(prompt_template)  # fail on a bad name before any loading
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}.")
    wanted = {k: _parse_split(v) for k, v in (("train", train_split), ("test", test_split)) if v is not None}
    splits = _load_all_splits(dataset_id)
    available = dict(splits)
    if "test" in wanted and wanted["test"][0] not in available and "train" in available and wanted["test"][0] == "test":
        if len(available["train"]) < 2:
            raise DataError(
                f"Dataset {dataset_id!r} has no test split and too few rows ({len(available['train'])}) to carve one."
            )
        carved = available["train"].train_test_split(test_size=test_fraction, seed=seed, shuffle=True)
        logger.info(
            "Dataset %s has no test split: carved a disjoint %.0f%% of train (seed %d).",
            dataset_id,
            100 * test_fraction,
            seed,
        )
        available["train"], available["test"] = carved["train"], carved["test"]
    out = []
    for role in ("train", "test"):
        if role not in wanted:
            out.append(None)
            continue
        name, slice_ = wanted[role]
        if name not in available:
            raise DataError(
                f"Split {name!r} (from {train_split if role == 'train' else test_split!r}) is not in dataset "
                f"{dataset_id!r}. Its splits are {sorted(available)}."
            )
        ds = _apply_slice(available[name], name, slice_, train_split if role == "train" else test_split)
        if len(ds) == 0:
            raise DataError(f"Split {name}{slice_} of {dataset_id!r} is empty. Widen the slice or check the data.")
        out.append(standardize(ds, problem_column, solution_column, answer_column, prompt_template))
    return out[0], out[1]


def prompt_rows(
    tokenizer,
    dataset_id: str,
    split: str,
    role: str,
    *,
    template: str = DEFAULT_PROMPT_TEMPLATE,
    prefill_think: bool = True,
    max_prompt_length: int | None = None,
    columns: tuple = (None, None, None),
    limit: int | None = None,
    seed: int = 42,
    prompt_format: str = "chat",
):
    """The one prompt pipeline of training and evaluation: load -> standardize -> drop unusable
    rows -> drop prompts over ``max_prompt_length`` tokens -> render each prompt to the exact text
    the model sees (chat template, ``<think>`` prefilled or not).

    Args:
        tokenizer: the model's tokenizer (its chat template renders the prompts).
        dataset_id, split: as ``load_and_process_data``; ``role`` 'train' or 'test' says which
            split it is (a missing test split is carved from train).
        columns: (problem, solution, answer) column overrides.
        limit: keep only the first N rows of the split (before any filtering).
        prompt_format: 'chat' (as trained) or 'raw' (the original's evaluation prompt), see ``render_prompt``.
    Returns:
        ``(rows, dropped)``: rows with ``prompt`` (text), ``solution``, ``answer`` and ``problem_id``
        (the row's index in the split), and the
        count of rows left out by reason (``empty_problem``, ``prompt_too_long``) plus
        ``unusable_gold`` (kept; the accuracy reward skips them).
    """
    splits = (split, None) if role == "train" else (None, split)
    train, test = load_and_process_data(dataset_id, *splits, *columns, template, seed=seed)
    ds = train if role == "train" else test
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    ds = ds.add_column("problem_id", list(range(len(ds))))  # the row of the split, kept through the filters
    ds, dropped = drop_unusable_rows(ds)
    ds, dropped["prompt_too_long"] = filter_by_prompt_length(
        ds, tokenizer, max_prompt_length, prefill_think, prompt_format
    )
    render = lambda ex: {"prompt": render_prompt(tokenizer, ex["prompt"], prefill_think, prompt_format)}  # noqa: E731
    ds = ds.map(render, desc="Rendering prompts")
    return ds, dropped


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
    ds, tokenizer, max_prompt_length: int | None, prefill_think: bool = False, prompt_format: str = "chat"
):
    """``(rows, dropped)``: rows whose chat-templated prompt fits ``max_prompt_length`` tokens, and
    how many were dropped (never truncated).

    TRL 1.x has no ``max_prompt_length``; truncating a math problem would corrupt it, so long
    prompts are dropped, and the count goes into the run's and the evaluation's records.
    """
    if not max_prompt_length:
        return ds, 0
    lengths = [
        len(tokenizer(render_prompt(tokenizer, p, prefill_think, prompt_format), add_special_tokens=False)["input_ids"])
        for p in ds["prompt"]
    ]
    keep = [i for i, n in enumerate(lengths) if n <= max_prompt_length]
    dropped = len(ds) - len(keep)
    if dropped:
        logger.warning(
            "Dropped %d of %d prompts longer than --max_prompt_length %d tokens.", dropped, len(ds), max_prompt_length
        )
    if not keep:
        raise DataError(
            f"All {len(ds)} prompts exceed --max_prompt_length {max_prompt_length} tokens "
            f"(shortest is {min(lengths)}). Raise --max_prompt_length."
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
