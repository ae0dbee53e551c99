"""The training sampler's decode step for Llama-family models on CPU, without transformers'
per-call machinery, and with the shared system prompt's keys and values read once for all rows.

A decode step through transformers runs about a hundred small torch ops per layer (dtype casts,
views, mask and cache bookkeeping, autocast checks) around seven matmuls; at 16 rows on 2 cores
those cost as much as the matmuls themselves (profile: bench/README.md, "A lean decode step").
This step runs the same arithmetic in the same dtypes as transformers' step under the caller's
autocast: the linear layers as fast_weights left them (merged, cast, packed), one RMSNorm op,
and cascade attention: each row's query scores the shared prefix's keys (stored once) and the
row's own keys, one softmax over both, so the prefix is not read once per row. (Fusing q/k/v and
gate/up into one matmul each saved ~2 ms a step but cost ~0.25 s a round to copy and pack the
weights: bench/README.md.)

    lean = LeanDecoder.of(model)            # inside generation_weights(): the weights it samples with
    state = lean.start(cache, mask, shared, room)   # after transformers ran the prompts
    logits = state.step(ids, positions)     # one new token per row
    state.select(keep)                      # rows that go on

decoding.decode_compacting uses it when its caller asks (the training generate hook); evaluation
keeps transformers' step, whose fp32 tokens the original loop must match exactly. Results equal
transformers' step to rounding (tests/test_lean_decode.py). ``LeanDecoder.why_not`` names what a
model lacks; such a model samples through transformers as before.
"""

from __future__ import annotations

import torch

# Families whose decoder layer is exactly: RMSNorm, q/k/v (bias optional), rotary embedding, GQA
# attention, o_proj, residual; RMSNorm, SiLU-gated MLP, residual; final RMSNorm and a linear head.
FAMILIES = ("llama", "qwen2")


def _weight(module):
    """(weight, bias) a linear module computes with now: a plain ``nn.Linear``, or a LoRA layer
    whose adapter generation_weights merged into its base layer (and switched off); else None."""
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias
    base = getattr(module, "base_layer", None)
    if type(base) is torch.nn.Linear and getattr(module, "_disable_adapters", False):
        return base.weight, base.bias
    return None


def _linear(module):
    """The function computing ``module`` as it stands: the packed forward ``packed_linears``
    installed (nothing is packed again), else torch's linear in the weight's dtype."""
    weight, bias = _weight(module)
    layer = module if type(module) is torch.nn.Linear else module.base_layer
    packed = layer.__dict__.get("forward")  # fast_weights.packed_linears puts it there
    if packed is not None:
        return packed
    return lambda x: torch.nn.functional.linear(x.to(weight.dtype), weight, bias)


class LeanDecoder:
    """A model's decode step, calling the linear layers as they stand (merged, cast, packed by
    fast_weights' contexts): it copies no weights, so building it costs nothing per round."""

    @staticmethod
    def why_not(model) -> str | None:
        """Why this model cannot take the lean step (None: it can)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config
        device = next(base.parameters()).device.type
        if device != "cpu":
            return f"on {device} (the lean step is a CPU path)"
        if cfg.model_type not in FAMILIES:
            return f"model type {cfg.model_type!r} (supported: {', '.join(FAMILIES)})"
        if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "use_sliding_window", False):
            return "an activation other than SiLU or sliding-window attention"
        if getattr(cfg, "mlp_bias", False):
            return "a biased MLP"
        decoder = base.get_decoder()
        for layer in decoder.layers:
            names = ("q_proj", "k_proj", "v_proj", "o_proj")
            if any(_weight(getattr(layer.self_attn, n)) is None for n in names) or any(
                _weight(getattr(layer.mlp, n)) is None for n in ("gate_proj", "up_proj", "down_proj")
            ):
                return "a linear layer that is neither plain nor a merged LoRA layer"
        if _weight(base.get_output_embeddings()) is None:
            return "an LM head that is not a plain linear layer"
        return None

    @classmethod
    def of(cls, model) -> LeanDecoder | None:
        """The lean step for ``model`` as its weights stand now, or None where ``why_not``."""
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
                {
                    "norm_in": layer.input_layernorm,
                    "norm_mid": layer.post_attention_layernorm,
                    "q": _linear(a.q_proj),
                    "k": _linear(a.k_proj),
                    "v": _linear(a.v_proj),
                    "o": _linear(a.o_proj),
                    "gate": _linear(m.gate_proj),
                    "up": _linear(m.up_proj),
                    "down": _linear(m.down_proj),
                    "scaling": a.scaling,
                }
            )
        self.head = _linear(base.get_output_embeddings())

    def start(self, cache, mask, shared: int, room: int) -> LeanState:
        """Take over from transformers after it ran the prompts into ``cache`` (rows laid out
        [shared prefix][padding][own tokens], ``mask`` marking real tokens): the prefix's keys
        and values once, each row's own ones with ``room`` free positions."""
        return LeanState(self, cache, mask, shared, room)


