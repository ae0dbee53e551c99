"""Every setting checked, alone and against the others, before anything heavy loads.

    python main.py --temperature inf         # error: --temperature inf: must be a positive number ...

``check_train`` (main.py) and ``check_eval`` (eval.py) raise one ``UsageError`` holding one line per
problem, each naming the flag, its value and what would be accepted; ``cli`` prints them as
``error:`` lines and exits 2. Called by resolve.parse, so every entry point checks the same way.
"""

from __future__ import annotations

import math
import os
import re

from trl_grpo.data import prompts, sources, splits
from trl_grpo.models.locate import EMBEDDED_MODEL_ID
from trl_grpo.runs.cli import UsageError
from trl_grpo.settings import adapting, backends, trl_configs
from trl_grpo.settings.trl_configs import reward_weights

# Loss types of TRL 1.x known without importing it; any other value is checked against the installed TRL.
_KNOWN_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo")
# Learning-rate schedules of transformers 5 (SchedulerType), checked against the installed one when not here.
_KNOWN_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def check_train(args) -> None:
    """Check main.py's settings; ``UsageError`` with one line per problem."""
    problems = _check_numbers(args) + _check_knobs(args) + _check_names(args) + _check_places(args)
    problems += check_launch(os.environ, os.cpu_count() or 1)
    problems += adapting.check(args)
    if (args.trainer or {}).get("use_liger_kernel"):
        problems += backends.check_liger()
    if not problems and (args.trainer or {}).get("push_to_hub"):
        problems += check_hub_push((args.trainer or {}).get("hub_model_id"))
    if problems:
        raise UsageError("\n".join(problems))


def check_hub_push(repo_id: str | None, whoami=None) -> list[str]:
    """``push_to_hub`` needs the hub and a token: asked once here, before the model loads, so a run on a
    machine without network does not train for an hour and then end in a traceback at its first push."""
    if whoami is None:
        from huggingface_hub import HfApi

        whoami = HfApi().whoami
    try:
        user = whoami()
    except Exception as exc:  # noqa: BLE001 - offline, no token, a proxy: each means "no push from here"
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        return [
            f"push_to_hub: the hub cannot be used from here ({reason}). Train without it (drop push_to_hub from "
            "the recipe, or --trainer push_to_hub=false) and upload the run folder later with `hf upload`, or "
            "log in first with `hf auth login` where the hub is reachable."
        ]
    name = (user or {}).get("name") if isinstance(user, dict) else None
    if repo_id and name and "/" in repo_id and repo_id.split("/")[0] != name:
        orgs = {o.get("name") for o in (user.get("orgs") or []) if isinstance(o, dict)}
        if repo_id.split("/")[0] not in orgs:
            return [f"hub_model_id {repo_id!r}: you are logged in as {name!r}, who cannot push there."]
    return []


def check_launch(env, cores: int, cuda: bool | None = None) -> list[str]:
    """Problems with how this run was launched, from the launcher's environment: a GPU launch config on
    a machine without GPUs, or more CPU processes on this machine than it has cores (each holds a
    model; on 2 cores, configs/ddp.yaml's old 8 took 17 of 23 GB and crawled)."""
    processes = int(env.get("LOCAL_WORLD_SIZE") or env.get("WORLD_SIZE") or 1)
    if processes <= 1:
        return []
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if env.get("ACCELERATE_USE_CPU", "").lower() == "false" and not cuda:
        return [
            f"this launch config is for GPUs (use_cpu: false) and this machine has none: {processes} processes would "
            "each wait for one. On CPU launch with torchrun --nproc_per_node 2 main.py ..., or run main.py alone."
        ]
    if not cuda and processes > cores:
        return [
            f"{processes} training processes on a CPU machine with {cores} cores: each holds a model and they slow "
            f"each other. Launch at most {cores} (--num_processes / --nproc_per_node {cores}), or one."
        ]
    return []


def _finite(value: float) -> bool:
    return math.isfinite(value)


