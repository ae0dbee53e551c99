"""What each phase buys, level by level: held-out accuracy on each of levels 1-4 before and after
training for the cold start then GRPO (``levels``), the cold start alone (``sft_only``), GRPO alone
(``grpo_only``) and the original project's configuration at equal GRPO steps and completions per step.

    python bench/learning_levels.py           # or: make learn-levels   (2 CPU cores: about 45 minutes)
    python bench/learning_levels.py --steps 20 --limit 50 --skip_original   # a quick look
    python bench/learning_levels.py --resume    # after an interruption: keeps what finished
    python bench/learning_levels.py -- --seed 7 # flags after -- go to main.py for every configuration

Each part through the user's own commands (main.py's and eval.py's main, run in this process):
  1. the untrained model on each level's 200 test problems, greedy, and pass@8 (sampled at the
     training temperature) on the first ``--pass_limit`` of them, with the recipe's prompt (shared
     by the three recipe configurations, which train with the same prompt and lengths);
  2. training with ``COLD_START_RECIPE`` and ``SFT`` (``--sft_steps``, then GRPO); its ``sft/``
     adapter is ``sft_only`` (the same cold start, no GRPO);
  3. training with ``RECIPE`` alone on ``TRAIN_DATA`` (``grpo_only``, GRPO as it was measured before);
  4. each trained adapter, evaluated the same way;
  5. the same with ``ORIGINAL`` (LoRA r=8 on q_proj/v_proj, lr 1e-5, warmup 0.05, the original
     prompt, 64-token completions, groups of 4) at the same GRPO steps and completions per step.
Writes results/learning_levels/ (results, summaries, runs, learning_levels.png, the report) and
prints a table per configuration and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import learning  # bench/learning.py, beside this script: the shared report-folder helpers

LEVELS = ("1", "2", "3", "4")
# What both configurations train on; every level is measured. Levels 3-4 give no accuracy reward
# to learn from, so most steps go to levels 1-2; a quarter of 3-4's rows teaches their format
# (bench/README.md, "Learning beyond addition": runs D, K, L).
TRAIN_DATA = ["--dataset_id", "builtin:1-2,3-4@0.25"]
# The recipe: main.py's defaults plus these, each setting measured (same section). 40 steps fit
# the whole benchmark in ~30 minutes on 2 cores; at 40 steps lr 3e-4 learns more than main.py's
# 2e-4 (runs M, N: the same learning-rate area as 2e-4 over 60 steps, with linear decay).
RECIPE = [*TRAIN_DATA, "--max_completion_length", "96", "--temperature", "0.7", "--learning_rate", "3e-4"]
# The original project's configuration, at this benchmark's steps, data and completions per step.
ORIGINAL = [
    *TRAIN_DATA,
    "--lora_r",
    "8",
    "--lora_alpha",
    "32",
    "--lora_dropout",
    "0.01",
    "--lora_target_modules",
    "q_proj,v_proj",
    "--learning_rate",
    "1e-5",
    "--warmup_ratio",
    "0.05",
    "--prompt_template",
    "original",
    "--max_completion_length",
    "64",
    "--num_generations",
    "4",
]
# The cold start before GRPO: supervised steps on the training rows' worked solutions
# (trl_grpo/training/cold_start.py), then GRPO on all four levels' rows at lr 3e-5: of the levers
# measured on a validation slice of the training rows (bench/levers.py; bench/README.md, "GRPO after
# the cold start"), the one that gave back least of what the cold start taught.
SFT = {"sft_steps": 60, "sft_learning_rate": 5e-4, "sft_batch_size": 8}
COLD_START_RECIPE = ["--dataset_id", "builtin:1-4", "--max_completion_length", "96", "--temperature", "0.7"]
COLD_START_RECIPE += ["--learning_rate", "3e-5"]
KEYS = ("n", "accuracy", "accuracy_ci95", "format_reward_mean", "format_distribution")


def eval_py(argv: list[str]) -> None:
    """``python eval.py ARGV``, run in this process: torch, transformers and the tokenizer load once
    for all 32 evaluations instead of once each (about 9 s a time on 2 cores, bench/README.md)."""
    from trl_grpo.evaluation import pipeline
    from trl_grpo.runs.cli import cli

    print("+ python eval.py", " ".join(argv), flush=True)
    code = cli(lambda: pipeline.main(argv))
    if code:
        raise SystemExit(f"eval.py {' '.join(argv)} exited with {code}; rerun this script with --resume to go on.")


def main_py(argv: list[str]) -> None:
    """``python main.py ARGV``, run in this process like ``eval_py`` (main.py's own two calls, so the
    entry point stays one nothing imports): TRL, torch and transformers load once for the three
    trainings instead of once each (about 11 s a time on 2 cores). A stop (Ctrl-C) saves a
    checkpoint as it would in main.py, and ends this script."""
    import train as train_module
    from trl_grpo.runs.cli import cli
    from trl_grpo.settings import resolve

    print("+ python main.py", " ".join(argv), flush=True)
    code = cli(lambda: train_module.train(*resolve.parse("train", argv)))
    if code:
        raise SystemExit(f"main.py {' '.join(argv)} exited with {code}; rerun this script with --resume to go on.")


def trains_with(flags: list[str]) -> argparse.Namespace:
    """The settings a configuration trains with, as main.py parses its flags."""
    from trl_grpo.settings import flags as flag_table

    return flag_table.build_parser("train").parse_known_args(flags)[0]


def evaluate(model: str, out_dir: str, tag: str, args, settings: argparse.Namespace) -> dict:
    """Per level: greedy accuracy on ``--limit`` problems and pass@k on the first ``--pass_limit``,
    with the prompt and completion length the configuration trains with. pass@k samples at its
    training temperature too: it is then the chance that a GRPO group of k holds a right answer,
    the only thing that group can learn from."""
    levels = {}
    for level in args.levels:
        common = ["--model_dir", model, "--dataset_id", f"builtin:{level}", "--bf16"]
        common += ["--max_completion_length", str(settings.max_completion_length)]
        common += ["--prompt_template", settings.prompt_template]
        greedy = os.path.join(out_dir, f"{tag}-level{level}.json")
        again = ["--resume"] if args.resume else []  # a finished evaluation is kept, an interrupted one continues
        eval_py([*common, "--limit", str(args.limit), "--output_file", greedy, *again])
        sampled = os.path.join(out_dir, f"{tag}-level{level}-pass{args.pass_k}.json")
        pass_args = ["--num_samples", str(args.pass_k), "--temperature", str(settings.temperature)]
        pass_args += ["--limit", str(args.pass_limit)]
        eval_py([*common, *pass_args, "--output_file", sampled, *again])
        summary = _summary(greedy)
        levels[level] = {k: summary.get(k) for k in KEYS} | {
            f"pass_at_{args.pass_k}": _summary(sampled).get(f"pass@{args.pass_k}")
        }
    return levels


def _summary(results_file: str) -> dict:
    with open(results_file[: -len(".json")] + ".summary.json") as f:
        return json.load(f)


def train(name: str, flags: list[str], out_dir: str, args) -> tuple[str, dict, float]:
    """``(run folder, run_state.json, wall s)`` of main.py with ``flags``; with ``--resume`` a finished
    run is kept and an interrupted one continued."""
    run_dir = os.path.join(out_dir, f"run-{name}")
    work = ["--max_steps", str(args.steps), "--output_dir", run_dir, "--report_to", "none"]
    state_file = os.path.join(run_dir, "run_state.json")
    done = False
    if args.resume and os.path.isfile(state_file):
        with open(state_file) as f:
            done = json.load(f).get("complete")
        work += [] if done else ["--resume_from_checkpoint", "last"]
    start = time.time()
    if not done:
        main_py(["--model_id", args.model, *flags, *work])
    wall = time.time() - start
    with open(state_file) as f:
        return run_dir, json.load(f), wall


def result(levels: dict, base: dict, trained: dict, **extra) -> dict:
    return {"levels": {lv: {"base": base[lv], "trained": trained[lv]} for lv in levels}, **extra}


def train_and_evaluate(name: str, flags: list[str], out_dir: str, args, base: dict | None = None) -> dict:
    """One configuration trained and measured; ``base``: the untrained model's measures when another
    configuration with the same prompt and lengths took them already."""
    flags = [*flags, *args.train_extra]
    run_dir, state, _ = train(name, flags, out_dir, args)
    settings = trains_with(flags)
    base = base or evaluate(args.model, out_dir, f"{name}-base", args, settings)
    trained = evaluate(run_dir, out_dir, f"{name}-trained", args, settings)
    sft_wall = (state.get("sft") or {}).get("train_wall_s", 0.0)
    out = result(
        args.levels,
        base,
        trained,
        train_wall_s=round(sum(a.get("train_wall_s", 0.0) for a in state["attempts"]) + sft_wall, 1),
        steps=state.get("steps"),
        sft_steps=settings.sft_steps,
        flags=flags,
        pass_temperature=settings.temperature,
    )
    out["_base"], out["_run"] = base, run_dir
    return out


def sft_only(levels_result: dict, out_dir: str, args) -> dict:
    """The cold start alone: the ``sft/`` adapter the SFT-then-GRPO run saved before its GRPO steps."""
    run_dir = levels_result["_run"]
    settings = trains_with(levels_result["flags"])
    trained = evaluate(os.path.join(run_dir, "sft"), out_dir, "sft_only-trained", args, settings)
    with open(os.path.join(run_dir, "run_state.json")) as f:
        sft_state = json.load(f)["sft"]
    return result(
        args.levels,
        levels_result["_base"],
        trained,
        train_wall_s=sft_state["train_wall_s"],
        steps=0,
        sft_steps=sft_state["steps"],
        flags=levels_result["flags"],
        pass_temperature=settings.temperature,
    )


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def cpu_gflops() -> float:
    """fp32 matmul speed right now, GFLOP/s of 1024^2 products (bench/README.md, "Evaluation", has the
    machine's figure when quiet): a shared machine runs slower at times, and wall times are read
    against this."""
    from roofline import matmul_flops  # bench/roofline.py, beside this script

    return round(matmul_flops(size=1024, repeats=10) / 1e9, 1)


def table(result: dict, title: str) -> None:
    sft = f"{result['sft_steps']} cold-start steps + " if result.get("sft_steps") else ""
    print(f"\n{title}: {sft}{result['steps']} GRPO steps, {result['train_wall_s'] / 60:.1f} min of training")
    print(f"{'level':6} {'base acc [95% CI]':28} {'trained acc [95% CI]':28} {'format b/t':12} pass@k b/t")
    for level, r in result["levels"].items():
        b, t = r["base"], r["trained"]
        ci = lambda s: f"{s['accuracy']:.3f} [{s['accuracy_ci95'][0]:.3f}, {s['accuracy_ci95'][1]:.3f}]"
        pk = next(k for k in b if k.startswith("pass_at_"))
        fmt = f"{b['format_reward_mean']:.2f}/{t['format_reward_mean']:.2f}"
        print(f"{level:6} {ci(b):28} {ci(t):28} {fmt:12} {b[pk]}/{t[pk]}")


LEVEL_NAMES = {
    "1": "addition",
    "2": "subtraction, multiplication",
    "3": "two-step word problems",
    "4": "linear equations",
}


def markdown_table(report: dict) -> str:
    """The README's table of a report: greedy accuracy per configuration (the best bold), then pass@k
    of the untrained model, the cold start alone and the cold start + GRPO: whether GRPO widened or
    narrowed what sampling finds."""
    k = next(key for key in report["levels"]["1"]["base"] if key.startswith("pass_at_")).split("_")[-1]
    head = "| level | untrained | cold start alone | GRPO alone | cold start + GRPO | original config "
    head += f"| pass@{k}: untrained / cold start / + GRPO |"
    lines = [head, "| --- " * 7 + "|"]
    for lv, r in report["levels"].items():
        base, sft, grpo = r["base"], report["sft_only"]["levels"][lv]["trained"], r["trained"]
        alone, original = report["grpo_only"]["levels"][lv]["trained"], report.get("original_config")
        cells = [base["accuracy"], sft["accuracy"], alone["accuracy"], grpo["accuracy"]]
        best = max(cells)
        shown = [f"**{a:.3f}**" if a == best else f"{a:.3f}" for a in cells]
        if original:
            o = original["levels"][lv]
            shown.append(f"{o['base']['accuracy']:.3f} -> {o['trained']['accuracy']:.3f}")
        else:
            shown.append("not measured")
        passes = " / ".join(f"{x[f'pass_at_{k}']:.2f}" for x in (base, sft, grpo))
        lines.append(f"| {lv} {LEVEL_NAMES.get(lv, '')} | {' | '.join(shown)} | {passes} |")
    return "\n".join(lines)


def main() -> int:
    argv, train_extra = learning.split_argv(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default=os.path.join("results", "learning_levels"), help="report folder (renamed if it exists)"
    )
    p.add_argument("--steps", type=int, default=40, help="GRPO steps of every configuration")
    for name, value in SFT.items():
        p.add_argument(f"--{name}", type=type(value), default=value, help=f"the cold start's {name} (main.py's)")
    p.add_argument("--limit", type=int, default=200, help="held-out problems per level (greedy)")
    p.add_argument("--pass_k", type=int, default=8, help="samples per problem for pass@k")
    p.add_argument("--pass_limit", type=int, default=20, help="problems per level for pass@k")
    p.add_argument("--model", default="embedded", help="the model to train and measure (main.py's --model_id)")
    p.add_argument("--levels", default=",".join(LEVELS), help="built-in levels to evaluate, comma-separated")
    p.add_argument("--skip_original", action="store_true", help="leave out the original configuration")
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --out: keep what finished, redo the rest"
    )
    p.add_argument(
        "--table",
        nargs="?",
        const=os.path.join(ROOT, "bench", "learning_levels.json"),
        help="print the README's table of a finished report (default: the committed one) and stop",
    )
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(markdown_table(json.load(f)))
        return 0
    args.train_extra = train_extra
    os.chdir(ROOT)  # relative paths mean the same to main.py (run from here) and eval.py (run in-process)
    args.levels = [lv.strip() for lv in args.levels.split(",")]
    if not args.levels or not set(args.levels) <= set(LEVELS):
        p.error(f"--levels {','.join(args.levels)!r}: expected levels from {','.join(LEVELS)}, e.g. 1,3")
    out = os.path.join(ROOT, args.out)
    if args.resume:
        os.makedirs(out, exist_ok=True)
    else:
        learning.fresh_folder(out)
    start, speed = time.time(), [cpu_gflops()]
    cold = [f"--{k}={getattr(args, k)}" for k in SFT]
    both = train_and_evaluate("levels", [*COLD_START_RECIPE, *cold], out, args)
    table(both, "levels: cold start, then GRPO")
    alone = sft_only(both, out, args)
    table(alone, "sft_only: the same cold start, no GRPO")
    grpo = train_and_evaluate("grpo_only", RECIPE, out, args, base=both["_base"])
    table(grpo, "grpo_only: GRPO alone")
    report = {**public(both), "date": _dt.date.today().isoformat(), "limit": args.limit, "pass_limit": args.pass_limit}
    report |= {"sft_only": public(alone), "grpo_only": public(grpo)}
    if not args.skip_original:
        original = train_and_evaluate("original", ORIGINAL, out, args)
        table(original, "original configuration")
        report["original_config"] = public(original)
    report["mean_trained_accuracy"] = {
        name: round(sum(r["levels"][lv]["trained"]["accuracy"] for lv in args.levels) / len(args.levels), 4)
        for name, r in (("levels", report), ("sft_only", alone), ("grpo_only", grpo))
    }
    report["total_wall_s"] = round(time.time() - start, 1)
    report["cpu_gflops_start_end"] = [*speed, cpu_gflops()]
    from trl_grpo.observe import plots

    plots.plot_levels(report, os.path.join(out, "learning_levels.png"))
    with open(os.path.join(out, "learning_levels.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
