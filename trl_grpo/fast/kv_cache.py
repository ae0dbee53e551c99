"""The KV cache of the fast decode loop and the CPU attention kernel it pairs with: where the cache
lives (``ReservedLayer``: room reserved once, rows dropped in one copy), in what dtype
(``cache_in_fp32``), the attention implementation bf16 runs on a CPU (``pick_attention``), a
shared prompt prefix's cache, and how many rows fit free memory (``rows_that_fit``).

    trl_grpo/fast/decoding.py uses all of it; loading.load_model takes ``pick_attention``'s answer.

Each is tested against the stock transformers path in tests/test_decoding.py.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from trl_grpo.models.hardware import free_memory_bytes

CPU_FP32_ATTENTION = "sdpa_cpu_fp32"


def _sdpa_cpu_fp32(module, query, key, value, attention_mask, **kwargs):
    """transformers' sdpa attention, run in fp32 when bf16/fp16 tensors reach it on a CPU.

    torch's CPU attention kernels are several times slower in bf16 than in fp32 at these sizes,
    and under bf16 autocast q, k and v arrive in bf16; upcasting costs far less and keeps the
    softmax in fp32 (figures: bench/README.md, "Where the speed paths' figures live").
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or (query.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):  # CPU autocast would cast attention back to bf16
        if _grouped_with_mask(module, query, attention_mask, kwargs):
            out, weights = _sdpa_grouped(query.float(), key.float(), value.float(), attention_mask, kwargs), None
        else:
            out, weights = sdpa_attention_forward(
                module, query.float(), key.float(), value.float(), attention_mask, **kwargs
            )
    return out.to(query.dtype), weights


def _grouped_with_mask(module, query, attention_mask, kwargs) -> bool:
    """Whether a masked multi-token call with grouped key/value heads can go to torch's kernel with
    ``enable_gqa`` (transformers repeats the keys and values instead wherever a mask is given)."""
    known = {"dropout", "scaling", "position_ids", "use_cache", "output_hidden_states", "output_attentions"}
    return (
        set(kwargs) <= known
        and not kwargs.get("output_attentions")
        and attention_mask is not None
        and attention_mask.dtype == torch.bool
        and query.shape[2] > 1
        and getattr(module, "num_key_value_groups", 1) > 1
    )


def _sdpa_grouped(query, key, value, attention_mask, kwargs):
    """torch's CPU attention on the key/value heads as they are: the same outputs as repeating them
    (bit for bit; their gradients to rounding), ~30% less time forward and backward at the loss's
    sizes (bench/README.md, "Where the speed paths' figures live")."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=kwargs.get("dropout", 0.0),
        scale=kwargs.get("scaling"),
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous()


def cache_in_fp32(model) -> bool:
    """Whether decoding keeps this model's KV cache in fp32: where its attention upcasts to fp32
    anyway (``CPU_FP32_ATTENTION``), so the cache is cast once per new token, not per step."""
    return getattr(model.config, "_attn_implementation", None) == CPU_FP32_ATTENTION


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


def rows_that_fit(model, device: str, tokens_per_row: int, share: float = 0.25) -> int | None:
    """How many sequences of ``tokens_per_row`` tokens fit their KV cache into ``share`` of the
    free memory (the rest: activations, logits, the reserve for growth); None when unknown."""
    free = free_memory_bytes(device)
    if free is None:
        return None
    cfg = model.config.get_text_config()
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = 4 if cache_in_fp32(model) else model.dtype.itemsize
    per_row = 2 * cfg.num_hidden_layers * kv_heads * head_dim * tokens_per_row * itemsize
    return max(1, int(free * share // per_row))


def prefix_cache(model, prefix: list[int], device):
    """KV cache of ``prefix``, computed once at batch 1."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix], device=device), cache=cache, use_cache=True)
    return cache


def expanded_prefix_cache(model, prefix: list[int], device, batch: int, cache=None):
    """A prefix KV cache (a copy of ``cache``, or computed now) repeated for ``batch`` rows."""
    cache = copy.deepcopy(cache) if cache is not None else prefix_cache(model, prefix, device)
    cache.batch_repeat_interleave(batch)
    return cache


class ReservedLayer(DynamicLayer):
    """A KV-cache layer for a ``DynamicCache`` that writes new keys and values into reserved room.

    The stock layer concatenates on every update, copying the whole cache once per decode step
    and layer (about a tenth of an evaluation here). This one allocates ``room`` spare
    positions once and writes in place; rows leaving the batch are dropped with one copy. It
    keeps the stock layer's state (``keys``, ``values``, ``is_initialized``, ``device``) current,
    which transformers' cache reads (tests/test_private_apis.py pins that).

    With ``dtype``, it stores keys and values in that dtype whatever arrives: fp32 where attention
    runs in fp32 on bf16 activations (``CPU_FP32_ATTENTION``), which otherwise upcast
    the whole cache on every decode step and layer (a sixth of a training generation's time here).
    """

    def __init__(self, room: int, dtype=None):
        super().__init__()
        self.room, self.length, self.dtype = room, 0, dtype

    def _adopt(self, keys, values, room):
        b, h, n, d = keys.shape
        self.k_buf = keys.new_empty((b, h, n + room, d), dtype=self.dtype or keys.dtype)
        self.v_buf = values.new_empty(
            (b, values.shape[1], n + room, values.shape[-1]), dtype=self.dtype or values.dtype
        )
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


def reserved_layer(room: int, like=None, dtype=None) -> ReservedLayer:
    """A ``ReservedLayer`` with ``room`` spare positions, holding ``like``'s contents if given."""
    layer = ReservedLayer(room, dtype)
    if like is not None and like.is_initialized and like.get_seq_length() > 0:
        layer._adopt(like.keys, like.values, room)
    return layer
