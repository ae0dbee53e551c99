"""GRPO after the cold start, one lever at a time, measured on a validation slice of the training rows.

    python bench/levers.py --sft RUN/sft                 # every lever in LEVERS, in order
    python bench/levers.py --sft RUN/sft --only base,lr_3e-5 --resume

The cold start ``RUN/sft`` must have trained on ``builtin:1-4@0.9`` (each level's first 90% of train
rows; ``make learn-levels``' cold start with that dataset and ``--max_steps 0``). Each lever is GRPO
from that adapter (``main.py --model_id RUN/sft``: the cold-start adapter trains on, and with
``--beta`` it is also the KL reference) with ``BASE`` plus the lever's flags, on the same rows; then
greedy accuracy on the last 10% of each level's train rows (``eval.py --dataset_id builtin:L --split
'train[90%:]'``), rows no run trained on. The test problems are never read here: what this picks is
then measured once on them by bench/learning_levels.py. Writes --out/levers.json (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import learning_levels  # bench/learning_levels.py: the in-process main.py and eval.py

TRAIN_ROWS = "builtin:1-4@0.9"  # each level's first 1,800 train rows
VALIDATION = "train[90%:]"  # each level's last 200 train rows: never trained on above
# GRPO as the ``levels`` configuration ran it before this benchmark (bench/README.md, "Cold start").
BASE = ["--dataset_id", TRAIN_ROWS, "--max_completion_length", "96", "--temperature", "0.7"]
BASE += ["--learning_rate", "1e-4", "--max_steps", "40"]
LEVERS = {
    "base": [],
    "dynamic_sampling": ["--dynamic_sampling", "2"],
    "lr_3e-5": ["--learning_rate", "3e-5"],
    "beta_0.04": ["--beta", "0.04"],
    "hard_rows": ["--dataset_id", "builtin:1-2@0.225,3-4@0.9"],
    "clip_higher": ["--epsilon_high", "0.28"],
    "groups_of_8": ["--num_generations", "8"],
    "temperature_1.0": ["--temperature", "1.0"],
    # combinations of the single levers above, chosen from their figures (bench/README.md)
    "hard_rows_lr_3e-5": ["--dataset_id", "builtin:1-2@0.225,3-4@0.9", "--learning_rate", "3e-5"],
    "gentle_dynamic_sampling": [
        "--learning_rate",
        "3e-5",
        "--beta",
        "0.04",
        "--dynamic_sampling",
        "1",
        "--max_steps",
        "30",
    ],
}


def validate(model: str, name: str, out: str, args) -> dict:
    """Greedy accuracy (and format) per level on the validation rows, with the recipe's prompt."""
    levels = {}
    for level in args.levels:
        file = os.path.join(out, f"{name}-level{level}.json")
        flags = ["--model_dir", model, "--dataset_id", f"builtin:{level}", "--split", VALIDATION, "--bf16"]
        flags += ["--max_completion_length", "96", "--limit", str(args.limit), "--output_file", file, "--resume"]
        learning_levels.eval_py(flags)
        with open(file[: -len(".json")] + ".summary.json") as f:
            s = json.load(f)
        levels[level] = {k: s.get(k) for k in ("n", "accuracy", "accuracy_ci95", "format_reward_mean")}
    mean = sum(v["accuracy"] for v in levels.values()) / len(levels)
    return {"levels": levels, "mean_accuracy": round(mean, 4)}


def signal(run_dir: str) -> dict:
    """Telemetry of the run: mean share of groups whose rewards all agree, extra prompts sampled."""
    with open(os.path.join(run_dir, "log_history.json")) as f:
        logs = [e for e in json.load(f) if "frac_reward_zero_std" in e]
    out = {"frac_reward_zero_std": round(sum(e["frac_reward_zero_std"] for e in logs) / max(len(logs), 1), 3)}
    extra = [e["dynamic_sampling/extra_prompts"] for e in logs if "dynamic_sampling/extra_prompts" in e]
    if extra:
        out["extra_prompts_per_step"] = round(sum(extra) / len(extra), 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft", required=True, help="the cold start's adapter folder (RUN/sft), trained on " + TRAIN_ROWS)
    p.add_argument("--out", default=os.path.join("results", "levers"), help="where runs and levers.json go")
    p.add_argument("--only", default=",".join(LEVERS), help="comma-separated levers from LEVERS, in order")
    p.add_argument("--limit", type=int, default=100, help="validation rows per level")
    p.add_argument("--levels", default="1,2,3,4", help="levels to validate on")
    p.add_argument("--resume", action="store_true", help="keep finished levers in --out/levers.json")
    args = p.parse_args()
    os.chdir(ROOT)
    args.levels = args.levels.split(",")
    names = [n.strip() for n in args.only.split(",")]
    if unknown := [n for n in names if n not in LEVERS]:
        p.error(f"--only {','.join(unknown)}: not a lever; choose from {', '.join(LEVERS)}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "levers.json")
    report = {}
    if args.resume and os.path.isfile(path):
        with open(path) as f:
            report = json.load(f)
    report["rows"] = {"train": TRAIN_ROWS, "validation": f"builtin:L {VALIDATION}, first {args.limit}"}
    report.setdefault("sft_only", validate(args.sft, "sft_only", args.out, args))
    for name in names:
        if name in report.get("levers", {}):
            continue
        run_dir = os.path.join(args.out, f"run-{name}")
        flags = ["--model_id", args.sft, *BASE, *LEVERS[name], "--output_dir", run_dir, "--report_to", "none"]
        start = time.time()
        if not os.path.isfile(os.path.join(run_dir, "run_state.json")):
            learning_levels.main_py(flags)
        result = validate(run_dir, name, args.out, args) | signal(run_dir)
        with open(os.path.join(run_dir, "run_state.json")) as f:
            train_wall = sum(a.get("train_wall_s", 0.0) for a in json.load(f)["attempts"])
        result |= {"flags": LEVERS[name], "train_wall_s": round(train_wall, 1), "wall_s": round(time.time() - start, 1)}
        report.setdefault("levers", {})[name] = result
        with open(path, "w") as f:
            json.dump(report, f, indent=1)
        print(f"{name}: mean {result['mean_accuracy']}", {lv: v["accuracy"] for lv, v in result["levels"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