def _check_numbers(args) -> list[str]:
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
    elif (args.max_steps == 0 and not args.sft_steps) or (args.max_steps < 0 and args.num_train_epochs <= 0):
        problems.append(
            "Nothing to train: set --max_steps > 0, or --max_steps -1 with --num_train_epochs > 0 (--max_steps 0 "
            "with --sft_steps N runs the cold start alone)."
        )
    if not 0 <= args.warmup_ratio < 1:
        problems.append(f"--warmup_ratio {args.warmup_ratio}: must be in [0, 1).")
    if not 0 <= args.lora_dropout < 1:
        problems.append(f"--lora_dropout {args.lora_dropout}: must be in [0, 1) (0.0 or 0.05 are usual).")
    if args.max_prompt_length < 0 or args.save_total_limit < 0:
        problems.append("--max_prompt_length and --save_total_limit must be >= 0.")
    return problems


def _check_knobs(args) -> list[str]:
    """The algorithm and sampling knobs: ranges TRL would otherwise reject mid-run, or silently misuse."""
    problems = []

    def need(ok: bool, flag: str, value, what: str) -> None:
        if not ok:
            problems.append(f"--{flag} {value}: {what}.")

    need(_finite(args.epsilon) and args.epsilon > 0, "epsilon", args.epsilon, "must be a positive number (PPO: 0.2)")
    if args.epsilon_high is not None:
        need(
            _finite(args.epsilon_high) and args.epsilon_high >= args.epsilon,
            "epsilon_high",
            args.epsilon_high,
            f"must be a number >= --epsilon {args.epsilon} (DAPO uses 0.28)",
        )
    if args.delta is not None:
        need(_finite(args.delta) and args.delta > 1, "delta", args.delta, "must be a number > 1 (e.g. 1 + 2 epsilon)")
    need(
        0 < args.top_entropy_quantile <= 1,
        "top_entropy_quantile",
        args.top_entropy_quantile,
        "must be in (0, 1] (1.0 keeps every token; the paper uses 0.2)",
    )
    need(args.num_iterations >= 1, "num_iterations", args.num_iterations, "must be 1 or more")
    need(args.cosine_max_len >= 1, "cosine_max_len", args.cosine_max_len, "must be 1 or more characters")
    if args.soft_punish_cache is not None:
        need(
            0 < args.soft_punish_cache <= args.max_completion_length,
            "soft_punish_cache",
            args.soft_punish_cache,
            f"must be between 1 and --max_completion_length {args.max_completion_length}",
        )
    need(args.repetition_n_grams >= 1, "repetition_n_grams", args.repetition_n_grams, "must be 1 or more words")
    need(
        _finite(args.repetition_max_penalty) and args.repetition_max_penalty <= 0,
        "repetition_max_penalty",
        args.repetition_max_penalty,
        "must be <= 0 (a penalty; 0 turns it off)",
    )
    need(
        _finite(args.reward_timeout) and args.reward_timeout > 0,
        "reward_timeout",
        args.reward_timeout,
        "must be a positive number of seconds (300 is the default)",
    )
    need(args.sft_steps >= 0, "sft_steps", args.sft_steps, "must be >= 0 (0: no supervised cold start)")
    need(
        _finite(args.sft_learning_rate) and args.sft_learning_rate > 0,
        "sft_learning_rate",
        args.sft_learning_rate,
        "must be a positive number (2e-4 suits LoRA)",
    )
    need(args.sft_batch_size >= 1, "sft_batch_size", args.sft_batch_size, "must be 1 or more")
    need(args.dynamic_sampling >= 0, "dynamic_sampling", args.dynamic_sampling, "must be >= 0 extra rounds (0: off)")
    if args.dynamic_sampling and (args.trainer or {}).get("multi_objective_aggregation") == "normalize_then_sum":
        problems.append(
            "--dynamic_sampling needs --multi_objective_aggregation sum_then_normalize (a group's signal "
            "is read off its advantages, which normalize_then_sum makes batch-wide)."
        )
    if args.dynamic_sampling and args.scale_rewards == "batch":  # each round would be scaled by its own batch
        problems.append("--dynamic_sampling needs --scale_rewards group or none (batch scales each round apart).")
    need(_finite(args.weight_decay) and args.weight_decay >= 0, "weight_decay", args.weight_decay, "must be >= 0")
    need(
        _finite(args.max_grad_norm) and args.max_grad_norm >= 0,
        "max_grad_norm",
        args.max_grad_norm,
        "must be >= 0 (0: no clipping)",
    )
    problems += sampling_problems(args)
    if args.lr_scheduler_type not in _KNOWN_SCHEDULES:
        from transformers.trainer_utils import SchedulerType

        accepted = [s.value for s in SchedulerType]
        need(
            args.lr_scheduler_type in accepted,
            "lr_scheduler_type",
            repr(args.lr_scheduler_type),
            f"expected one of {accepted}",
        )
    return problems


