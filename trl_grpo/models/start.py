"""What a run starts training from, and how it says so: a base model, or an adapter that exists (a run folder,
``checkpoint-N``, the cold start's ``RUN/sft``, any PEFT adapter folder) that training goes on from.

    python main.py --model_id ckpts/RUN/sft            # GRPO on from the cold start's adapter
    python main.py --model_id ckpts/RUN --no-use_peft  # that adapter merged in; the whole model trains

An adapter keeps its own shape (rank, alpha, targets, DoRA...): a flag given on the command line or in a
recipe that disagrees with it is refused in one line before the model loads, as resume refuses a
changed setting. The run records where it started (``started_from`` in run_config.json).
"""

from __future__ import annotations

import hashlib
import json
import os

from trl_grpo.models.locate import ModelError

# PEFT's LoraConfig defaults, for an adapter_config.json that leaves a field out.
PEFT_DEFAULTS = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "use_dora": False, "use_rslora": False}
# Flag -> the adapter_config.json field it would set, for an adapter that already exists.
SHAPE = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
    "lora_target_parameters": "target_parameters",
    "use_dora": "use_dora",
    "use_rslora": "use_rslora",
}


def adapter_config(adapter_dir: str) -> dict:
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        return json.load(f)


def _as_names(value) -> list[str] | str | None:
    """A module list as a sorted list (a flag's comma text or the config's list), 'all-linear' as itself."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        return value if value == "all-linear" else sorted(v.strip() for v in value.split(",") if v.strip())
    return sorted(value)


def check_adapter_flags(adapter_dir: str, args, given) -> None:
    """``ModelError`` naming each flag in ``given`` that disagrees with the adapter's own shape."""
    config = adapter_config(adapter_dir)
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(
            f"--model_id {adapter_dir!r}: a {config['peft_type']} adapter; this tool goes on training LoRA adapters "
            "(DoRA and rsLoRA included)."
        )
    if not args.use_peft:  # merged into the weights: its shape no longer matters
        if getattr(args, "beta", 0.0):
            raise ModelError(
                f"--model_id {adapter_dir!r} --no-use_peft with --beta {args.beta}: TRL would load the reference "
                "model by name, the base without this adapter. Train on the adapter (drop --no-use_peft: its "
                "reference is the adapter as it starts), or --beta 0."
            )
        return
    clashes = []
    for flag, key in SHAPE.items():
        if flag not in given:
            continue
        ours, theirs = getattr(args, flag), config.get(key, PEFT_DEFAULTS.get(key))
        if key.endswith(("modules", "_save", "parameters")):
            if ours == "all-linear" or (isinstance(theirs, str) and theirs != "all-linear"):
                continue  # all-linear is saved as the layers it found; a saved regex names no list to compare
            ours, theirs = _as_names(ours), _as_names(theirs)
        elif isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
            ours, theirs = float(ours), float(theirs)
        else:
            ours, theirs = bool(ours), bool(theirs)
        if ours != theirs:
            clashes.append(f"--{flag} {getattr(args, flag)} (the adapter's: {config.get(key, PEFT_DEFAULTS.get(key))})")
    if clashes:
        raise ModelError(
            f"--model_id {adapter_dir!r} is an adapter that training goes on from, with its own shape; "
            f"{'; '.join(clashes)}. Drop the flag, or start a new adapter from its base "
            f"(--model_id {config.get('base_model_name_or_path') or 'BASE'})."
        )


def started_from(resolved: dict, use_peft: bool) -> dict | None:
    """The run's starting point for run_config.json: the adapter (path, its weights' SHA-256 prefix, its base)
    and what became of it; None when training starts from a model's own weights."""
    adapter = resolved.get("adapter")
    if not adapter:
        return None
    digest = hashlib.sha256()
    with open(os.path.join(adapter, "adapter_model.safetensors"), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {
        "adapter": os.path.abspath(adapter),
        "adapter_sha256": digest.hexdigest()[:16],
        "base": resolved["base"],
        "as": "trained on (its shape kept)" if use_peft else "merged into the base; the whole model trains",
    }


def saved_weights(folder: str) -> str | None:
    """The weights a run, checkpoint or cold start saved in ``folder``: its adapter, or the whole model's."""
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def load_saved_weights(model, folder: str) -> None:
    """``model`` takes the weights saved in ``folder`` (``saved_weights``): the adapter's into a PEFT model,
    or the whole model's (tied weights tied again; anything missing or extra is an error)."""
    from safetensors.torch import load_file

    path = saved_weights(folder)
    if path is None:
        raise FileNotFoundError(f"{folder} holds neither adapter_model.safetensors nor model.safetensors")
    weights = load_file(path)
    if hasattr(model, "get_base_model"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
        return
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied]:
        raise RuntimeError(f"{path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()


def lora_record(model) -> dict | None:
    """The adapter's configuration as the run trains it (None for full fine-tuning)."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    config = configs.get("default") or next(iter(configs.values()))
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.to_dict().items()}


def trainable_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters, for an adapter (PEFT counts 4-bit weights unpacked) or the whole model."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def print_trainable(model) -> None:
    """The original's one line of trainable and total parameters, for an adapter or the whole model."""
    if hasattr(model, "print_trainable_parameters"):
        model.print_trainable_parameters()
        return
    trainable, total = trainable_counts(model)
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")


def _as_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _named(name: str, names) -> bool:
    """Whether ``name`` names one of ``names`` as PEFT matches: the whole dotted name or a dotted suffix of it."""
    return any(n == name or n.endswith("." + name) for n in names)


def check_targets(model, args) -> None:
    """Refuse ``--lora_target_modules``, ``--lora_modules_to_save`` or ``--lora_target_parameters`` naming what
    the model does not have (PEFT would raise later, in a traceback), listing what it does have. A name is
    matched as PEFT matches it: the module's (or parameter's) full name or a dotted suffix of it."""
    import torch

    if not args.use_peft:
        return
    targets = args.lora_target_modules
    # bitsandbytes' 4- and 8-bit layers subclass torch.nn.Linear too
    linear = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    wanted = [] if targets in ("all-linear", "none") else _as_list(targets)
    missing = [t for t in wanted if not _named(t, linear)]
    if missing:
        have = sorted({name.rsplit(".", 1)[-1] for name in linear})
        raise ModelError(
            f"--lora_target_modules {targets!r}: the model has no linear layer named {', '.join(missing)}. Its "
            f"linear layers are {', '.join(have)}; or use all-linear."
        )
    modules = [name for name, _ in model.named_modules()]
    missing = [m for m in _as_list(args.lora_modules_to_save) if not _named(m, modules)]
    if missing:
        top = [m for m in ("lm_head", "embed_tokens", "norm") if _named(m, modules)]
        raise ModelError(
            f"--lora_modules_to_save {args.lora_modules_to_save!r}: the model has no module named "
            f"{', '.join(missing)}; name modules as the model names them (e.g. {', '.join(top)})."
        )
    params = [name for name, _ in model.named_parameters()]
    missing = [p for p in _as_list(args.lora_target_parameters) if not _named(p, params)]
    if missing:
        raise ModelError(
            f"--lora_target_parameters {args.lora_target_parameters!r}: the model has no parameter named "
            f"{', '.join(missing)} (parameters end in .weight or, in mixture-of-experts layers, e.g. "
            "experts.gate_up_proj)."
        )
    if targets == "none" and not _as_list(args.lora_target_parameters):
        raise ModelError("--lora_target_modules none adapts nothing: give --lora_target_parameters, or all-linear.")
