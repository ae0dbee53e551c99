"""A decode step for Llama and Qwen2 models on CPU written directly in torch ops: what training's
sampling and evaluation's generation run instead of the transformers model after it ran the prompts
(``decoding.lean_prefill``).

    lean = LeanDecoder.of(model)                     # training: inside merged_weights.generation_weights()
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

from trl_grpo.fast.merged_weights import linear_fn

# Decoder layers that are exactly: RMSNorm, q/k/v (bias optional), rotary embedding, grouped-query
# attention over every earlier position, o_proj, residual; RMSNorm, SiLU-gated MLP, residual.
FAMILIES = {"llama": "LlamaDecoderLayer", "qwen2": "Qwen2DecoderLayer"}


def _weight_and_bias(module):
    """The (weight, bias) ``module`` computes with now: a plain linear layer, or a LoRA layer whose
    adapter is merged in or switched off (merged_weights.generation_weights does both); else None."""
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    adapters_off = getattr(module, "merged", False) or getattr(module, "disable_adapters", False)
    if type(base) is torch.nn.Linear and adapters_off:
        return base.weight, base.bias
    return None


class _Fused:
    """``modules`` computed side by side (outputs concatenated): at decode sizes as one matmul from a
    oneDNN-packed copy of their weights; at prefill sizes (``wide``) from their own weights, where
    torch's plain matmul ran faster than the packed one (bench/README.md)."""

    def __init__(self, modules, device: str):
        self.parts = [tuple(t.detach() if t is not None else None for t in _weight_and_bias(m)) for m in modules]
        weight = torch.cat([w for w, _ in self.parts]) if len(self.parts) > 1 else self.parts[0][0]
        bias = None
        if any(b is not None for _, b in self.parts):
            bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in self.parts])
        self.packed = linear_fn(weight, bias, device)

    def __call__(self, x):
        return self.packed(x)

    def wide(self, x) -> list:
        """Each module's output for ``x``, separately (concatenating them cost more than it saves)."""
        x = x.to(self.parts[0][0].dtype)
        return [torch.nn.functional.linear(x, w, None if b is None else b.to(w.dtype)) for w, b in self.parts]


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
                    _Fused((a.q_proj, a.k_proj, a.v_proj), "cpu"),
                    _Fused((a.o_proj,), "cpu"),
                    layer.post_attention_layernorm,
                    _Fused((m.gate_proj, m.up_proj), "cpu"),
                    _Fused((m.down_proj,), "cpu"),
                    a.scaling,
                    _weight_and_bias(m.gate_proj)[0].shape[0],  # where gate ends in gate_up's output
                )
            )
        self.head = _Fused((base.get_output_embeddings(),), "cpu")

    def start(self, prefix, shared: int, n: int, own: int, room: int) -> LeanState:
        """An empty state for ``n`` rows: ``prefix``, a KV cache whose row 0 starts with the ``shared``
        prefix tokens every row shares (None if 0); room for ``own`` prompt tokens per row after it
        (``LeanState.prefill`` fills them) and ``room`` new tokens."""
        return LeanState(self, prefix, shared, n, own, room)


