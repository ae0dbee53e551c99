"""The one place settings become TRL's ``GRPOConfig`` and PEFT's ``LoraConfig``.

    python main.py [flags]          # train.py builds its trainer from build_configs(...)

Every flag maps to the field of the same name (``--warmup_ratio`` to ``warmup_steps``, which
transformers 5 reads as a ratio below 1); the ``trainer:`` mapping (``--trainer KEY=VALUE``) sets
any other GRPOConfig field. trl_grpo/settings/checks.py builds the same configs once before anything loads, so a
value TRL refuses stops the run at once. TRL and PEFT are imported inside, on use.
"""

from __future__ import annotations

import math

from trl_grpo.settings import flags

# Flags passed to GRPOConfig under their own name, unchanged: each says so where it is defined
# (``to_trl=True`` in settings/flags.py). The other flags named like a field are set by build_configs.
SAME_NAME = tuple(f.name for f in flags.FLAGS if f.to_trl)
SET_HERE = (  # set by build_configs, or applied where this project loads the model and renders prompts
    "output_dir",
    "bf16",
    "reward_weights",
    "eval_steps",
    "report_to",
    "trust_remote_code",
    "resume_from_checkpoint",
    "model_init_kwargs",
    "chat_template_kwargs",
)


def reward_weights(args) -> list[float] | None:
    """``--reward_weights`` as numbers (None: TRL's default, all 1.0); ``ValueError`` if not numbers."""
    return [float(w) for w in args.reward_weights.split(",")] if args.reward_weights else None


def build_configs(args, output_dir: str, use_bf16: bool, use_cpu: bool):
    """``GRPOConfig`` and ``LoraConfig`` (None for full fine-tuning) from the settings; every flag maps to a
    field of the same name, and ``args.trainer`` (GRPOConfig fields set by name) last."""
    from trl import GRPOConfig

    from trl_grpo.settings import adapting

    fields = {name: getattr(args, name) for name in SAME_NAME}
    fields.update(
        output_dir=output_dir,
        per_device_eval_batch_size=args.per_device_train_batch_size,
        warmup_steps=args.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        data_seed=args.seed,
        bf16=use_bf16,
        use_cpu=use_cpu,
        reward_weights=reward_weights(args),  # checked by checks.check_train
        report_to=[] if args.report_to == "none" else args.report_to.split(","),
        num_completions_to_print=4 if args.log_completions else None,
    )
    if args.eval_steps:
        fields.update(eval_strategy="steps", eval_steps=args.eval_steps)
    fields.update(getattr(args, "trainer", None) or {})
    grpo = GRPOConfig(**fields)
    return grpo, adapting.lora_config(args)


def build_sft_config(args, sft_dir: str, grpo):
    """``SFTConfig`` of the cold start (``--sft_steps``): its own steps, learning rate and batch size; the
    device, precision, saving, seed and optimizer limits of the GRPO run ``grpo`` that follows it.
    Targets are never truncated (``max_length`` None): --max_completion_length bounds sampling, not
    what is taught; rows too long for the model were left out before (trl_grpo/training/cold_start.py)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=sft_dir,
        max_steps=args.sft_steps,
        learning_rate=args.sft_learning_rate,
        lr_scheduler_type="linear",
        per_device_train_batch_size=args.sft_batch_size,
        gradient_accumulation_steps=1,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        logging_steps=1,
        save_strategy=grpo.save_strategy if grpo.save_strategy != "epoch" else "steps",
        save_steps=args.save_steps,
        save_total_limit=grpo.save_total_limit,
        bf16=grpo.bf16,
        use_cpu=grpo.use_cpu,
        gradient_checkpointing=grpo.gradient_checkpointing,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        max_length=None,
        packing=False,
        completion_only_loss=True,
        dataset_num_proc=None,
    )


def prompts_per_step(args, processes: int) -> int:
    """Prompts in one optimizer step: completions per step over the group size."""
    return args.per_device_train_batch_size * processes * args.gradient_accumulation_steps // args.num_generations


def planned_steps(args, train_rows: int, processes: int) -> int:
    """The GRPO steps a run takes: ``--max_steps`` when > 0, else its epochs over ``train_rows`` prompts."""
    if args.max_steps >= 0:
        return args.max_steps
    return math.ceil(math.ceil(train_rows / max(prompts_per_step(args, processes), 1)) * args.num_train_epochs)