def _check_names(args) -> list[str]:
    """Loss type, rewards and their weights, prompt template, built-in levels, a trainer: mapping."""
    from trl_grpo.answers import registry

    problems = []
    if args.loss_type not in _KNOWN_LOSSES:
        accepted = trl_loss_types()
        if accepted and args.loss_type not in accepted:
            problems.append(f"--loss_type {args.loss_type!r}: the installed TRL accepts {accepted}.")
    try:
        registry.get_reward_funcs(args.reward_funcs)
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
    if args.prompt_template not in prompts.PROMPT_TEMPLATES:
        problems.append(
            f"--prompt_template {args.prompt_template!r}: expected one of {sorted(prompts.PROMPT_TEMPLATES)}."
        )
    problems += _check_dataset(args)
    if args.trainer:
        problems += _check_grpo_config(args)
    return problems


def _check_grpo_config(args) -> list[str]:
    """Build the GRPOConfig the run would get (its device and precision, no output written), so a value
    TRL refuses for a trainer: field stops the run here, not after the model loads."""
    import tempfile

    from trl_grpo.models import hardware

    device = hardware.pick_device()
    use_bf16, _ = hardware.training_precision(device, args.bf16)  # as train.py will decide them
    with tempfile.TemporaryDirectory() as folder:
        try:
            trl_configs.build_configs(args, folder, use_bf16=use_bf16, use_cpu=device == "cpu")
        except (TypeError, ValueError) as exc:
            named = [k for k in sorted(args.trainer) if k in str(exc)]  # the fields TRL's complaint names
            given = f" (trainer: fields given: {', '.join(named)})" if named else ""
            return [f"GRPOConfig refuses this run's settings: {str(exc).strip()}{given}"]
    return []


def _check_places(args) -> list[str]:
    """The model, output and resume folders, and the optional packages a flag needs."""
    import importlib.util

    from trl_grpo.models import locate

    problems = []
    if args.model_id != EMBEDDED_MODEL_ID:  # a bad local folder or file fails here, before any load
        try:
            locate.resolve_model(args.model_id)
        except locate.ModelError as exc:
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
    trackers = args.report_to.split(",")
    if "wandb" in trackers and importlib.util.find_spec("wandb") is None:
        problems.append(
            "--report_to wandb needs wandb: pip install wandb (then wandb login), or use --report_to tensorboard."
        )
    if "trackio" in trackers and importlib.util.find_spec("trackio") is None:
        problems.append("--report_to trackio needs trackio: pip install trackio, or use --report_to tensorboard.")
    if args.use_vllm:
        problems += backends.check_vllm()
    return problems


def trl_loss_types() -> list[str] | None:
    """The loss types the installed TRL documents on ``GRPOConfig.loss_type`` (None if unreadable)."""
    import dataclasses
    import re

    from trl.trainer.grpo_config import GRPOConfig

    field = {f.name: f for f in dataclasses.fields(GRPOConfig)}.get("loss_type")
    found = re.search(r"Supported values are (.*?)\.\s", field.metadata.get("help", "")) if field else None
    return re.findall(r"'(\w+)'", found.group(1)) if found else None


def sampling_problems(args) -> list[str]:
    """--top_p, --top_k, --min_p, --repetition_penalty: the same rules in training and evaluation."""
    problems = []
    if not (_finite(args.top_p) and 0 < args.top_p <= 1):
        problems.append(f"--top_p {args.top_p}: must be in (0, 1] (1.0: off).")
    if args.top_k < 0:
        problems.append(f"--top_k {args.top_k}: must be >= 0 (0: off).")
    if args.min_p is not None and not (_finite(args.min_p) and 0 <= args.min_p <= 1):
        problems.append(f"--min_p {args.min_p}: must be in [0, 1].")
    if not (_finite(args.repetition_penalty) and args.repetition_penalty > 0):
        problems.append(f"--repetition_penalty {args.repetition_penalty}: must be a positive number (1.0: off).")
    return problems


