#!/usr/bin/env bash
# Evaluate a trained run against its base model on the default dataset's test split.
#
#   bash eval.sh                          # newest run folder in ckpts/ vs its base model
#   MODEL_DIR=ckpts/RUN LIMIT=50 bash eval.sh
#   CUDA_VISIBLE_DEVICES=1 BATCH_SIZE=128 bash eval.sh
#
# Every setting can be overridden from the environment; unset ones take eval.py's defaults,
# which follow the run's own training settings (prompt template, dataset, lengths).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
CKPTS=${CKPTS:-ckpts}
if [ -z "${MODEL_DIR:-}" ]; then
  # newest folder in ckpts/ that holds a finished adapter
  MODEL_DIR=$(ls -1dt "$CKPTS"/*/ 2>/dev/null | while read -r d; do
    [ -f "$d/adapter_config.json" ] && { echo "${d%/}"; break; }; done || true)
  if [ -z "$MODEL_DIR" ]; then
    echo "eval.sh: no trained run in $CKPTS/ (a folder with adapter_config.json). Run 'make train' first, or set MODEL_DIR." >&2
    exit 2
  fi
fi
COMPARE=${COMPARE:-base}   # 'base', a results .json, another model, or 'none'

args=(--model_dir "$MODEL_DIR" --split "${SPLIT:-test}" --batch_size "${BATCH_SIZE:-64}"
      --num_samples "${NUM_SAMPLES:-1}" --temperature "${TEMPERATURE:-0}" --seed "${SEED:-42}")
[ -n "${DATASET_ID:-}" ] && args+=(--dataset_id "$DATASET_ID")
[ -n "${LIMIT:-}" ] && args+=(--limit "$LIMIT")
[ -n "${MAX_COMPLETION_LENGTH:-}" ] && args+=(--max_completion_length "$MAX_COMPLETION_LENGTH")
[ -n "${BASE_MODEL:-}" ] && args+=(--base_model "$BASE_MODEL")
[ -n "${OUTPUT_FILE:-}" ] && args+=(--output_file "$OUTPUT_FILE")
[ -n "${DEVICE:-}" ] && args+=(--device "$DEVICE")
[ "$COMPARE" != "none" ] && args+=(--compare "$COMPARE")

echo "eval.sh: evaluating $MODEL_DIR (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset})"
exec "$PYTHON" eval.py "${args[@]}" "$@"
