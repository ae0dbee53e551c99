"""Result files of eval.py: their names, their claim, the partial records written as scored, and what
--resume keeps (only records of the very same evaluation: settings, rows, weights, precision).

    python -c "from trl_grpo.runs.results import summary_path; print(summary_path('results/x.json'))"

A results file ``X.json`` has ``X.summary.json`` beside it, ``X.partial.jsonl`` while it is being
written (a settings line, then one record per scored problem) and ``.X.json.lock`` while a process
holds it. Used by trl_grpo/evaluation/pipeline.py.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os

from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import claim, finite, no_space_left, read_json, release, safe_name

logger = logging.getLogger(__name__)


def summary_path(output_file: str) -> str:
    stem = output_file[:-5] if output_file.endswith(".json") else output_file
    return f"{stem}.summary.json"


def partial_path(output_file: str) -> str:
    """Records written as they are scored, one JSON line each; renamed away on success."""
    stem = output_file[:-5] if output_file.endswith(".json") else output_file
    return f"{stem}.partial.jsonl"


def lock_path(output_file: str) -> str:
    folder, name = os.path.split(os.path.abspath(output_file))
    return os.path.join(folder, f".{name}.lock")


# Settings eval.py records that older partial files lack, at the value that changes nothing.
NEUTRAL = {"top_p": 1.0, "top_k": 0, "min_p": None, "repetition_penalty": 1.0, "r1_sampling": False}


class PartialResults:
    """Records appended to ``<stem>.partial.jsonl`` as they are scored (a header line holds the
    settings), so an interruption keeps them and ``--resume`` continues where it stopped."""

    def __init__(self, output_file: str, settings: dict, resume: bool):
        self.path, self.settings, self.records = partial_path(output_file), settings, {}
        if resume:
            self._load()
        else:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(json.dumps({"settings": settings}) + "\n")

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        try:
            header = json.loads(lines[0])["settings"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"{self.path} is not a partial result of eval.py (no settings line). Use --overwrite to start over."
            ) from None
        # a setting added since the partial file was written reads as its neutral value then
        then = {**NEUTRAL, **header}
        differ = [f"{k}: {then.get(k)!r} then, {v!r} now" for k, v in self.settings.items() if then.get(k) != v]
        if differ:
            raise UsageError(
                f"--resume would mix results of another evaluation: {'; '.join(differ)} (rows_sha256: the dataset's "
                "rows; weights: the model's files). Use the same flags, data and model, or --overwrite to start over."
            )
        for line in lines[1:]:
            try:
                record = json.loads(line)
            except ValueError:
                break  # a line cut short by the interruption: that problem is generated again
            self.records[record.pop("index")] = record
        logger.info("Resuming: %d problems already scored in %s", len(self.records), self.path)

    def add(self, index: int, record: dict) -> None:
        data = (json.dumps(finite({"index": index, **record}), ensure_ascii=False) + "\n").encode("utf-8")
        then = "free some space, then continue with the same command plus --resume (finished records are kept)"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # unbuffered: nothing left to flush
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                with no_space_left(os.path.dirname(os.path.abspath(self.path)), then):
                    written = 0
                    while written < len(data):
                        written += os.write(fd, data[written:])
            except BaseException:
                os.ftruncate(fd, end)  # no record cut in half: the file ends at the last whole record
                raise
        finally:
            os.close(fd)
        self.records[index] = record  # counted once it is on disk


def plan_output(args, label: str, path: str | None = None) -> str:
    """The results path for this evaluation, claimed for this process. Without --overwrite it
    refuses an existing result, and an interrupted one's partial records unless --resume."""
    if path is None:
        path = args.output_file
    if path is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = os.path.join(
            "results", f"{safe_name(label)}-{safe_name(args.dataset_id)}-{safe_name(args.split)}-{stamp}.json"
        )
    for p in (path, summary_path(path)):
        if os.path.isdir(p):
            raise UsageError(f"--output_file {p} is a folder; give a file path such as results/eval.json.")
    claim(lock_path(path), f"results file {path!r}")  # before the checks below: two evaluations cannot both pass them
    if args.overwrite or args.resume:
        return path
    try:
        if os.path.exists(partial_path(path)):
            raise UsageError(
                f"an interrupted evaluation of {path} left its finished records in {partial_path(path)}. Add --resume "
                "to continue it, or --overwrite to start over."
            )
        for p in (path, summary_path(path)):
            if os.path.exists(p):
                raise UsageError(
                    f"{p} already exists. Pass --overwrite to replace it, or choose another --output_file. Nothing was "
                    "changed."
                )
    except UsageError:
        # A refusal gives the claim back: eval.py's main() called again in this process (a bench, a
        # notebook) must not find the file held by itself.
        release(lock_path(path))
        raise
    return path


def finished_summary(path: str) -> dict | None:
    """The summary of a complete evaluation at ``path`` (what --resume keeps), else None."""
    if os.path.exists(partial_path(path)) or not (os.path.isfile(path) and os.path.isfile(summary_path(path))):
        return None
    summary = read_json(summary_path(path), "evaluation summary")
    return summary if summary.get("complete", True) else None


def rows_digest(rows) -> str:
    """A short hash of the rows an evaluation scores: each one's prompt, gold and problem id."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["problem_id"], row["prompt"], row["solution"], row["answer"]]).encode())
    return digest.hexdigest()[:16]


def load_summary(path: str) -> dict:
    """A summary from a summary JSON, or from the summary beside a results JSON."""
    candidate = path if path.endswith(".summary.json") else summary_path(path)
    if not os.path.isfile(candidate):
        raise UsageError(
            f"--compare {path}: no summary file {candidate}. Pass a results file written by eval.py, or a model."
        )
    return read_json(candidate, "evaluation summary")


def weights_fingerprint(resolved: dict) -> str:
    """What identifies the weights a resolved model runs: the adapter file's SHA-256 (small), and the
    base model's weight files by name, size and modification time (a hub id by its name)."""
    import hashlib

    parts = []
    if resolved.get("adapter"):
        with open(os.path.join(resolved["adapter"], "adapter_model.safetensors"), "rb") as f:
            parts.append("adapter sha256 " + hashlib.file_digest(f, "sha256").hexdigest()[:16])
    base = resolved["base"]
    if os.path.isdir(base):
        files = sorted(f for f in os.listdir(base) if f.endswith((".safetensors", ".bin", ".gguf", ".pt")))
        stats = [
            (f, os.path.getsize(os.path.join(base, f)), int(os.path.getmtime(os.path.join(base, f)))) for f in files
        ]
        parts.append("base " + hashlib.sha256(repr(stats).encode()).hexdigest()[:16])
    else:
        parts.append(f"base {base}")
    return "; ".join(parts)
