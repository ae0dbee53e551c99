"""LoRA, DoRA, rsLoRA and full fine-tuning side by side: held-out accuracy, training time and peak memory.

    python bench/adapting.py                          # all configurations (CPU, 2 cores: about 35 minutes)
    python bench/adapting.py --only lora,full_1e-5    # some of them
    python bench/adapting.py --limit 100 -- --max_steps 10   # flags after -- go to every training

Every configuration trains the CPU recipe (recipes/cpu_quick.yaml: level 1, same steps, seed and
data) through main.py, then eval.py scores it greedily on the same held-out problems; the untrained
model is scored once beside them. Peak memory is the training process's own maximum resident set
(``ru_maxrss``). One job at a time: two torch jobs on one machine slow each other. Writes
results/adapting/ (runs and evaluations; an earlier folder is renamed, never overwritten) and
bench/adapting.json (the figures bench/README.md quotes); the last printed line is that JSON.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from learning import fresh_folder, split_argv

RECIPE = os.path.join("recipes", "cpu_quick.yaml")
# name -> the flags that make it (the recipe's learning rate, 2e-4, unless said otherwise)
CONFIGS = {
    "lora": [],
    "dora": ["--use_dora"],
    "rslora": ["--use_rslora"],
    "full_1e-5": ["--no-use_peft", "--learning_rate", "1e-5"],
    "full_2e-4": ["--no-use_peft"],
}
KEYS = ("n", "accuracy", "accuracy_ci95", "format_reward_mean")
# Runs main.py in this process and writes its peak resident set (KiB on Linux) where PEAK_FILE says.
_PEAK = (
    "import os, resource, runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    "    open(os.environ['PEAK_FILE'], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def train(name: str, flags: list[str], out: str, extra: list[str]) -> dict:
    run_dir = os.path.join(out, name)
    peak_file = os.path.join(out, f"{name}.peak")
    cmd = [sys.executable, "-c", _PEAK, "main.py", "--config", RECIPE, *flags, "--output_dir", run_dir, *extra]
    print("+", " ".join(cmd[3:]), flush=True)
    start = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PEAK_FILE": peak_file})
    wall = time.time() - start
    with open(os.path.join(run_dir, "run_state.json")) as f:
        attempt = json.load(f)["attempts"][-1]
    with open(os.path.join(run_dir, "run_config.json")) as f:
        record = json.load(f)
    with open(peak_file) as f:
        peak_kib = int(f.read())
    return {
        "flags": flags,
        "steps": attempt["steps"],
        "train_wall_s": attempt["train_wall_s"],
        "process_wall_s": round(wall, 1),
        "peak_rss_gb": round(peak_kib / 1024**2, 2),
        "trainable_params": record["trainable_params"],
        "run": os.path.relpath(run_dir, ROOT),
    }


def evaluate(model: str, out_file: str, limit: int) -> dict:
    cmd = [sys.executable, "eval.py", "--model_dir", model, "--dataset_id", "builtin:1", "--split", "test"]
    cmd += ["--limit", str(limit), "--output_file", out_file]
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(out_file[: -len(".json")] + ".summary.json") as f:
        summary = json.load(f)
    return {k: summary.get(k) for k in KEYS}


def main() -> int:
    argv, extra = split_argv(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("results", "adapting"), help="runs and evaluations (kept, renamed)")
    p.add_argument("--only", default=",".join(CONFIGS), help=f"comma-separated configurations of {list(CONFIGS)}")
    p.add_argument("--limit", type=int, default=200, help="held-out problems scored per model")
    p.add_argument("--json", default=os.path.join("bench", "adapting.json"), help="where the figures go")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"--only {','.join(unknown)}: expected some of {', '.join(CONFIGS)}")
    out = os.path.join(ROOT, args.out)
    fresh_folder(out)
    report = {
        "date": _dt.date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "recipe": RECIPE,
        "extra_flags": extra,
        "held_out": f"builtin:1 test, first {args.limit}, greedy",
        "untrained": evaluate("embedded", os.path.join(out, "untrained.json"), args.limit),
        "configs": {},
    }
    for name in names:
        result = train(name, CONFIGS[name], out, extra)
        result["eval"] = evaluate(os.path.join(out, name), os.path.join(out, f"{name}.json"), args.limit)
        report["configs"][name] = result
        with open(os.path.join(ROOT, args.json), "w") as f:  # after each, so a stopped bench keeps what it measured
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
