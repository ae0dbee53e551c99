"""Load any math dataset (or the built-in one, builtin.py) into one schema, with its test rows held out.

    python data_utils.py                       # prints a few built-in problems and split sizes

``dataset_id``: ``builtin[:levels]``, a hub id, a ``save_to_disk`` folder, a folder of data files
laid out like a hub dataset, or one file (files.py). Where a dataset has no test split, the test
rows are carved once by problem text (trl_grpo/data/splits.py). No torch.
"""

from __future__ import annotations

import logging
import os

from trl_grpo.data import builtin, files
from trl_grpo.data.columns import PROBLEM_COLUMNS, _pick, standardize
from trl_grpo.data.prompts import system_prompt
from trl_grpo.data.seen import SeenProblems
from trl_grpo.data.splits import (
    TEST_FRACTION,
    DataError,
    carve,
    check_disjoint,
    held_out_record,
    normalise_problem,
    parse_split,
    slice_range,
)

logger = logging.getLogger(__name__)


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
        return builtin.parse_builtin_spec(dataset_id)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _apply_slice(ds, name: str, slice_: str, expr: str):
    """Rows of ``ds`` selected by a slice such as ``[:5%]``."""
    return ds.select(slice_range(name, slice_, len(ds), expr)) if slice_ else ds


def _load_all_splits(dataset_id: str, config: str | None = None):
    """A ``DatasetDict`` of every split a source has (builtin, local path or hub id); ``config``: a hub
    dataset's configuration, or the subfolder of a local folder laid out by configuration."""
    from datasets import Dataset, DatasetDict, load_dataset

    if is_builtin(dataset_id):
        if config:
            raise DataError(
                f"--dataset_config {config!r}: the built-in dataset has no configurations; drop it "
                "(--dataset_config '' unsets a recipe's)."
            )
        shares = parse_builtin_spec(dataset_id)
        records = builtin.builtin_records(list(shares), shares=shares)
        return DatasetDict({k: Dataset.from_list(v) for k, v in records.items()})
    path = os.path.expanduser(dataset_id)
    if os.path.exists(path):
        return files.load_local(path, config)
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


def load_splits(
    dataset_id: str,
    train_split: str | None,
    test_split: str | None,
    columns: tuple = (None, None, None),
    *,
    prompt_template: str = "original",  # as standardize; the tool's default is a flag's (settings/flags.py)
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
            "(trl_grpo/data/splits.py); training never sees them.",
            dataset_id,
            len(available["test"]),
            len(available["test"]) + len(available["train"]),
        )
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
) -> SeenProblems:
    """The problems of a run's training rows (its test split held out), for leaving out the test
    problems seen in training (seen.py: as written or in disguise)."""
    train, _, _ = load_splits(dataset_id, train_split, test_split, columns, roles=("train",), config=config)
    return SeenProblems.of(train["problem"])
