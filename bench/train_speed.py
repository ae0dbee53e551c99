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

Each runs in its own subprocess so its peak memory (max RSS) is its own. Reported: median
seconds per step, completions/s, generated tokens/s, peak MB, mean completion length (the
work each step actually did). The last line is one JSON object.
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


def worker(name: str, steps: int) -> None:
    """Run one configuration and print its measurements as JSON (in a fresh process)."""
    import logging

    from transformers import TrainerCallback

    import flags
    import train

    logging.disable(logging.WARNING)
    args = flags.build_parser("train").parse_args([*CONFIGS[name], *WORK, "--max_steps", str(steps + 1)])
    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.start)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    with tempfile.TemporaryDirectory() as out:  # the baseline's --fast_paths off: TRL's and transformers' own paths
        trainer, _, _ = train.build_trainer(args, out)
        trainer.add_callback(Timer())
        trainer.train()
    timed, timed_lengths = times[1:], lengths[1:]  # step 1 is the warm-up
    print(
        json.dumps(
            {
                "step_s": timed,
                "mean_length": statistics.mean(timed_lengths),
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "completions_per_step": args.per_device_train_batch_size,
            }
        )
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="timed GRPO steps per configuration (after 1 warm-up)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._worker:
        worker(args._worker, args.steps)
        return 0
    results = {}
    for name in ("baseline", "ours"):
        done = subprocess.run(
            [sys.executable, __file__, "--_worker", name, "--steps", str(args.steps)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    for name, r in results.items():
        step = statistics.median(r["step_s"])
        r.update(
            step_median_s=step,
            per_s=r["completions_per_step"] / step,
            tokens_per_s=r["completions_per_step"] * r["mean_length"] / step,
        )
        print(
            f"{name:8s}: {step:6.1f} s/step  {r['per_s']:.3f} completions/s  {r['tokens_per_s']:6.1f} tokens/s  peak "
            f"{r['peak_mb']:.0f} MB  mean completion {r['mean_length']:.1f} tokens  "
            f"({' '.join(CONFIGS[name]) or 'main.py defaults'})"
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
                "baseline_peak_mb": round(b["peak_mb"]),
                "ours_peak_mb": round(o["peak_mb"]),
                "baseline_step_s": [round(x, 2) for x in b["step_s"]],
                "ours_step_s": [round(x, 2) for x in o["step_s"]],
                "baseline_mean_length": round(b["mean_length"], 1),
                "ours_mean_length": round(o["mean_length"], 1),
                "steps": args.steps,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
