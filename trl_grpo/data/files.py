"""Reading a local dataset: a folder written by ``save_to_disk``, a folder of data files laid out
like a hub dataset, or one file; every failure names the file (and line) and the fix.

    python data_utils.py --dataset_id PATH     # shows how a local dataset is read and mapped

Data is read as written: a JSON file holding columns rather than rows (pandas' default
``to_json()``, or ``{"problem": [...], "answer": [...]}``) is read as its rows when it is a
single file and refused by name inside a folder, where datasets would read it as one row; a
cell's number is written exactly and a list is the parts of one answer (``cell_text``). Used by
data_utils.py; a leaf with no torch import.
"""

from __future__ import annotations

import json
import os

from trl_grpo.data.splits import DataError

DATA_EXTS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}


def load_local(path: str, config: str | None = None):
    """A ``DatasetDict`` of every split of the local dataset at ``path`` (a folder or a file). A folder laid
    out by configuration (a hub snapshot such as openai/gsm8k: ``main/``, ``socratic/``) is read from the
    subfolder ``config`` names (one with several and none named is refused, naming them)."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if os.path.isdir(path):
        path = _config_folder(path, config)
        if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
            loaded = load_from_disk(path)
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
        files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if os.path.splitext(f)[1] in DATA_EXTS]
        if not files:
            raise DataError(
                f"Dataset folder {path!r} holds no dataset: expected a folder written by Dataset.save_to_disk, "
                f"or data files ({', '.join(sorted(DATA_EXTS))}) named by split, e.g. data/train-00000.parquet."
            )
        for f in files:
            if columnar_rows(f) is not None:
                raise DataError(
                    f"Dataset file {f!r} holds columns, not rows (pandas' default to_json): in a folder it would be "
                    "read as one row. Write it as rows, e.g. df.to_json(path, orient='records', lines=True), or pass "
                    "the file itself as --dataset_id."
                )
        return _loaded(lambda: load_dataset(path), files, path)
    if config:
        raise DataError(f"--dataset_config {config!r}: {path!r} is one file, which has no configurations; drop it.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in DATA_EXTS:
        raise DataError(f"Unsupported dataset file {path!r}. Expected one of {sorted(DATA_EXTS)}.")
    rows = columnar_rows(path)
    if rows is not None:
        return DatasetDict({"train": Dataset.from_list(rows)})
    return _loaded(lambda: load_dataset(DATA_EXTS[ext], data_files={"train": path}), [path], path)


def _config_folder(path: str, config: str | None) -> str:
    """The folder to read: ``path/config`` when a configuration is named, the only configuration subfolder
    of a folder laid out by configuration, else ``path``; ``DataError`` naming the configurations."""

    def holds_data(folder: str) -> bool:
        return any(os.path.splitext(f)[1] in DATA_EXTS for _, _, fs in os.walk(folder) for f in fs)

    top_files = [f for f in os.listdir(path) if os.path.splitext(f)[1] in DATA_EXTS]
    named = sorted(
        d
        for d in os.listdir(path)
        if os.path.isdir(os.path.join(path, d))
        and d not in ("data", ".cache")
        and not d.startswith(".")
        and holds_data(os.path.join(path, d))
    )
    if config:
        if config not in named:
            raise DataError(
                f"--dataset_config {config!r}: {path!r} has no such configuration folder; it has {named or 'none'}."
            )
        return os.path.join(path, config)
    splits = ("train", "test", "validation")  # a folder per split is one configuration, not several
    several = not top_files and len(named) > 1 and not any(d in splits for d in named)
    if several and not os.path.isdir(os.path.join(path, "data")):
        raise DataError(
            f"Dataset folder {path!r} holds several configurations ({', '.join(named)}); name one with "
            "--dataset_config."
        )
    return path


def columnar_rows(path: str) -> list[dict] | None:
    """The rows of a ``.json`` file that holds columns (``{"problem": {"0": ...}, ...}`` as pandas writes
    by default, or ``{"problem": [...], ...}``), else None (rows, or not such a file).

    >>> import tempfile; f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    >>> _ = f.write('{"problem": {"0": "1+1?", "1": "2+2?"}, "answer": {"0": 2, "1": 4}}'); f.close()
    >>> columnar_rows(f.name)
    [{'problem': '1+1?', 'answer': 2}, {'problem': '2+2?', 'answer': 4}]
    """
    if not path.lower().endswith(".json") or os.path.getsize(path) == 0:
        return None
    with open(path, "rb") as f:
        if f.read(64).lstrip()[:1] != b"{":
            return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError):
        return None  # _diagnose names the problem when datasets fails on it
    if not isinstance(data, dict) or not data:
        return None
    columns = list(data.values())
    if all(isinstance(c, list) for c in columns) and len({len(c) for c in columns}) == 1:
        return [dict(zip(data, values, strict=True)) for values in zip(*columns, strict=True)]
    if all(isinstance(c, dict) for c in columns) and len({tuple(c) for c in columns}) == 1 and columns[0]:
        return [{name: data[name][key] for name in data} for key in columns[0]]
    return None


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


def cell_text(value) -> str:
    """A solution or answer cell as written: a number exactly (``1e-05`` -> ``0.00001``, ``1e20`` ->
    ``100000000000000000000``, ``2.0`` -> ``2``), a list as the parts of one answer (``[-1, 1]`` ->
    ``-1, 1``, like several boxes; a list inside it is a tuple), None as "".

    >>> cell_text(1e-05), cell_text(1e20), cell_text([-1, 1]), cell_text([[1, 2], 3]), cell_text("x")
    ('0.00001', '100000000000000000000', '-1, 1', '(1, 2), 3', 'x')
    """
    import numbers
    from decimal import Decimal, InvalidOperation

    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(f"({cell_text(v)})" if isinstance(v, (list, tuple)) else cell_text(v) for v in value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        try:
            return format(Decimal(str(value)).normalize(), "f")
        except (InvalidOperation, ValueError):
            return str(value)  # nan, inf: written as they are
    return str(value)
