"""A decode step for Llama and Qwen2 models on CPU written directly in torch ops: what training's
sampling and evaluation's generation run instead of the transformers model after it ran the prompts
(``decoding.lean_prefill``).

    lean = LeanDecoder.of(model)                     # training: inside fast_weights.generation_weights()
    state = lean.start(prefix, shared, parts, room)  # after transformers ran the prompts
    logits = state.step(tokens, positions)           # one new token per row; state.select(rows) drops rows

Why: at 16 rows on 2 cores a decode step through transformers spends more time in ~100 small ops and
the Python around them per layer (PEFT and accelerate wrappers, cache and mask bookkeeping) than in
its matmuls. This step runs the same arithmetic in the same dtypes as transformers' step under bf16
autocast with attention in fp32 (``kv_cache.CPU_FP32_ATTENTION``), with three differences in
layout, not in the function computed: q/k/v and gate/up each run as one matmul (their weights
concatenated and packed for oneDNN once per round, from the weights generation_weights merged);
the rotary embedding is one multiply-add over the query and key heads together; and attention is
cascaded: each row's query scores the shared prefix's keys, stored once, and its own keys in one
softmax, instead of every row reading its own copy of the prefix. Sums run in another order, so
logits agree with transformers' to rounding, not bit for bit (tests/test_lean_decode.py); figures
in bench/README.md, "A lean decode step".
"""

from __future__ import annotations

import torch

from fast_weights import linear_fn

# Decoder layers that are exactly: RMSNorm, q/k/v (bias optional), rotary embedding, grouped-query
# attention over every earlier position, o_proj, residual; RMSNorm, SiLU-gated MLP, residual.
FAMILIES = {"llama": "LlamaDecoderLayer", "qwen2": "Qwen2DecoderLayer"}


def _weight_and_bias(module):
    """The (weight, bias) ``module`` computes with now: a plain linear layer, or a LoRA layer whose
    adapter is merged in or switched off (fast_weights.generation_weights does both); else None."""
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    adapters_off = getattr(module, "merged", False) or getattr(module, "disable_adapters", False)
    if type(base) is torch.nn.Linear and adapters_off:
        return base.weight, base.bias
    return None


def _fused(modules, device: str):
    """One linear function computing ``modules`` side by side (outputs concatenated)."""
    parts = [_weight_and_bias(m) for m in modules]
    weight = torch.cat([w.detach() for w, _ in parts]) if len(parts) > 1 else parts[0][0].detach()
    bias = None
    if any(b is not None for _, b in parts):
        bias = torch.cat([b.detach() if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])
    return linear_fn(weight, bias, device)


