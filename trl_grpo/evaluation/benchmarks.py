"""The benchmarks GRPO papers and open-r1 report, as ``eval.py --benchmark NAME``: each one's hub dataset,
configuration, split, columns, answer form and the completion length it needs (as lighteval's tasks
read them), so a user types a name, not a dataset's layout.

    python eval.py --model_dir ckpts/RUN --benchmark math500 --benchmark gsm8k
    python eval.py --model_dir ckpts/RUN --benchmark aime24=data/aime_2024      # a local copy, offline

``NAME=PATH`` reads a local copy laid out as the hub lays it out (a ``save_to_disk`` folder, or the
parquet/jsonl files); one results file per benchmark, and one table over all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.results import safe_name


@dataclass(frozen=True)
class Benchmark:
    hub_id: str
    config: str | None
    split: str
    problem: str
    solution: str | None
    answer: str | None  # None: the gold is read from the solution (GSM8K's "#### 72")
    answer_form: str
    max_completion_length: int  # what a reasoning model needs; a small model may be given less


PRESETS = {
    "math500": Benchmark("HuggingFaceH4/MATH-500", None, "test", "problem", "solution", "answer", "LaTeX", 4096),
    "gsm8k": Benchmark("openai/gsm8k", "main", "test", "question", "answer", None, "integer", 1024),
    "aime24": Benchmark("HuggingFaceH4/aime_2024", None, "train", "problem", "solution", "answer", "0-999", 32768),
    "aime25": Benchmark("yentinglin/aime_2025", None, "train", "problem", None, "answer", "integer 0-999", 32768),
    "amc23": Benchmark("math-ai/amc23", None, "test", "question", None, "answer", "number", 32768),
}


def parse(spec: str) -> tuple[str, Benchmark, str | None]:
    """``NAME`` or ``NAME=PATH``: the preset, and the local copy to read instead of the hub."""
    name, _, local = spec.partition("=")
    name = name.strip().lower()
    if name not in PRESETS:
        raise UsageError(f"--benchmark {spec!r}: expected one of {', '.join(PRESETS)} (NAME=PATH for a local copy).")
    return name, PRESETS[name], local.strip() or None


def argv_for(spec: str, argv: list[str], given: set[str], many: bool, model: str = "model") -> tuple[str, list[str]]:
    """eval.py's argv for one benchmark: the preset's dataset, split and columns after the user's own flags
    (without --benchmark); the user's --max_completion_length and --split win, the rest is the preset's.
    The results file is ``results/<model>-<benchmark>.json`` (no time stamp: the same command plus
    --resume finds an interrupted one)."""
    name, bench, local = parse(spec)
    clash = sorted({"dataset_id", "dataset_config", "problem_column", "answer_column"} & given)
    if clash:
        raise UsageError(f"--benchmark sets the dataset and its columns; drop --{clash[0]} (NAME=PATH reads a copy).")
    if many and "output_file" in given:
        raise UsageError("--output_file names one file; with several --benchmark each gets its own in results/.")
    kept, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--benchmark":
            skip = True
            continue
        if not word.startswith("--benchmark="):
            kept.append(word)
    preset = ["--dataset_id", local or bench.hub_id, "--problem_column", bench.problem]
    preset += ["--dataset_config", bench.config or ""]
    if bench.answer:
        preset += ["--answer_column", bench.answer]
    if bench.solution and "solution_column" not in given:
        preset += ["--solution_column", bench.solution]
    if "split" not in given:
        preset += ["--split", bench.split]
    if "max_completion_length" not in given:
        preset += ["--max_completion_length", str(bench.max_completion_length)]
    if "output_file" not in given:
        preset += ["--output_file", os.path.join("results", f"{safe_name(model)}-{name}.json")]
    return name, [*kept, *preset]
