"""Evaluate a model or a trained adapter with the very rewards training used.

    python eval.py --model_dir ckpts/RUN                      # a run folder from main.py
    python eval.py --model_dir embedded --limit 100           # the untrained embedded model
    python eval.py --model_dir ckpts/RUN --compare base       # and its base model, side by side
    python eval.py --model_dir Qwen/Qwen2.5-0.5B-Instruct --dataset_id AI-MO/NuminaMath-TIR \\
        --split "test[:5%]" --max_completion_length 1024
    bash eval.sh                                              # newest run in ckpts/ vs its base

The pipeline and its summary: trl_grpo/evaluation/pipeline.py; the flags: trl_grpo/settings/flags.py
(``python eval.py --help`` lists them).
"""

import sys

from trl_grpo.evaluation.pipeline import main
from trl_grpo.runs.cli import cli

if __name__ == "__main__":
    sys.exit(cli(main))
