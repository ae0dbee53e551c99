"""An open-r1-style GRPO recipe (tests/data/open_r1_style_grpo.yaml: the keys open-r1's demo recipes
use) trains here with only what this machine cannot do overridden on the command line; its other
values are in the run's run_config.json."""

import json
import os

import main
from conftest import ROOT

RECIPE = os.path.join(ROOT, "tests", "data", "open_r1_style_grpo.yaml")
# The keys of open-r1's recipes/Qwen2.5-1.5B-Instruct/grpo/config_demo.yaml at its HEAD (1416fa0, 2026-04-02).
# The copy here holds each of them, and the keys its older revisions and other GRPO recipes add.
DEMO_KEYS = [
    "model_name_or_path",
    "model_revision",
    "torch_dtype",
    "attn_implementation",
    "dataset_name",
    "dataset_prompt_column",
    "system_prompt",
    "bf16",
    "use_vllm",
    "do_eval",
    "gradient_accumulation_steps",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "hub_model_id",
    "hub_strategy",
    "learning_rate",
    "log_completions",
    "log_level",
    "logging_first_step",
    "logging_steps",
    "logging_strategy",
    "lr_scheduler_type",
    "max_prompt_length",
    "max_completion_length",
    "max_steps",
    "num_generations",
    "num_train_epochs",
    "output_dir",
    "overwrite_output_dir",
    "per_device_eval_batch_size",
    "per_device_train_batch_size",
    "push_to_hub",
    "report_to",
    "reward_funcs",
    "reward_weights",
    "save_strategy",
    "save_total_limit",
    "seed",
    "warmup_ratio",
]
# What a CPU machine without network cannot do: the hub model and dataset, vLLM, flash attention,
# liger kernels, a hub push; and a run length for a test.
CANNOT = ["--dataset_id", "builtin:1", "--dataset_config", "", "--train_split", "train[:32]", "--use_vllm", "false"]
CANNOT += ["--push_to_hub", "false", "--attn_implementation", "sdpa", "--use_liger_kernel", "false"]
CANNOT += ["--max_steps", "1", "--max_completion_length", "8", "--dtype", "float32", "--no-preflight"]


def test_the_copy_holds_every_key_of_open_r1s_demo_recipe():
    from trl_grpo.settings.yaml_files import read_yaml

    keys = set(read_yaml(RECIPE)[1])
    assert not set(DEMO_KEYS) - keys
    assert {"dataset_configs", "vllm_device", "lr_scheduler_kwargs", "use_liger_kernel", "temperature"} <= keys


def test_an_open_r1_recipe_trains_as_written(tiny_model_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["--config", RECIPE, "--model_id", tiny_model_dir, *CANNOT, "--output_dir", out]
    assert main.main(argv) == 0
    printed = capsys.readouterr().out
    assert "num_processes skipped (the launcher's setting" in printed and "vllm_device skipped" in printed
    with open(os.path.join(out, "run_config.json")) as f:
        config = json.load(f)
    grpo, args = config["grpo_config"], config["args"]
    assert (grpo["learning_rate"], grpo["lr_scheduler_type"], grpo["lr_scheduler_kwargs"]) == (
        2e-5,
        "cosine_with_min_lr",
        {"min_lr_rate": 0.1},
    )
    assert grpo["gradient_checkpointing_kwargs"] == {"use_reentrant": False} and grpo["log_level"] == "info"
    assert (grpo["hub_model_id"], grpo["hub_strategy"], grpo["logging_first_step"]) == (
        "Qwen2.5-1.5B-Open-R1-GRPO",
        "every_save",
        True,
    )
    assert (grpo["per_device_eval_batch_size"], grpo["temperature"], grpo["do_eval"]) == (16, 0.7, False)
    assert args["reward_funcs"] == "accuracy,format,tag_count" and args["reward_weights"] == "1.0,1.0,1.0"
    assert args["report_to"] == "tensorboard" and args["system_prompt"].startswith("You are a helpful")
    assert (args["dataset_config"], args["problem_column"], args["model_revision"]) == (None, "problem", "main")
