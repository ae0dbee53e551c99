"""Speed path for the loss: log-probs on the prompt prefix a batch shares and on each prompt's rows
packed together, and the GRPOTrainer subclass that uses them where they equal TRL's own (checked
on the first batch, with fallback).

    python main.py --fast_paths on ...      # train.py builds its trainer from FastLogpsTrainer

``--fast_paths off`` keeps TRL's path only. Exactness (fp32 log-probs, entropies and LoRA
gradients equal TRL's function) is tested in tests/test_fast_logps.py; gains in bench/README.md.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from accelerate.utils import AutocastKwargs
from transformers import DynamicCache
from trl import GRPOTrainer

from trl_grpo.fast.decoding import SharedPrefixGenerate, shared_prefix_len
from trl_grpo.fast.lm_head import LeanChunkedLogProb
from trl_grpo.fast.merged_weights import FrozenCasts

logger = logging.getLogger(__name__)


# What one (query, key) pair of the loss's attention costs against one position through the linear
# layers, per FLOP: torch's CPU attention kernel ran at ~38 GFLOP/s where the layers' bf16 matmuls
# ran at ~500 (2026-12-03, bench/README.md "Each prompt's rows packed for the loss"); GPU attention
# kernels keep closer to their matmuls.
ATTENTION_FLOP_WEIGHT = {"cpu": 13.0}
ATTENTION_FLOP_WEIGHT_ELSEWHERE = 2.0


def pair_cost(config, device_type: str) -> float:
    """One attention (query, key) pair's cost in positions through the linear layers, for a
    Llama-shaped ``config`` (q/k/v/o and a gated MLP): 4 x hidden FLOPs against 2 x the layer's weights."""
    hidden = config.hidden_size
    head = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head, (getattr(config, "num_key_value_heads", None) or 1) * head
    weights = 2 * hidden * q + 2 * hidden * kv + 3 * hidden * config.intermediate_size
    weight = ATTENTION_FLOP_WEIGHT.get(device_type, ATTENTION_FLOP_WEIGHT_ELSEWHERE)
    return weight * 4 * q / (2 * weights)


def rows_per_pack(groups: list[tuple[int, list[int]]], shared: int, cost_per_pair: float) -> int:
    """How many rows of one prompt to pack into one sequence, for the least work: packs of all of them
    run the prompt once and pad nothing, but a pack's attention grows with the square of its width,
    so long completions in large groups go fewer to a pack (1: each row alone, right-padded).

    Args:
        groups: (own prompt length, completion lengths of its rows) per prompt.
        shared: the shared prefix's length (keys every position also attends to).
        cost_per_pair: ``pair_cost``.

    >>> rows_per_pack([(16, [30, 25, 48, 20])] * 4, 105, 0.004)  # the default recipe: all 4 in one
    4
    >>> rows_per_pack([(16, [400, 512, 380, 450, 500, 512, 300, 420])] * 2, 105, 0.004)  # long ones
    1
    """
    best, best_cost = 1, None
    largest = max(len(lengths) for _, lengths in groups)
    for m in sorted({1, largest, *(2**i for i in range(1, largest.bit_length()))}):
        widths = [own + sum(lengths[i : i + m]) for own, lengths in groups for i in range(0, len(lengths), m)]
        width = max(widths)
        cost = len(widths) * width * (1 + cost_per_pair * (shared + width))
        if best_cost is None or cost < best_cost:
            best, best_cost = m, cost
    return best


