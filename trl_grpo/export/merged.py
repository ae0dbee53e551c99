"""A run's weights as a standalone model: the adapter merged into its base (or a full fine-tune's weights as
they are), with the tokenizer, the chat template and a generation config, loadable by transformers alone.

    python export.py ckpts/RUN --merged out/model         # also RUN/checkpoint-N, RUN/sft

What is exported is always a folder of a run (``runs/context.run_folder``): its recorded settings say how
the model was loaded and prompted, and the model card says so.
"""

from __future__ import annotations

import os

from trl_grpo.models import loading, locate, start
from trl_grpo.runs.context import run_folder, run_record


class ExportError(locate.ModelError):
    """What cannot be exported as asked; the message says how to fix it."""


def source(folder: str) -> dict:
    """What ``folder`` (a run, ``checkpoint-N``, ``sft``) holds: its run's record and where its weights lie."""
    folder = os.path.normpath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise ExportError(f"{folder!r} is not a folder. Export a run folder from ckpts/, its checkpoint-N or sft.")
    run = run_folder(folder)
    if run is None:
        raise ExportError(
            f"{folder!r} is not part of a run (no run_config.json in it or above it). Export a run folder "
            "from ckpts/, one of its checkpoint-N folders, or its sft folder."
        )
    weights = start.saved_weights(folder)
    if weights is None:
        raise ExportError(
            f"{folder!r} holds no finished weights (adapter_model.safetensors or model.safetensors): export a "
            "complete checkpoint-N, or resume the run to its end."
        )
    record = run_record(folder)
    return {"folder": folder, "run": run, "record": record, "adapter": weights.endswith("adapter_model.safetensors")}


def base_config(src: dict) -> dict:
    """The exported model's config.json (the adapter's base's, or the full fine-tune's own)."""
    import json

    resolved = locate.resolve_model(src["folder"])
    path = os.path.join(resolved["base"], "config.json")
    if not os.path.isfile(path):  # a hub base: read where it would load from
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(resolved["base"]).to_dict()
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def merged_model(src: dict, dtype="auto"):
    """The standalone model and its tokenizer: the adapter merged into its base, or the full weights."""
    args = src["record"].get("args", {})
    resolved = locate.resolve_model(src["folder"])
    model = loading.load_model(
        resolved,
        dtype,
        trust_remote_code=bool(args.get("trust_remote_code")),
        merge=True,
        revision=args.get("model_revision") if resolved["adapter"] else None,
        init_kwargs=args.get("model_init_kwargs"),
    )
    tokenizer = loading.load_tokenizer(
        src["folder"],
        bool(args.get("trust_remote_code")),
        chat_template=args.get("chat_template"),
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def write_merged(src: dict, out_dir: str) -> str:
    """Save the standalone model in ``out_dir`` (safetensors, config, generation config, tokenizer and chat
    template); returns ``out_dir``."""
    model, tokenizer = merged_model(src)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
