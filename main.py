"""Train a model to reason about math with GRPO + LoRA.

    python main.py                                   # embedded SmolLM2-135M on the built-in data, CPU ok
    python main.py --config recipes/cpu_quick.yaml   # a recipe file; flags given here win over it
    python main.py --model_id Qwen/Qwen2.5-0.5B-Instruct --dataset_id AI-MO/NuminaMath-TIR \\
        --train_split "train[:5%]" --prompt_template original --max_completion_length 1024
    accelerate launch --config_file configs/ddp.yaml main.py ...   # several GPUs
    torchrun --nproc_per_node 2 main.py ...                        # two CPU processes (gloo)

The flags: trl_grpo/settings/flags.py (docs/flags.md); how they are read and checked:
trl_grpo/settings/resolve.py; the run: train.py.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from trl_grpo.runs.cli import user_errors
    from trl_grpo.settings import resolve

    with user_errors():
        args, startup = resolve.parse("train", argv)
        import train

        return train.train(args, startup)


if __name__ == "__main__":
    from trl_grpo.runs.cli import cli

    sys.exit(cli(main))