def check_eval(args) -> None:
    """Check eval.py's settings (after the run's defaults are filled in); ``UsageError`` per problem."""
    problems = sampling_problems(args)
    if args.num_samples < 1:
        problems.append(f"--num_samples {args.num_samples}: must be 1 or more.")
    if args.num_samples > 1 and args.temperature <= 0:
        problems.append(
            f"--num_samples {args.num_samples} needs sampling: add --temperature 1.0 (greedy gives k identical "
            "samples)."
        )
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        problems.append(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy).")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        problems.append(f"--device {args.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if args.resume and args.overwrite:
        problems.append(
            "--resume and --overwrite contradict each other: --resume keeps the partial results, --overwrite discards "
            "them."
        )
    problems += _check_dataset(args)
    try:
        from trl_grpo.answers import registry

        registry.get_reward_funcs(args.reward_funcs)
    except ValueError as exc:
        problems.append(f"the rewards the run was trained with cannot be loaded: {exc}")
    if args.batch_size < 1 or args.max_completion_length < 1:
        problems.append("--batch_size and --max_completion_length must be positive.")
    if args.limit is not None and args.limit < 1:
        problems.append(f"--limit {args.limit}: must be 1 or more.")
    if problems:
        raise UsageError("\n".join(problems))


ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# from_pretrained arguments the run sets from its own flags: --model_init_kwargs may not set them twice.
_SET_BY_FLAGS = {"dtype": "--bf16", "torch_dtype": "--bf16", "trust_remote_code": "--trust_remote_code"}
_SET_BY_FLAGS |= {"attn_implementation": "--attn_implementation", "revision": "--model_revision"}
_SET_BY_FLAGS |= {"quantization_config": "--load_in_4bit or --load_in_8bit (and the bnb_* flags)"}
_SET_BY_FLAGS |= {"device_map": "the launcher (one process per device)"}


def check_model_args(args, cuda: bool | None = None) -> list[str]:
    """--attn_implementation where its kernel can run, --model_init_kwargs without a key a flag sets."""
    import importlib.util

    problems = []
    kernel = args.attn_implementation
    if kernel:
        if cuda is None:
            import torch

            cuda = torch.cuda.is_available()
        usable = [k for k in ATTENTION if not k.startswith("flash_attention") or cuda]
        if kernel not in ATTENTION:
            problems.append(f"--attn_implementation {kernel!r}: expected one of {list(ATTENTION)}.")
        elif kernel not in usable:
            problems.append(f"--attn_implementation {kernel}: needs a CUDA GPU; here use one of {usable}.")
        elif kernel.startswith("flash_attention") and importlib.util.find_spec("flash_attn") is None:
            problems.append(f"--attn_implementation {kernel} needs the flash-attn package; or use sdpa.")
    for key in sorted(set(args.model_init_kwargs or {}) & set(_SET_BY_FLAGS)):
        problems.append(f"--model_init_kwargs {key}: set it with {_SET_BY_FLAGS[key]} instead.")
    return problems


def _check_dataset(args) -> list[str]:
    """What both commands share: the answer-check bound, the built-in dataset's id, a --system_prompt,
    the model arguments (``check_model_args``)."""
    problems = check_model_args(args)
    if not (_finite(args.verify_timeout) and args.verify_timeout > 0):
        problems.append(
            f"--verify_timeout {args.verify_timeout}: must be a positive, finite number of seconds (5 is the default)."
        )
    try:
        if sources.is_builtin(args.dataset_id):
            sources.parse_builtin_spec(args.dataset_id)
    except splits.DataError as exc:
        problems.append(str(exc))
    prompt = getattr(args, "system_prompt", None)
    if prompt and prompt.startswith("@") and not os.path.isfile(prompt[1:]):
        problems.append(f"--system_prompt {prompt}: no such file; give the prompt's text, or @ and an existing file.")
    elif prompt is not None and not prompt.strip():
        problems.append("--system_prompt is empty; give the prompt's text, or @file.txt.")
    return problems