def packed_layout(own: list[list[int]], completions: list[list[int]], pad_id: int, per_pack: int | None = None):
    """Rows that share a prompt packed into one sequence: [the prompt's own tokens][each row's completion].

    A GRPO batch holds each prompt ``num_generations`` times and pads every completion to the longest;
    packed, each prompt's tokens run once and no completion is padded (16 rows of the default recipe:
    1,024 positions -> ~600). The mask lets a completion token see the prompt and the tokens of its own
    row before it, so each hidden state is the one its full padded row would give.

    Args:
        own: each row's prompt tokens after the shared prefix (rows with equal lists share a sequence).
        completions: each row's completion tokens (its unmasked ones, in order).
        per_pack: at most this many rows in one sequence (``rows_per_pack``; None: no limit).
    Returns:
        (ids (G, W), positions (G, W) counted from the end of the shared prefix, mask (G, 1, W, W)
        boolean, predictors: one flat index into the (G * W) hidden states per completion token, rows
        in order, each token's the state before it).

    >>> ids, pos, mask, pred = packed_layout([[5], [5]], [[6, 7], [8]], 0)
    >>> ids.tolist(), pos.tolist(), pred
    ([[5, 6, 7, 8]], [[0, 1, 2, 1]], [0, 1, 0])
    >>> mask[0, 0].int().tolist()  # the second row's token sees the prompt, not the first row
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]]
    >>> packed_layout([[5], [5]], [[6, 7], [8]], 0, per_pack=1)[0].tolist()  # one row a sequence
    [[5, 6, 7], [5, 8, 0]]
    """
    groups: dict[tuple, list[int]] = {}
    for row, tokens in enumerate(own):
        groups.setdefault(tuple(tokens), []).append(row)
    step = per_pack or len(own)
    packs = [(p, rows[i : i + step]) for p, rows in groups.items() for i in range(0, len(rows), step)]
    width = max(len(p) + sum(len(completions[r]) for r in rows) for p, rows in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    owner = torch.full((len(packs), width), -1, dtype=torch.long)  # 0: the prompt, r + 1: row r, -1: padding
    predictors: list[list[int]] = [[] for _ in own]
    for g, (prompt, rows) in enumerate(packs):
        n, at = len(prompt), len(prompt)
        ids[g, :n], positions[g, :n], owner[g, :n] = torch.tensor(prompt, dtype=torch.long), torch.arange(n), 0
        for r in rows:
            m = len(completions[r])
            ids[g, at : at + m] = torch.tensor(completions[r], dtype=torch.long)
            positions[g, at : at + m] = torch.arange(n, n + m)
            owner[g, at : at + m] = r + 1
            # token k is predicted by the state before it: the prompt's last for k = 0, else token k - 1
            predictors[r] = [g * width + n - 1] + [g * width + at + k for k in range(m - 1)] if m else []
            at += m
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]
    keys, queries = owner[:, None, :], owner[:, :, None]
    mask = causal & (keys >= 0) & ((keys == 0) | (keys == queries))
    mask |= torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty softmax row (NaN gradients)
    return ids, positions, mask[:, None], [i for p in predictors for i in p]


def packable(attention_mask, logits_to_keep: int) -> bool:
    """Whether ``shared_prefix_logps`` takes these rows: each prompt mask is zeros then ones (TRL's
    left padding) with a token, and each completion mask ones then zeros (TRL's, up to the end
    token); other masks go to TRL's path."""
    prompt, completion = attention_mask[:, :-logits_to_keep], attention_mask[:, -logits_to_keep:]
    left_padded = bool((prompt.flip(1).cumprod(dim=1) == prompt.flip(1)).all())
    return left_padded and bool(prompt.any(dim=1).all()) and bool((completion.cumprod(dim=1) == completion).all())