class LeanState:
    """The keys and values a lean decode works on: the prefix's once, key/value head first; each
    row's own after it, row first, so that rows leaving the batch cost a copy of the few rows moved
    into their slots (``select``) and every product of the attention runs on views."""

    def __init__(self, lean: LeanDecoder, prefix, shared: int, n: int, own: int, room: int):
        self.lean, self.shared, self.length = lean, shared, own  # own positions, filled by prefill
        self.prefix, self.own = [], []
        for i in range(len(lean.layers)):
            if shared:  # attention runs in fp32
                keys, values = prefix.layers[i].keys[0].float(), prefix.layers[i].values[0].float()
                self.prefix.append((keys[:, :shared].transpose(-1, -2).contiguous(), values[:, :shared].contiguous()))
            else:
                self.prefix.append((None, None))
            k = torch.empty((n, lean.kv_heads, own + room, lean.head_dim))  # rows first
            v = torch.empty((n, lean.kv_heads, own + room, lean.head_dim))
            k[:, :, :own], v[:, :, :own] = 0, 0  # masked where no prompt token lands, but never inf or nan
            self.own.append((k, v))
        # Added to the scores: 0 where a row may attend, -inf on its padding; new positions are 0.
        self.bias = torch.zeros((n, 1, 1, shared + own + room))
        self.bias[..., shared : shared + own] = float("-inf")

    def prefill(self, prompts, ids, mask, positions, repeats: int = 1):
        """Run prompts' own tokens ``ids`` (left-padded, ``mask`` 0 on padding, at ``positions``; one
        prompt a row) into the rows ``prompts`` x ``repeats`` + 0 .. ``repeats`` - 1, right-aligned to
        the state's own positions; fp32 logits after each prompt's last token, ``repeats`` per prompt."""
        with torch.autocast("cpu", enabled=False):
            return self._prefill(prompts, ids, mask, positions, repeats)

    def _prefill(self, prompts, ids, mask, positions, repeats):
        lean, shared, own = self.lean, self.shared, self.length
        (r, w), h, kv, d = ids.shape, lean.heads, lean.kv_heads, lean.head_dim
        g, at = h // kv, own - w
        rows = (prompts[:, None] * repeats + torch.arange(repeats)).flatten()
        x = lean.embed(ids).view(r * w, -1)
        cos, sin = lean.rotary(x, positions.reshape(r * w, 1))  # (tokens, 1, d), broadcast over heads
        cos, sin = cos.float(), sin.float()
        sin = torch.cat((-sin[..., : d // 2], sin[..., d // 2 :]), -1)  # as in _step
        # query i sees key j <= i that is no padding; a padding query sees itself (finite, never used)
        seen = torch.ones((w, w), dtype=torch.bool).tril() & (mask.bool()[:, None, :] | torch.eye(w, dtype=torch.bool))
        bias = torch.zeros((r, 1, 1, w, shared + w))
        bias[..., shared:] = torch.zeros((r, w, w)).masked_fill_(~seen, float("-inf"))[:, None, None]
        for (norm_in, qkv_fn, o_fn, norm_mid, gate_up_fn, down_fn, scale, _), (pk, pv), (ok, ov) in zip(
            lean.layers, self.prefix, self.own, strict=True
        ):
            q, keys, values = qkv_fn.wide(_rms(norm_in, x))
            q, keys = q.view(r * w, h, d).float(), keys.view(r * w, kv, d).float()
            q, keys = q * cos + q.roll(d // 2, -1) * sin, keys * cos + keys.roll(d // 2, -1) * sin
            keys = keys.view(r, w, kv, d).transpose(1, 2)  # (r, kv, w, d)
            values = values.view(r, w, kv, d).transpose(1, 2).float()
            ok[rows, :, at:own] = keys.repeat_interleave(repeats, 0) if repeats > 1 else keys
            ov[rows, :, at:own] = values.repeat_interleave(repeats, 0) if repeats > 1 else values
            q = q.view(r, w, kv, g, d).permute(0, 2, 3, 1, 4)  # (r, kv, g, w, d)
            scores = q @ keys.unsqueeze(2).transpose(-1, -2)  # (r, kv, g, w, w)
            if shared:  # the prefix's keys, stored once
                pre = (q.transpose(0, 1).reshape(kv, r * g * w, d) @ pk).view(kv, r, g, w, shared)
                scores = torch.cat((pre.transpose(0, 1), scores), -1)
            p = torch.softmax(scores * scale + bias, -1)
            out = p[..., shared:] @ values.unsqueeze(2)  # (r, kv, g, w, d)
            if shared:
                pre = (p[..., :shared].transpose(0, 1).reshape(kv, r * g * w, shared) @ pv).view(kv, r, g, w, d)
                out = out + pre.transpose(0, 1)
            x = x + o_fn.wide(out.permute(0, 3, 1, 2, 4).reshape(r * w, h * d))[0]
            gate, up = gate_up_fn.wide(_rms(norm_mid, x))
            x = x + down_fn.wide(torch.nn.functional.silu(gate) * up)[0]
        pad = torch.zeros((r, w)).masked_fill_(mask == 0, float("-inf"))
        self.bias[rows, 0, 0, shared + at : shared + own] = pad.repeat_interleave(repeats, 0)
        logits = lean.head(_rms(lean.norm, x.view(r, w, -1)[:, -1])).float()
        return logits.repeat_interleave(repeats, 0) if repeats > 1 else logits

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
