"""What an evaluation takes from the run it scores: the run's recorded settings (eval.py's defaults)
and which rows it may score: the test rows the run held out, without any problem it trained on.

    python eval.py --model_dir ckpts/RUN          # trl_grpo/evaluation/pipeline.py asks this module for both

A run folder's run_config.json (or its parent's, for a ``checkpoint-N`` folder) records its flags
and its held-out test rows (source, count, a hash of their problems: trl_grpo/data/splits.py). An evaluation of
the run recomputes those rows and refuses when the hash differs (the dataset changed since
training); every other test split has the run's training problems left out and counted as
``contaminated``. The run's own --train_split is scored as training rows, and said to be.
"""

from __future__ import annotations

import os
import re

from trl_grpo.data import sources, splits
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import read_json


def run_record(model_dir: str) -> dict:
    """A run folder's run_config.json, or its parent's for a ``checkpoint-N`` folder ({} when there is none)."""
    folder = os.path.normpath(os.path.expanduser(model_dir))
    for candidate in (
        folder,
        os.path.dirname(folder) if re.match(r"^checkpoint-\d+$", os.path.basename(folder)) else None,
    ):
        if candidate and os.path.isfile(os.path.join(candidate, "run_config.json")):
            recorded = read_json(os.path.join(candidate, "run_config.json"), "run record")
            return recorded if isinstance(recorded, dict) else {}
    return {}


def run_settings(model_dir: str) -> dict:
    """The training flags recorded in a run folder (``run_record``), {} when there is none."""
    return run_record(model_dir).get("args", {})


def split_context(args) -> dict:
    """How the evaluated rows relate to the run's training (the same for a ``--compare`` model):
    ``role`` and ``held_out`` for ``data_utils.prompt_rows`` (the run's own --train_split: its training
    rows, test rows held out, said not to be a held-out measure), ``exclude`` (the run's training
    problems: test problems among them are left out and counted as contaminated), ``recorded``
    (the run's held-out record) and ``against`` (what was checked)."""
    record = run_record(args.model_dir)
    trained = record.get("args", {})
    if not trained.get("dataset_id"):
        return {"role": "eval", "held_out": None, "exclude": None, "recorded": None, "against": None}
    columns = tuple(trained.get(k) for k in ("problem_column", "solution_column", "answer_column"))
    same_data = (trained["dataset_id"], trained.get("dataset_config")) == (args.dataset_id, args.dataset_config)
    if same_data and args.split == trained.get("train_split", "train"):  # its own training rows: say so
        return {
            "role": "train",
            "held_out": trained.get("test_split", "test"),
            "exclude": None,
            "recorded": None,
            "against": "none: these are the run's own training rows (not a held-out measure)",
        }
    exclude = sources.training_problems(
        trained["dataset_id"],
        trained.get("train_split", "train"),
        trained.get("test_split", "test"),
        columns,
        trained.get("dataset_config"),
    )
    return {
        "role": "eval",
        "held_out": None,
        "exclude": exclude,
        "recorded": record.get("held_out") if same_data else None,
        "against": f"the training rows of the run ({len(exclude)} distinct problems of {trained['dataset_id']} "
        f"{trained.get('train_split', 'train')})",
    }


def check_held_out(recorded: dict | None, now: dict | None, split: str) -> None:
    """Refuse an evaluation of a run's test split whose rows are not those the run held out."""
    if not recorded or not now or recorded.get("split") is None:
        return
    same_split = splits.parse_split(recorded["split"])[0] == splits.parse_split(split)[0]
    carved = recorded.get("source") == "carved from train"
    if not same_split or not (carved or recorded["split"] == split) or "problems_sha256" not in recorded:
        return
    if now.get("source") != recorded["source"] or now.get("problems_sha256") != recorded["problems_sha256"]:
        raise UsageError(
            f"the test rows of {split!r} are not those the run held out ({recorded['source']}, {recorded['rows']} "
            f"rows, problems hash {recorded['problems_sha256']} then; {now.get('source')}, {now.get('rows')} rows, "
            f"hash {now.get('problems_sha256')} now): the dataset changed since training, so this evaluation could "
            "score training problems. Evaluate with the data the run trained on."
        )
