#!/usr/bin/env bash
# The original project's launcher for Qwen2.5-0.5B-Instruct: 4 epochs over 5% of NuminaMath-TIR with its
# settings (this project's LoRA defaults). Hardware: one GPU with >= 24 GB.
# Expected time: not measured here (no hub or GPU pair was available); about 14,500 prompts x 4
# completions of up to 512 tokens. Needs the hub, or HF_HUB_OFFLINE=1 with the model and the
# dataset in the local cache. Extra flags go to main.py (e.g. --use_vllm, --max_steps 10).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" main.py --model_id Qwen/Qwen2.5-0.5B-Instruct --dataset_id AI-MO/NuminaMath-TIR \
    --train_split "train[:5%]" --test_split "test[:5%]" \
    --output_dir "ckpts/Qwen2.5-0.5B-GRPO-$(date +%Y%m%d_%H%M%S)" \
    --num_train_epochs 4 --per_device_train_batch_size 1 --gradient_accumulation_steps 8 \
    --max_completion_length 512 --max_prompt_length 256 --num_generations 4 --warmup_ratio 0.05 \
    --logging_steps 16 --save_steps 16 --save_strategy epoch --learning_rate 1e-5 "$@"
