"""How the model adapts, as TRL's ``ModelConfig`` spells it: LoRA (the default), DoRA, rsLoRA, modules trained
in full beside the adapters, QLoRA (a 4- or 8-bit base), full fine-tuning, or training on from an adapter.

    python main.py --use_dora                         # DoRA adapters
    python main.py --load_in_4bit                     # QLoRA (pip install -r requirements-qlora.txt)
    python main.py --no-use_peft --learning_rate 1e-5 # the whole model trains
    python main.py --model_id ckpts/RUN/sft           # GRPO goes on from an adapter that exists

``check`` says, one line each, which combinations cannot work, before anything loads;
``lora_config`` builds PEFT's config; docs/adapting.md says what each choice costs (bench/README.md
measures them).
"""

from __future__ import annotations

from trl_grpo.settings import backends


def names(text: str | None) -> list[str] | None:
    """A comma-separated flag as a list (None when empty)."""
    out = [t.strip() for t in (text or "").split(",") if t.strip()]
    return out or None


def check(args) -> list[str]:
    """Problems with the adaptation flags taken together."""
    problems = []
    if str(args.lora_task_type).upper() != "CAUSAL_LM":
        problems.append(
            f"--lora_task_type {args.lora_task_type!r}: a GRPO policy is a causal language model; only CAUSAL_LM "
            "applies (SEQ_CLS is for reward models)."
        )
    quantized = [f"--load_in_{b}bit" for b in (4, 8) if getattr(args, f"load_in_{b}bit")]
    if len(quantized) == 2:
        problems.append("--load_in_4bit and --load_in_8bit: pick one (4-bit is QLoRA's).")
    if not args.use_peft:
        given = [f"--{n}" for n in ("use_dora", "use_rslora") if getattr(args, n)]
        given += [f"--{n}" for n in ("lora_modules_to_save", "lora_target_parameters") if getattr(args, n)]
        if given:
            problems.append(
                f"--no-use_peft trains the whole model; {', '.join(given)} shape LoRA adapters. Drop one or the other."
            )
        beta = getattr(args, "beta", 0.0) or 0.0
        reloaded = [f for f in ("model_revision", "trust_remote_code", "model_init_kwargs") if getattr(args, f, None)]
        if beta and reloaded:
            problems.append(
                f"--no-use_peft with --beta {beta}: TRL loads the reference model again by name, without "
                f"--{reloaded[0]}; train LoRA adapters (their reference is the base with the adapter off), or --beta 0."
            )
        if quantized:
            problems.append(
                f"--no-use_peft with {quantized[0]}: quantized weights cannot be trained in full; QLoRA trains "
                "LoRA adapters on them (drop --no-use_peft), or drop the quantization."
            )
    if not args.load_in_4bit:
        set_4bit = [
            f"--{n}"
            for n, default in (("bnb_4bit_quant_type", "nf4"), ("bnb_4bit_quant_storage", "uint8"))
            if getattr(args, n) not in (default, None)  # None: recorded by runs from before these flags
        ]
        set_4bit += ["--use_bnb_nested_quant"] if args.use_bnb_nested_quant else []
        if set_4bit:
            problems.append(
                f"{', '.join(set_4bit)}: 4-bit settings, read only with --load_in_4bit: add it or drop them."
            )
    if len(quantized) == 1 and args.use_peft:  # a combination already refused needs no package
        problems += backends.check_bitsandbytes(quantized[0])
    return problems


def quantization_config(args, compute_dtype):
    """transformers' ``BitsAndBytesConfig`` for --load_in_4bit / --load_in_8bit (None otherwise), computing in
    ``compute_dtype`` (the run's: bf16 where the device has it, else fp32)."""
    if not (args.load_in_4bit or args.load_in_8bit):
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=args.bnb_4bit_quant_type or "nf4",
        bnb_4bit_use_double_quant=bool(args.use_bnb_nested_quant),
        bnb_4bit_quant_storage=getattr(torch, args.bnb_4bit_quant_storage or "uint8"),
        bnb_4bit_compute_dtype=compute_dtype,
    )


def lora_config(args):
    """PEFT's ``LoraConfig`` from the flags (None for full fine-tuning)."""
    if not args.use_peft:
        return None
    from peft import LoraConfig

    targets = args.lora_target_modules
    targets = targets if targets == "all-linear" else [] if targets == "none" else names(targets)
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=targets,
        target_parameters=names(args.lora_target_parameters),
        modules_to_save=names(args.lora_modules_to_save),
        use_dora=args.use_dora,
        use_rslora=args.use_rslora,
        task_type="CAUSAL_LM",
    )