def shared_prefix_logps(
    backbone,
    lm_head,
    input_ids,
    attention_mask,
    logits_to_keep: int,
    *,
    temperature: float = 1.0,
    compute_entropy: bool = False,
    pad_id: int = 0,
):
    """Log-probs (and entropies) of each row's last ``logits_to_keep`` tokens, with gradients.

    The same numbers as running every full row through the model and taking the completion
    positions (TRL's ``_get_per_token_logps_and_entropies``), for less work: the prompt prefix
    every row shares (the chat-templated system prompt, most of each prompt here) runs once,
    its keys and values shared by all rows (gradients flow back through them); the rows of a
    prompt run as one packed sequence (``packed_layout``: its own tokens once, completions without
    padding); and the vocabulary projection covers only the real completion tokens.

    Args:
        backbone: the decoder stack (``model.get_decoder()``; LoRA layers inside it count).
        lm_head: the output projection (``model.get_output_embeddings()``).
        input_ids, attention_mask: (B, P + C) prompts (any padding) then completions.
        logits_to_keep: C, the completion width.
    Returns:
        (log-probs, entropies or None), each (B, C), 0 where the completion mask is 0.
    """
    if not packable(attention_mask, logits_to_keep):
        raise ValueError("rows without a prompt token or with holes in a completion mask: use TRL's path")
    prompt_ids, prompt_mask = input_ids[:, :-logits_to_keep], attention_mask[:, :-logits_to_keep]
    completion_ids, valid = input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:].bool()
    rows = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
    shared = shared_prefix_len(rows) if len(rows) > 1 else 0
    completions = [c[:n] for c, n in zip(completion_ids.tolist(), valid.sum(dim=1).tolist(), strict=True)]
    own = [r[shared:] for r in rows]
    groups: dict[tuple, tuple[int, list[int]]] = {}
    for tokens, completion in zip(own, completions, strict=True):
        groups.setdefault(tuple(tokens), (len(tokens), []))[1].append(len(completion))
    per_pack = rows_per_pack(list(groups.values()), shared, pair_cost(backbone.config, input_ids.device.type))
    ids, positions, mask, predictors = packed_layout(own, completions, pad_id, per_pack)
    cache = None
    if shared:
        cache = DynamicCache(config=backbone.config)
        backbone(input_ids=input_ids.new_tensor([rows[0][:shared]]), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(ids.size(0))
        mask = torch.cat([mask.new_ones((*mask.shape[:3], shared)), mask], dim=-1)
    hidden = backbone(
        input_ids=ids.to(input_ids.device),
        attention_mask=mask.to(input_ids.device),
        position_ids=(positions + shared).to(input_ids.device),
        cache=cache,
        use_cache=cache is not None,
    ).last_hidden_state
    hidden = hidden.reshape(-1, hidden.size(-1))[torch.tensor(predictors, dtype=torch.long, device=hidden.device)]
    weight, bias = lm_head.weight, lm_head.bias
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    logps, entropy, *_ = LeanChunkedLogProb.apply(  # TRL's kernel; its CPU backward in cache-sized blocks
        hidden, weight, bias, completion_ids[valid], temperature, 32768, None, 1.0, outputs
    )
    # masked_scatter keeps an all-padding batch connected to the graph (a zero gradient, not an error)
    logps = logps.new_zeros(valid.shape).masked_scatter(valid, logps)
    entropy = entropy.new_zeros(valid.shape).masked_scatter(valid, entropy) if compute_entropy else None
    return logps, entropy


class FastLogpsTrainer(GRPOTrainer):
    """TRL's GRPOTrainer, with the loss's log-probs computed on the shared prompt prefix once and each
    prompt's rows packed into one sequence.

    ``shared_prefix_logps`` gives the numbers TRL's own path gives for about a fifth of the token
    positions here (16 rows x 169 -> ~670).
    It is used only where that holds: one unwrapped process (no DDP, FSDP or DeepSpeed wrapper
    around the model), text only, no gradient checkpointing, a plain LM head; and the first call
    checks it against TRL's path on real rows, falling back for good on a mismatch or an error.
    ``shared_prefix = False`` (``--fast_paths off``) runs TRL's path only.
    """

    shared_prefix = True
    _fast_checked = False
    fast_logps_check = None  # the first-batch comparison with TRL's path, once made
    generate_hook = None  # the fast sampling hook on the model, once installed
    frozen_casts = None  # the frozen weights' autocast-dtype copies (merged_weights.FrozenCasts)

    def install_fast_generate(self, bf16_autocast: bool = False) -> None:
        """Sample through ``decoding.SharedPrefixGenerate``: the adapter merged, the shared system prompt run
        once per generation batch; under bf16 autocast (weights cast once) where training autocasts fp32
        weights."""
        dtype = torch.bfloat16 if bf16_autocast and self.model.dtype == torch.float32 else None
        self.generate_hook = SharedPrefixGenerate(self.model, self.processing_class.pad_token_id, autocast_dtype=dtype)
        self.model.generate = self.generate_hook

    def fast_paths_report(self) -> dict:
        """Which speed paths ran: each may have fallen back (failed its check, raised) or stepped aside."""
        hook = self.generate_hook
        if hook is None:
            generate = "not installed"
        elif hook.failed:
            generate = f"fell back: {hook.failed}"
        else:
            generate = f"stepped aside for {hook.stepped_aside}" if hook.stepped_aside else "used"
        if not self.shared_prefix:
            logps = "fell back"
        else:
            logps = "used" if self._fast_checked else "not used"
        lean = None if hook is None else "not used" if not hook.lean else hook.lean_skipped or "used"
        return {
            "generate_hook": generate,
            "lean_decode": lean,  # "used", "not used", or why the model cannot take it (trl_grpo/fast/lean_decode.py)
            "fast_logps": logps,
            "fast_logps_check": self.fast_logps_check,
        }

    def _fast_logps_ok(self, model, compute_aux_loss, extra) -> bool:
        if not self.shared_prefix or compute_aux_loss or any(v is not None for v in extra.values()):
            return False
        if self.accelerator.unwrap_model(model) is not model or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return False
        if self.args.gradient_checkpointing or self.args.cast_lm_head_to_fp32:
            return False
        text_config = model.config.get_text_config()
        scaled = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
        return all(getattr(text_config, k, None) is None for k in scaled)

    def _fast_logps(self, model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        logps, entropies = [], []
        step = batch_size or input_ids.size(0)
        device = input_ids.device.type
        if self.frozen_casts is None:
            self.frozen_casts = FrozenCasts()
        for start in range(0, input_ids.size(0), step):
            with self.accelerator.autocast():
                dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
                frozen = self.frozen_casts.swapped(base, dtype, device)
            with self.accelerator.autocast(), frozen:
                lp, ent = shared_prefix_logps(
                    base.get_decoder(),
                    base.get_output_embeddings(),
                    input_ids[start : start + step],
                    attention_mask[start : start + step],
                    logits_to_keep,
                    temperature=self.temperature,
                    compute_entropy=compute_entropy,
                    pad_id=self.processing_class.pad_token_id or 0,
                )
            logps.append(lp)
            entropies.append(ent)
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _check_fast_logps(self, model, input_ids, attention_mask, logits_to_keep):
        """Compare both paths on up to 4 rows (the first two, usually of one prompt, so packed
        together; the middle and the last), without gradients. True/False: use the fast path from now
        on or never; None: no tokens yet.

        With fp32 weights both run in fp32 (autocast off, including the autocast accelerate
        wraps around the model's forward), where they agree to ~1e-6 nats per token, so even a
        small layout mistake shows. With bf16/fp16 weights they run as in training, where
        rounding the two orders of work differs by ~0.02 nats on average; a layout mistake is
        off by nats.
        """
        n = input_ids.size(0)
        rows = torch.tensor(sorted({0, min(1, n - 1), n // 2, n - 1}))
        args = (model, input_ids[rows], attention_mask[rows], logits_to_keep)
        exact = model.dtype == torch.float32
        saved = self.accelerator.autocast_handler, model.__dict__.get("forward")
        try:
            if exact:
                self.accelerator.autocast_handler = AutocastKwargs(enabled=False)
                if saved[1] is not None and hasattr(model, "_original_forward"):
                    model.forward = model._original_forward
            with (
                torch.no_grad(),
                torch.autocast(input_ids.device.type, enabled=False) if exact else contextlib.nullcontext(),
            ):
                fast, _, _ = self._fast_logps(*args, None, False)
                plain, _, _ = super()._get_per_token_logps_and_entropies(*args)
        except Exception as err:  # noqa: BLE001 - any failure means: use TRL's path
            self.fast_logps_check = {"error": f"{type(err).__name__}: {err}", "passed": False}
            logger.warning(
                "shared-prefix log-probs failed on this model (%s: %s); using TRL's path", type(err).__name__, err
            )
            return False
        finally:
            self.accelerator.autocast_handler = saved[0]
            if saved[1] is not None:
                model.forward = saved[1]
        mask = attention_mask[rows, -logits_to_keep:].bool()
        if not mask.any():
            return None
        tol = 1e-3 if exact else 0.1
        diff = (fast - plain).abs()[mask].mean().item()
        self.fast_logps_check = {
            "mean_abs_diff": diff,
            "tokens": int(mask.sum()),
            "tolerance": tol,
            "passed": diff <= tol,
        }
        if diff > tol:
            logger.warning(
                "shared-prefix log-probs differ from TRL's by %.3g nats per token on average (> %g); using TRL's path",
                diff,
                tol,
            )
            return False
        logger.info(
            "shared-prefix log-probs match TRL's path (mean |difference| %.2g nats over %d tokens)",
            diff,
            int(mask.sum()),
        )
        return True

    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        **extra,
    ):
        if self._fast_logps_ok(model, compute_aux_loss, extra) and packable(attention_mask, logits_to_keep):
            if not self._fast_checked:
                verdict = self._check_fast_logps(model, input_ids, attention_mask, logits_to_keep)
                self._fast_checked = verdict is not None
                self.shared_prefix = verdict is not False
            if self.shared_prefix:
                return self._fast_logps(model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy)
        return super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **extra
        )
