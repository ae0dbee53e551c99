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

from trl_grpo.answers.registry import reward_sources
from trl_grpo.data import sources, splits
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import read_json

# The folders a run writes inside itself: checkpoints, the cold start's adapter (and its
# checkpoints), the merged model. Any of them is evaluated as the run it belongs to.
_INSIDE_A_RUN = re.compile(r"^(?:checkpoint-\d+|sft|merged)$")


def run_folder(model_dir: str) -> str | None:
    """The run folder ``model_dir`` is or lies in (``RUN``, ``RUN/checkpoint-N``, ``RUN/sft``,
    ``RUN/sft/checkpoint-N``, ``RUN/merged``), or None when it is no part of a run."""
    folder = os.path.normpath(os.path.expanduser(model_dir))
    for _ in range(3):
        if os.path.isfile(os.path.join(folder, "run_config.json")):
            return folder
        if not _INSIDE_A_RUN.match(os.path.basename(folder)):
            return None
        folder = os.path.dirname(folder)
    return None


def run_record(model_dir: str) -> dict:
    """The run_config.json of the run ``model_dir`` is or lies in (``run_folder``), {} when none."""
    folder = run_folder(model_dir)
    if folder is None:
        return {}
    recorded = read_json(os.path.join(folder, "run_config.json"), "run record")
    return recorded if isinstance(recorded, dict) else {}


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


def changed_reward_files(args) -> list[dict]:
    """The reward files of the evaluated run that changed since training (their SHA-256 differs from the
    one run_config.json recorded). Refused with ``UsageError`` unless ``--allow_changed_rewards``: a
    run scored by other rules than it trained with would report numbers that are not its own."""
    recorded = {r["spec"]: r for r in run_record(args.model_dir).get("rewards") or [] if r.get("sha256")}
    changed = []
    for now in reward_sources(args.reward_funcs):
        then = recorded.get(now["spec"])
        if then and now.get("sha256") != then["sha256"]:
            changed.append({"file": then.get("file", now["spec"]), "then": then["sha256"], "now": now.get("sha256")})
    if changed and not args.allow_changed_rewards:
        first = changed[0]
        raise UsageError(
            f"reward file {first['file']} changed since the run trained (SHA-256 {first['then']} then, "
            f"{first['now'] or 'missing'} now): scoring with it would not measure the run by its own rules. "
            "Restore the file, or pass --allow_changed_rewards to score anyway (the summary records it)."
        )
    return changed
