#!/usr/bin/env bash
# The original project's launcher for Qwen2.5-0.5B-Instruct: 4 epochs over 5% of NuminaMath-TIR with its
# settings (this project's LoRA defaults): recipes/qwen2.5-0.5b_numina.yaml. Hardware: one GPU with >= 24 GB.
# Expected time: not measured here (no hub or GPU pair was available); about 14,500 prompts x 4
# completions of up to 512 tokens. Needs the hub, or HF_HUB_OFFLINE=1 with the model and the
# dataset in the local cache. Extra flags go to main.py (e.g. --use_vllm, --max_steps 10).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
exec "$PYTHON" main.py --config recipes/qwen2.5-0.5b_numina.yaml --output_dir "ckpts/Qwen2.5-0.5B-GRPO-$(date +%Y%m%d_%H%M%S)" "$@"
