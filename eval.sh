#!/usr/bin/env bash
# Evaluate a trained run against its base model on the default dataset's test split.
#
#   bash eval.sh                          # newest run folder in ckpts/ vs its base model
#   MODEL_DIR=ckpts/RUN LIMIT=50 bash eval.sh
#   CUDA_VISIBLE_DEVICES=1 BATCH_SIZE=128 bash eval.sh
#
# Environment (each optional): MODEL_DIR (default: the newest run in $CKPTS holding an adapter),
# CKPTS (default: the repo's ckpts/), COMPARE ('base' by default, a results .json, another model,
# or 'none'), DATASET_ID, SPLIT, LIMIT, BATCH_SIZE, MAX_COMPLETION_LENGTH, NUM_SAMPLES,
# TEMPERATURE, SEED, BASE_MODEL, OUTPUT_FILE, DEVICE, FAST_PATHS, PYTHON (default: the repo's
# .venv). Only what is set is passed on: everything else takes eval.py's defaults, which
# follow the run's own training settings. Relative paths are read from where you run this.
# Extra arguments go to eval.py, relative paths in them read from where you run this.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

# A relative path the caller gave, made absolute against the caller's folder (hub ids stay).
abs_if_local() { if [ -n "$1" ] && [ "${1#/}" = "$1" ] && [ -e "$1" ]; then echo "$PWD/$1"; else echo "$1"; fi; }

PYTHON=${PYTHON:-$HERE/.venv/bin/python}
if ! [ -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null; then
  echo "eval.sh: no Python environment at $PYTHON. Run 'make setup' in $HERE first (or set PYTHON)." >&2
  exit 2
fi
CKPTS=$(abs_if_local "${CKPTS:-$HERE/ckpts}")
if [ -z "${MODEL_DIR:-}" ]; then
  # newest folder in ckpts/ that holds a finished adapter
  MODEL_DIR=$(ls -1dt "$CKPTS"/*/ 2>/dev/null | while read -r d; do
    [ -f "$d/adapter_config.json" ] && { echo "${d%/}"; break; }; done || true)
  if [ -z "$MODEL_DIR" ]; then
    echo "eval.sh: no trained run in $CKPTS/ (a folder with adapter_config.json). Run 'make train' first, or set MODEL_DIR." >&2
    exit 2
  fi
fi
MODEL_DIR=$(abs_if_local "$MODEL_DIR")
COMPARE=${COMPARE:-base}

args=(--model_dir "$MODEL_DIR")
[ "$COMPARE" != "none" ] && args+=(--compare "$(abs_if_local "$COMPARE")")
[ -n "${DATASET_ID:-}" ] && args+=(--dataset_id "$(abs_if_local "$DATASET_ID")")
[ -n "${BASE_MODEL:-}" ] && args+=(--base_model "$(abs_if_local "$BASE_MODEL")")
if [ -n "${OUTPUT_FILE:-}" ]; then
  [ "${OUTPUT_FILE#/}" = "$OUTPUT_FILE" ] && OUTPUT_FILE="$PWD/$OUTPUT_FILE"
  args+=(--output_file "$OUTPUT_FILE")
fi
for pair in SPLIT:split LIMIT:limit BATCH_SIZE:batch_size MAX_COMPLETION_LENGTH:max_completion_length \
            NUM_SAMPLES:num_samples TEMPERATURE:temperature SEED:seed DEVICE:device FAST_PATHS:fast_paths; do
  var=${pair%%:*}
  [ -n "${!var:-}" ] && args+=("--${pair#*:}" "${!var}")
done

# Extra arguments: relative paths in them are the caller's too (an --output_file need not exist yet).
abs_path() { if [ "${1#/}" = "$1" ]; then echo "$PWD/$1"; else echo "$1"; fi; }
prev=""
for a in "$@"; do
  case "$a" in
    --output_file=*) args+=("--output_file=$(abs_path "${a#*=}")") ;;
    --*=*) args+=("${a%%=*}=$(abs_if_local "${a#*=}")") ;;
    --*) args+=("$a") ;;
    *) if [ "$prev" = "--output_file" ]; then args+=("$(abs_path "$a")"); else args+=("$(abs_if_local "$a")"); fi ;;
  esac
  prev=$a
done

echo "eval.sh: evaluating $MODEL_DIR (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset})"
cd "$HERE"
exec "$PYTHON" eval.py "${args[@]}"