def _rms(norm, x):
    """transformers' Llama/Qwen2 RMSNorm: statistics in fp32, the weight applied in the input's dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


class LeanDecoder:
    """A model's decode step with its linear layers fused and packed as its weights stand now."""

    @staticmethod
    def why_not(model) -> str | None:
        """Why this model cannot take the lean step (None: it can)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config
        family = FAMILIES.get(getattr(cfg, "model_type", None))
        if family is None:
            return f"model type {getattr(cfg, 'model_type', None)!r} is not one of {sorted(FAMILIES)}"
        if base.device.type != "cpu":
            return "not on CPU"
        decoder = base.get_decoder()
        if any(type(layer).__name__ != family for layer in decoder.layers):
            return "its decoder layers are not the stock ones"
        if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
            return "it has sliding-window layers"
        if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
            return "its MLP is not the stock SiLU-gated one"
        linears = [base.get_output_embeddings()]
        for layer in decoder.layers:
            a, m = layer.self_attn, layer.mlp
            linears += [a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj]
        if any(_weight_and_bias(m) is None for m in linears):
            return "an adapter is active and not merged in"
        if len({_weight_and_bias(m)[0].dtype for m in linears}) != 1:
            return "its linear layers mix dtypes"
        return None

    @classmethod
    def of(cls, model) -> LeanDecoder | None:
        return None if cls.why_not(model) else cls(model)

    def __init__(self, model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg, decoder = base.config, base.get_decoder()
        self.embed, self.rotary, self.norm = decoder.embed_tokens, decoder.rotary_emb, decoder.norm
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.layers = []
        for layer in decoder.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm,
                    _fused((a.q_proj, a.k_proj, a.v_proj), "cpu"),
                    _fused((a.o_proj,), "cpu"),
                    layer.post_attention_layernorm,
                    _fused((m.gate_proj, m.up_proj), "cpu"),
                    _fused((m.down_proj,), "cpu"),
                    a.scaling,
                    _weight_and_bias(m.gate_proj)[0].shape[0],  # where gate ends in gate_up's output
                )
            )
        self.head = _fused((base.get_output_embeddings(),), "cpu")

    def start(self, prefix, shared: int, parts, room: int, repeats: int = 1) -> LeanState:
        """Take over after transformers ran the prompts. ``prefix``: a KV cache whose row 0 starts with
        the ``shared`` prefix tokens every row shares (None if 0). ``parts``: one ``(rows, cache,
        own_mask)`` per batch of prompts run after the prefix: the rows they take in the decode,
        their cache ([prefix][padding][own tokens] per row) and the mask of their own part (0 on
        padding). Each prompt becomes ``repeats`` rows (row x ``repeats`` + 0 .. ``repeats`` - 1).
        ``room``: new tokens to make space for."""
        return LeanState(self, prefix, shared, parts, room, repeats)


class LeanState:
    """The keys and values a lean decode works on: the prefix's once, key/value head first; each
    row's own after it, row first, so that rows leaving the batch cost a copy of the few rows moved
    into their slots (``select``) and every product of the attention runs on views."""

    def __init__(self, lean: LeanDecoder, prefix, shared: int, parts, room: int, repeats: int = 1):
        self.lean, self.shared = lean, shared
        n = repeats * sum(len(rows) for rows, _, _ in parts)
        own = max(m.shape[1] for _, _, m in parts)  # parts are right-aligned to the longest
        where = [(rows[:, None] * repeats + torch.arange(repeats)).flatten() for rows, _, _ in parts]
        self.prefix, self.own = [], []
        for i, layer in enumerate(prefix.layers if shared else [None] * len(lean.layers)):
            if shared:  # attention runs in fp32
                keys, values = layer.keys[0].float(), layer.values[0].float()
                self.prefix.append((keys[:, :shared].transpose(-1, -2).contiguous(), values[:, :shared].contiguous()))
            else:
                self.prefix.append((None, None))
            k = v = None
            for rows, (_, cache, mask) in zip(where, parts, strict=True):
                keys, values = cache.layers[i].keys[:, :, shared:], cache.layers[i].values[:, :, shared:]
                if k is None:  # (rows, key/value heads, own positions + room, head dim)
                    k = keys.new_empty((n, keys.shape[1], own + room, keys.shape[-1]), dtype=torch.float32)
                    v = values.new_empty((n, values.shape[1], own + room, values.shape[-1]), dtype=torch.float32)
                width = mask.shape[1]
                k[rows, :, own - width : own] = keys.repeat_interleave(repeats, 0).float()
                v[rows, :, own - width : own] = values.repeat_interleave(repeats, 0).float()
                k[rows, :, : own - width], v[rows, :, : own - width] = 0, 0  # masked, but must not be inf or nan
            self.own.append((k, v))
        # Added to the scores: 0 where a row may attend, -inf on its padding; new positions are 0.
        self.bias = torch.zeros((n, 1, 1, shared + own + room))
        for rows, (_, _, mask) in zip(where, parts, strict=True):
            pad = torch.ones((len(rows), own), dtype=torch.bool)
            pad[:, own - mask.shape[1] :] = (mask == 0).repeat_interleave(repeats, 0)
            self.bias[rows, 0, 0, shared : shared + own] = torch.zeros(pad.shape).masked_fill_(pad, float("-inf"))
        self.length = own  # own positions filled

    def select(self, rows) -> None:
        """Keep only ``rows`` (indices into the current rows), in that order: rows already in place
        stay, the others are copied into their new slots (``decoding.kept_in_place`` orders the
        survivors so that only the last rows move)."""
        m = rows.numel()
        moved = (rows != torch.arange(m, device=rows.device)).nonzero().squeeze(1)
        if moved.numel():
            src = rows[moved]  # indexing copies first, so overlapping moves are safe
            for k, v in self.own:
                k[moved], v[moved] = k[src], v[src]
            self.bias[moved] = self.bias[src]
        self.own = [(k[:m], v[:m]) for k, v in self.own]
        self.bias = self.bias[:m]

    def step(self, tokens, positions):
        """fp32 logits of the next token after ``tokens`` (one per row) at ``positions``."""
        # Every dtype is explicit (linear layers in their weights' dtype, attention in fp32); CPU
        # autocast would run the attention's matmuls in bf16, several times slower here.
        with torch.autocast("cpu", enabled=False):
            return self._step(tokens, positions)

    def _step(self, tokens, positions):
        lean, at = self.lean, self.length
        n, h, kv, d = tokens.shape[0], lean.heads, lean.kv_heads, lean.head_dim
        g, shared, seen = h // kv, self.shared, self.shared + self.length + 1
        x = lean.embed(tokens)
        cos, sin = lean.rotary(x, positions[:, None])  # (n, 1, d), broadcast over heads
        cos, sin = cos.float(), sin.float()
        # rotate_half(t) * sin == roll(t, d/2) * [-sin_1, sin_2]: one op for the rotation, exactly
        sin = torch.cat((-sin[..., : d // 2], sin[..., d // 2 :]), -1)
        bias = self.bias[..., :seen]
        for (norm_in, qkv_fn, o_fn, norm_mid, gate_up_fn, down_fn, scale, width), (pk, pv), (ok, ov) in zip(
            lean.layers, self.prefix, self.own, strict=True
        ):
            qkv = qkv_fn(_rms(norm_in, x))
            qk = qkv[:, : (h + kv) * d].view(n, h + kv, d).float()
            qk = qk * cos + qk.roll(d // 2, -1) * sin
            ok[:, :, at], ov[:, :, at] = qk[:, h:], qkv[:, (h + kv) * d :].view(n, kv, d)
            q = qk[:, :h].reshape(n, kv, g, d)  # a copy: the products take it as batches of rows x heads
            scores = q @ ok[:, :, : at + 1].transpose(-1, -2)  # (n, kv, g, own positions)
            if shared:  # every row's queries against the prefix's keys, stored once
                pre = (q.transpose(0, 1).reshape(kv, n * g, d) @ pk).view(kv, n, g, shared)
                scores = torch.cat((pre.transpose(0, 1), scores), -1)
            p = torch.softmax(scores * scale + bias, -1)
            out = p[..., shared:] @ ov[:, :, : at + 1]  # (n, kv, g, d)
            if shared:
                out += (
                    (p[..., :shared].transpose(0, 1).reshape(kv, n * g, shared) @ pv).view(kv, n, g, d).transpose(0, 1)
                )
            x = x + o_fn(out.view(n, h * d))
            gate_up = gate_up_fn(_rms(norm_mid, x))
            x = x + down_fn(torch.nn.functional.silu(gate_up[:, :width]) * gate_up[:, width:])
        self.length = at + 1
        return lean.head(_rms(lean.norm, x)).float()
