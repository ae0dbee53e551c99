"""Proof that training teaches: held-out accuracy and format before vs after the default recipe.

    python bench/learning.py                 # or: make learn   (CPU: about 6 minutes)
    python bench/learning.py --limit 100 -- --max_steps 10 --learning_rate 1e-4   # flags after -- go to main.py
    make learn ARGS="--config recipes/dapo.yaml"     # a recipe: trained with it, evaluated with its prompt

Steps, each through the user's own commands (eval.py and main.py in subprocesses):
  1. evaluate the untrained model with the original project's prompt (the cold start users hit),
  2. evaluate the untrained model with the recipe's prompt (isolates what training adds),
  3. train with main.py's defaults (plus any flags after --),
  4. evaluate the trained adapter (same prompt, same problems, greedy).
Writes results/learning/: the eval results and summaries, the run folder, learning_report.json
and learning.png. An earlier results/learning/ is kept, renamed with its time stamp.
The last printed line is the report as one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trl_grpo.observe import plots
from trl_grpo.settings.flags import DEFAULT_DATASET_ID, DEFAULT_PROMPT_TEMPLATE

# What the report keeps of each evaluation summary.
KEYS = ("n", "accuracy", "accuracy_ci95", "lenient_accuracy", "format_reward_mean", "format_distribution", "dropped")
SETTINGS = ("prompt_template", "prefill_think", "learning_rate", "max_steps", "per_device_train_batch_size")
SETTINGS += ("num_generations", "max_completion_length", "temperature", "lora_r", "lora_alpha", "lora_target_modules")
SETTINGS += ("beta", "loss_type", "seed")
KNOBS = ("scale_rewards", "epsilon", "epsilon_high", "importance_sampling_level", "mask_truncated_completions")
KNOBS += ("steps_per_generation",)


def run(cmd: list[str]) -> float:
    """Run a command from the repo root, streaming its output; returns wall seconds."""
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.time() - start


def evaluate(model: str, out: str, args, extra: list[str]) -> dict:
    cmd = [sys.executable, "eval.py", "--model_dir", model, "--dataset_id", args.dataset_id, "--split", args.split]
    run([*cmd, "--limit", str(args.limit), "--output_file", out, *extra])
    with open(out[: -len(".json")] + ".summary.json") as f:
        return json.load(f)


def build_report(run_dir: str, summaries: dict, train_wall: float, args, train_extra: list[str]) -> dict:
    """The report: each evaluation's key figures, the training's steps, time and settings."""
    with open(os.path.join(run_dir, "run_config.json")) as f:
        run_config = json.load(f)
    with open(os.path.join(run_dir, "run_state.json")) as f:
        run_config.update(json.load(f)["attempts"][-1])  # steps and wall time of the training
    base, trained = summaries["base"], summaries["trained"]
    return {
        **{name: {k: s.get(k) for k in KEYS} for name, s in summaries.items()},
        "train_wall_s": run_config.get("train_wall_s", round(train_wall, 1)),
        "train_process_wall_s": round(train_wall, 1),
        "steps": run_config.get("steps"),
        "accuracy_intervals_overlap": not (trained["accuracy_ci95"][0] > base["accuracy_ci95"][1]),
        "dataset_id": args.dataset_id,
        "split": args.split,
        "settings": {k: run_config["args"][k] for k in SETTINGS},
        "grpo_knobs": {k: run_config["grpo_config"].get(k) for k in KNOBS},
        "recipe": run_config.get("recipe"),
        "train_extra_flags": train_extra,
        "device": run_config.get("device"),
        "date": _dt.date.today().isoformat(),
    }


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this script's flags, main.py's flags): what follows ``--`` goes to main.py."""
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def trained_prompt(train_extra: list[str]) -> str:
    """The prompt template the training will use (a recipe's, or main.py's default)."""
    from trl_grpo.settings import resolve

    args, _ = resolve.parse("train", train_extra)
    return args.prompt_template or DEFAULT_PROMPT_TEMPLATE


def fresh_folder(out: str) -> None:
    """Create ``out``; a non-empty one from an earlier report is renamed with its time, never overwritten."""
    if os.path.isdir(out) and os.listdir(out):
        kept = f"{out}.{_dt.datetime.fromtimestamp(os.path.getmtime(out)).strftime('%Y%m%d-%H%M%S')}"
        os.rename(out, kept)
        print(f"Kept the earlier report folder as {kept}")
    os.makedirs(out, exist_ok=True)


def main() -> int:
    argv, train_extra = split_argv(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        default=os.path.join("results", "learning"),
        help="report folder (an existing one is renamed, never overwritten)",
    )
    p.add_argument(
        "--dataset_id", default=DEFAULT_DATASET_ID, help="dataset to train on and evaluate (its test split is held out)"
    )
    p.add_argument("--split", default="test", help="held-out split expression")
    p.add_argument("--limit", type=int, default=200, help="held-out problems (>= 100 for a meaningful interval)")
    p.add_argument("--config", default=None, help="a recipe file to train with (flags after -- still win)")
    args = p.parse_args(argv)
    if args.config:
        train_extra = ["--config", args.config, *train_extra]

    out = os.path.join(ROOT, args.out)
    fresh_folder(out)
    run_dir = os.path.join(out, "run")

    cold = evaluate("embedded", os.path.join(out, "base_original_prompt.json"), args, ["--prompt_template", "original"])
    template = trained_prompt(train_extra)
    base = evaluate("embedded", os.path.join(out, "base.json"), args, ["--prompt_template", template])
    train_wall = run(
        [sys.executable, "main.py", "--dataset_id", args.dataset_id, "--output_dir", run_dir, *train_extra]
    )
    trained = evaluate(run_dir, os.path.join(out, "trained.json"), args, [])

    with open(os.path.join(run_dir, "log_history.json")) as f:
        history = json.load(f)
    summaries = {"base": base, "trained": trained, "base_original_prompt": cold}
    report = build_report(run_dir, summaries, train_wall, args, train_extra)
    with open(os.path.join(out, "learning_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    title = (
        f"{args.dataset_id}: {report['steps']} GRPO steps, {report['train_wall_s'] / 60:.1f} min on {report['device']}"
    )
    plots.plot_learning(history, base, trained, os.path.join(out, "learning.png"), title)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
