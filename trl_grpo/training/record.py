"""What run_config.json records of a run: its flags and recipe, where the model came from and how it
runs, the rows it trains on and holds out, its size, and the library versions.

    python -c "from trl_grpo.training.record import versions; print(versions())"
"""

from __future__ import annotations

import sys

from trl_grpo.answers import registry
from trl_grpo.models import start


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "math-verify"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def run_config(args, startup, output_dir, resume_ckpt, hw, state, trainer, data) -> dict:
    """What run_config.json records of a run: its flags and recipe, where the model came from and
    how it runs, the rows it trains on and holds out, its size and the library versions."""
    trainable, total = start.trainable_counts(trainer.model)
    sft_ds = data["sft"]
    return {
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "recipe": startup.recipe if startup else None,
        "rewards": registry.reward_sources(args.reward_funcs),
        "output_dir": output_dir,
        "resumed_from": resume_ckpt,
        "model_source": hw["resolved"]["source"],
        "model_path": hw["resolved"]["base"],
        "device": hw["device"],
        "dtype": str(hw["dtype"]),
        "attn_implementation": hw["attention"] or "model default",
        "fast_paths": {"setting": args.fast_paths, "enabled": hw["fast"]},
        "bf16": hw["use_bf16"],
        "num_processes": state.num_processes,
        "train_rows": len(data["train"]),
        "eval_rows": len(data["eval"]) if data["eval"] is not None else 0,
        "dropped": data["dropped"],
        "held_out": data["held_out"],
        "trainable_params": trainable,
        "all_params": total,
        "sft": {"steps": args.sft_steps, "rows": len(sft_ds), "left_out": data["sft_left_out"]} if sft_ds else None,
        "versions": versions(),
    }