def _rms(norm, x):
    """transformers' Llama/Qwen2 RMSNorm on an fp32 residual stream, as one op."""
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), norm.weight.float(), norm.variance_epsilon)


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


class LeanState:
    """The keys and values of one decode loop: the shared prefix's once (kv heads, length, dim),
    the rows' own in reserved room (rows, kv heads, room, dim), all fp32 like the CPU attention."""

    def __init__(self, lean: LeanDecoder, cache, mask, shared: int, room: int):
        self.lean = lean
        own = cache.layers[0].keys.shape[2] - shared  # the mask may already cover the next token
        self.length = own
        self.prefix, self.own = [], []
        for layer in cache.layers:
            keys, values = layer.keys, layer.values
            self.prefix.append((keys[0, :, :shared].float().contiguous(), values[0, :, :shared].float().contiguous()))
            k = keys.new_zeros((keys.shape[0], keys.shape[1], own + room, keys.shape[-1]), dtype=torch.float32)
            v = torch.zeros_like(k)
            k[:, :, :own], v[:, :, :own] = keys[:, :, shared:], values[:, :, shared:]
            self.own.append((k, v))
        self.valid = torch.zeros((mask.shape[0], own + room), dtype=torch.bool, device=mask.device)
        self.valid[:, :own] = mask[:, shared : shared + own].bool()

    def select(self, keep):
        """Keep only the rows ``keep`` (indices): one copy of the rows' own keys and values."""
        self.own = [(k[keep], v[keep]) for k, v in self.own]
        self.valid = self.valid[keep]

    def step(self, ids, positions):
        """Logits (fp32, rows x vocabulary) for one new token per row: ``ids`` and their
        ``positions`` (rows,). Linear layers run in their weights' dtype; everything else in fp32,
        as transformers' step does under bf16 autocast with the CPU fp32 attention."""
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            return self._step(ids, positions)

    def _step(self, ids, positions):
        lean, n = self.lean, ids.shape[0]
        h, kv, d = lean.heads, lean.kv_heads, lean.head_dim
        at = self.length
        if at >= self.valid.shape[1]:
            raise RuntimeError("the lean decode state ran out of reserved room")
        self.valid[:, at] = True
        valid = self.valid[:, None, None, : at + 1]
        x = lean.embed(ids).float()
        cos, sin = lean.rotary(x[:, None], positions[:, None])
        cos, sin = cos.float(), sin.float()  # (rows, 1, head_dim): broadcast over heads
        for layer, (pk, pv), (ok, ov) in zip(lean.layers, self.prefix, self.own, strict=True):
            normed = _rms(layer["norm_in"], x)
            q = _rotate(layer["q"](normed).float().view(n, h, d), cos, sin)
            ok[:, :, at] = _rotate(layer["k"](normed).float().view(n, kv, d), cos, sin)
            ov[:, :, at] = layer["v"](normed).float().view(n, kv, d)
            q = q.view(n, kv, h // kv, d) * layer["scaling"]  # each kv head's query heads together
            scores = torch.matmul(q, ok[:, :, : at + 1].transpose(-1, -2)).masked_fill(~valid, float("-inf"))
            if pk.shape[1]:
                shared = torch.einsum("bkgd,kpd->bkgp", q, pk)
                weights = torch.softmax(torch.cat((shared, scores), -1), -1)
                out = torch.einsum("bkgp,kpd->bkgd", weights[..., : pk.shape[1]], pv)
                out = out + torch.matmul(weights[..., pk.shape[1] :], ov[:, :, : at + 1])
            else:
                out = torch.matmul(torch.softmax(scores, -1), ov[:, :, : at + 1])
            x = x + layer["o"](out.reshape(n, h * d)).float()
            normed = _rms(layer["norm_mid"], x)
            x = x + layer["down"](torch.nn.functional.silu(layer["gate"](normed)) * layer["up"](normed)).float()
        self.length = at + 1
        return lean.head(_rms(lean.norm, x)).float()
