"""GRPO step speed and memory: the original project's training configuration vs our defaults.

    python bench/train_speed.py                # or: make bench
    python bench/train_speed.py --steps 4

Both run N timed GRPO steps (after one warm-up step) of the embedded SmolLM2-135M-Instruct on
the built-in data, at equal work: the same prompts per step (16 completions = 4 prompts x 4),
group size, max completion length, prompt template and seed. Only the engineering differs:

  baseline  the original's configuration: LoRA r=8 on q_proj,v_proj, TRL's defaults including
            gradient checkpointing, TRL's own generation and log-prob paths, transformers'
            default attention; bf16 autocast like ours (TRL's bf16 default runs as CPU autocast).
  ours      main.py's defaults (LoRA on all linear layers, no gradient checkpointing, bf16
            autocast on CPUs with native bf16, attention in fp32, sampling from merged bf16
            weights with the shared system prompt prefilled once, log-probs on the shared prefix).

Each runs in its own subprocess so its peak memory (max RSS) is its own. One whole generation
round warms up; the timed steps end where a round ends, and the ratio is total wall time over
them (a median would flatter ``--steps_per_generation`` > 1, whose later steps skip sampling).
Reported: seconds per step, completions/s, generated tokens/s, peak MB, mean completion length
(the work each step actually did), and each phase (generation, loss forward, backward) against
this machine's limit (bench/roofline.py: the fastest matmul the machine offers in the run's
precision, copy bandwidth):
``fraction_of_limit`` for the whole step, ``phase_fraction_of_limit`` per phase.

    python bench/train_speed.py -- --steps_per_generation 2   # a lever on 'ours' only

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import roofline  # bench/roofline.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Equal work for both: what one step generates and learns from.
WORK = [
    "--per_device_train_batch_size",
    "16",
    "--num_generations",
    "4",
    "--max_completion_length",
    "48",
    "--seed",
    "0",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
]
CONFIGS = {
    "baseline": [
        "--lora_r",
        "8",
        "--lora_alpha",
        "16",
        "--lora_dropout",
        "0.05",
        "--lora_target_modules",
        "q_proj,v_proj",
        "--gradient_checkpointing",
        "--learning_rate",
        "1e-5",
        "--fast_paths",
        "off",
    ],
    "ours": [],
}


def worker(name: str, steps: int, extra: list[str]) -> None:
    """Run one configuration and print its measurements as JSON (in a fresh process): each step's
    wall time, and each phase's seconds and the padded shape it processed."""
    import logging

    from transformers import TrainerCallback

    import train
    from trl_grpo.settings import flags

    logging.disable(logging.WARNING)
    parser = flags.build_parser("train")
    args = parser.parse_args([*CONFIGS[name], *WORK, *extra])
    # Whole generation rounds only: one round warms up, the timed steps end where a round ends (a
    # median of steps would flatter --steps_per_generation > 1, whose later steps skip sampling).
    accumulation = args.gradient_accumulation_steps
    round_steps = max(1, (args.steps_per_generation or accumulation) // accumulation)
    timed_steps = -(-steps // round_steps) * round_steps
    args = parser.parse_args([*CONFIGS[name], *WORK, *extra, "--max_steps", str(round_steps + timed_steps)])
    times, lengths, phases = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            phases.append({})
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.start)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    def timed(phase, fn, shape_of):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            out = fn(*a, **kw)
            seconds = time.perf_counter() - start
            shape = shape_of(a, kw, out)
            record = phases[-1].setdefault(phase, {"s": 0.0, "shape": shape})
            record["s"] += seconds
            return out

        return wrapper

    def batch_of(inputs):
        return [*inputs["prompt_ids"].shape, inputs["completion_ids"].shape[1], *real_work(inputs)]

    with tempfile.TemporaryDirectory() as out:  # the baseline's --fast_paths off: TRL's and transformers' own paths
        trainer, _, _ = train.build_trainer(args, out)
        trainer.add_callback(Timer())
        # Wrapped on the instance: TRL's training_step calls these three, whichever path runs inside.
        trainer._generate_and_score_completions = timed(
            "generation", trainer._generate_and_score_completions, lambda a, kw, out: batch_of(out)
        )
        trainer.compute_loss = timed("loss_forward", trainer.compute_loss, lambda a, kw, out: batch_of(a[1]))
        trainer.accelerator.backward = timed("backward", trainer.accelerator.backward, lambda a, kw, out: None)
        trainer.train()
        config = trainer.model.config.to_dict()
    timed_lengths = lengths[round_steps:] or lengths  # the first round is the warm-up
    print(
        json.dumps(
            {
                "step_s": times[round_steps:],
                "phases": phases[round_steps:],
                "round_steps": round_steps,
                "mean_length": statistics.mean(timed_lengths),
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "completions_per_step": args.per_device_train_batch_size,
                "bf16": bool(trainer.args.bf16),
                "model_config": {k: config.get(k) for k in MODEL_KEYS},
            }
        )
    )


MODEL_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
)


def real_work(inputs) -> list:
    """[prompt positions no path can skip, real prompt tokens, real completion tokens] of a batch
    (roofline.Batch): the prefix shared by all prompts once, then each distinct prompt's own tokens."""
    prompts = []
    for ids, mask in zip(inputs["prompt_ids"].tolist(), inputs["prompt_mask"].tolist(), strict=True):
        prompts.append(tuple(t for t, m in zip(ids, mask, strict=True) if m))
    distinct = sorted(set(prompts))
    shared = 0
    while distinct and all(len(p) > shared for p in distinct) and len({p[shared] for p in distinct}) == 1:
        shared += 1
    positions = shared + sum(len(p) - shared for p in distinct)
    return [positions, sum(map(len, prompts)), int(inputs["completion_mask"].sum())]


