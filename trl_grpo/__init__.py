"""trl_grpo: GRPO + LoRA on TRL's GRPOTrainer for small models learning math, and measuring what they learned.

The user's commands sit at the repository root (main.py, eval.py, report.py, reward.py,
data_utils.py); this package is what they run, one folder per concern:

    settings/    flags, recipe files, checks, the TRL configs they become
    data/        loading any dataset, its columns, splits, prompts, the built-in levels, SFT targets
    answers/     the output contract, answer values, boxes, bounded equivalence, rewards and registry
    models/      finding, loading and sampling models; device and precision
    runs/        run folders, claims, resume, result files, command-line plumbing
    observe/     preflight, telemetry, metrics, plots, the HTML report
    fast/        speed paths (``--fast_paths``), each tested against the stock path it replaces
    training/    the cold start before GRPO
    evaluation/  the evaluation pipeline behind eval.py

Imports point one way: training and evaluation above settings, settings above observe, runs,
fast, models and data, and those above answers, whose contract sits at the bottom.
"""