def roofline_figures(r: dict, machine: dict) -> dict:
    """The configuration's phases against this machine's limit (bench/roofline.py)."""
    from types import SimpleNamespace

    shape = roofline.Shape.of(SimpleNamespace(**r["model_config"]))
    m = roofline.Machine.for_run(r["bf16"], machine["fp32_flops"], machine["bf16_flops"], machine["bandwidth"])
    limits, measured = [], {p: [] for p in PHASES}
    for step in r["phases"]:
        limit = {}
        for phase in PHASES:
            record = step.get(phase)
            measured[phase].append(record["s"] if record else 0.0)
            if phase == "backward":  # the batch the loss ran on
                record = step.get("loss_forward")
            limit[phase] = roofline.phase_limits_s(shape, roofline.Batch(*record["shape"]), m)[phase] if record else 0.0
        limits.append(limit)
    figures = roofline.fractions(measured, limits, r["step_s"])
    # Means per step, not medians: with --steps_per_generation 2 every other step samples nothing.
    figures["phase_s"] = {p: round(statistics.mean(v), 3) for p, v in measured.items()}
    figures["phase_limit_s"] = {p: round(statistics.mean(x[p] for x in limits), 3) for p in PHASES}
    return figures


PHASES = ("generation", "loss_forward", "backward")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Flags after -- go to main.py for 'ours' only (one lever at a time).",
    )
    p.add_argument("--steps", type=int, default=4, help="timed GRPO steps per configuration (after 1 warm-up round)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    own, extra = (
        (sys.argv[1:], [])
        if "--" not in sys.argv
        else (sys.argv[1 : sys.argv.index("--")], sys.argv[sys.argv.index("--") + 1 :])
    )
    args = p.parse_args(own)
    if args._worker:
        worker(args._worker, args.steps, extra)
        return 0
    import torch

    def probe() -> dict:
        return {
            "fp32_flops": roofline.matmul_flops(),
            "bf16_flops": roofline.matmul_flops(dtype=torch.bfloat16),
            "bandwidth": roofline.copy_bandwidth(),
        }

    # Probed before each configuration and after both: on a shared machine the rates drift by
    # 2x within minutes, and the limit is the best the machine showed (a conservative fraction).
    probes = [probe()]
    results = {}
    for name in ("baseline", "ours"):
        if name != "baseline":
            probes.append(probe())
        cmd = [sys.executable, __file__, "--_worker", name, "--steps", str(args.steps)]
        done = subprocess.run([*cmd, "--", *extra] if name == "ours" else cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    probes.append(probe())
    machine = {key: max(p[key] for p in probes) for key in probes[0]}
    for name, r in results.items():
        wall = sum(r["step_s"])  # whole rounds, all their steps: the ratio's basis
        r.update(
            step_median_s=statistics.median(r["step_s"]),
            per_s=r["completions_per_step"] * len(r["step_s"]) / wall,
            tokens_per_s=r["completions_per_step"] * len(r["step_s"]) * r["mean_length"] / wall,
            **roofline_figures(r, machine),
        )
        print(
            f"{name:8s}: {wall / len(r['step_s']):6.1f} s/step  {r['per_s']:.3f} completions/s  "
            f"{r['tokens_per_s']:6.1f} tokens/s  peak {r['peak_mb']:.0f} MB  "
            f"mean completion {r['mean_length']:.1f} tokens  {r['fraction_of_limit']:.1%} of the limit  "
            f"({' '.join(CONFIGS[name] + (extra if name == 'ours' else [])) or 'main.py defaults'})"
        )
        for phase in PHASES:
            print(
                f"          {phase:12s} {r['phase_s'][phase]:6.2f} s (limit {r['phase_limit_s'][phase]:.3f} s: "
                f"{r['phase_fraction_of_limit'][phase] or 0:.1%})"
            )
    b, o = results["baseline"], results["ours"]
    print(
        json.dumps(
            {
                "baseline_per_s": round(b["per_s"], 4),
                "ours_per_s": round(o["per_s"], 4),
                "ratio": round(o["per_s"] / b["per_s"], 2),
                "baseline_tokens_per_s": round(b["tokens_per_s"], 1),
                "ours_tokens_per_s": round(o["tokens_per_s"], 1),
                "token_ratio": round(o["tokens_per_s"] / b["tokens_per_s"], 2),
                "fraction_of_limit": o["fraction_of_limit"],
                "phase_fraction_of_limit": o["phase_fraction_of_limit"],
                "phase_s": o["phase_s"],
                "phase_limit_s": o["phase_limit_s"],
                "baseline_fraction_of_limit": b["fraction_of_limit"],
                "baseline_phase_fraction_of_limit": b["phase_fraction_of_limit"],
                "baseline_phase_s": b["phase_s"],
                "baseline_peak_mb": round(b["peak_mb"]),
                "ours_peak_mb": round(o["peak_mb"]),
                "baseline_step_s": [round(x, 2) for x in b["step_s"]],
                "ours_step_s": [round(x, 2) for x in o["step_s"]],
                "baseline_mean_length": round(b["mean_length"], 1),
                "ours_mean_length": round(o["mean_length"], 1),
                "steps": len(o["step_s"]),
                "ours_extra_flags": extra,
                "matmul_gflops": {
                    "fp32": round(machine["fp32_flops"] / 1e9, 1),
                    "bf16": round(machine["bf16_flops"] / 1e9, 1),
                },
                "bandwidth_gb_s": round(machine["bandwidth"] / 1e9, 1),
                "probes_g": [{k: round(v / 1e9, 1) for k, v in p.items()} for p in probes],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
