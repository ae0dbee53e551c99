"""Speed path for the cold start's supervised loss: the GRPO loss's paths (the shared prompt prefix
run once, rows packed without padding, the LM head in row blocks, frozen weights cast once) serving
SFTTrainer's completion-only cross-entropy, where they equal its own (checked on the first batch,
with fallback).

    python main.py --sft_steps 60 ...    # the cold start builds its trainer from FastSFTTrainer
    python main.py --fast_paths off ...  # TRL's SFTTrainer path only

Exactness (fp32 loss and LoRA gradients equal SFTTrainer's) is tested in tests/test_fast_sft.py;
gains in bench/README.md, "The cold start's steps".
"""

from __future__ import annotations

import contextlib
import logging

import torch
from accelerate.utils import AutocastKwargs
from transformers import DynamicCache
from trl import SFTTrainer

from trl_grpo.fast.decoding import shared_prefix_len
from trl_grpo.fast.lm_head import LeanChunkedLogProb
from trl_grpo.fast.merged_weights import FrozenCasts
from trl_grpo.fast.packed_logps import pair_cost, rows_per_pack

logger = logging.getLogger(__name__)

IGNORE = -100  # the collator's label for tokens without a loss (prompt, padding)


def split_rows(input_ids, attention_mask, labels) -> tuple[list[list[int]], list[list[int]]] | None:
    """Each row as (prompt tokens, completion tokens), or None where a row is not one run of unmasked
    tokens (right padding) whose labelled tokens are its last ones, after at least one prompt token.

    >>> ids, mask = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[1, 1, 1, 0]])
    >>> split_rows(ids, mask, torch.tensor([[-100, 2, 3, -100]]))
    ([[1]], [[2, 3]])
    >>> split_rows(ids, mask, torch.tensor([[1, 2, 3, -100]])) is None  # a loss on the first token
    True
    """
    prompts, completions = [], []
    for ids, mask, lab in zip(input_ids.tolist(), attention_mask.tolist(), labels.tolist(), strict=True):
        n = sum(mask)
        if mask[:n] != [1] * n:
            return None
        taught = [i for i in range(n) if lab[i] != IGNORE]
        if any(lab[i] != IGNORE for i in range(n, len(lab))):
            return None
        start = taught[0] if taught else n
        if start < 1 or taught != list(range(start, n)) or lab[start:n] != ids[start:n]:
            return None
        prompts.append(ids[:start])
        completions.append(ids[start:n])
    return prompts, completions


def packed_rows(rows: list[list[int]], per_pack: int, pad_id: int):
    """Whole rows packed ``per_pack`` to a sequence, each seeing only itself (and a shared prefix).

    Returns (ids (G, W), positions (G, W) counted from the row's start, mask (G, 1, W, W) boolean,
    where (G * W flat index of each row's first token)).

    >>> ids, pos, mask, where = packed_rows([[5, 6], [7]], 2, 0)
    >>> ids.tolist(), pos.tolist(), where
    ([[5, 6, 7]], [[0, 1, 0]], [0, 2])
    >>> mask[0, 0].int().tolist()  # the second row does not see the first
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    packs = [list(range(i, min(i + per_pack, len(rows)))) for i in range(0, len(rows), per_pack)]
    width = max(sum(len(rows[r]) for r in pack) for pack in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    owner = torch.full((len(packs), width), -1, dtype=torch.long)
    where = [0] * len(rows)
    for g, pack in enumerate(packs):
        at = 0
        for r in pack:
            m = len(rows[r])
            ids[g, at : at + m] = torch.tensor(rows[r], dtype=torch.long)
            positions[g, at : at + m] = torch.arange(m)
            owner[g, at : at + m] = r
            where[r] = g * width + at
            at += m
    index = torch.arange(width)
    causal = index[None, :] <= index[:, None]
    mask = causal & (owner[:, None, :] == owner[:, :, None]) & (owner[:, None, :] >= 0)
    mask |= torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty softmax row
    return ids, positions, mask[:, None], where


def sft_logps(backbone, lm_head, prompts, completions, *, pad_id: int = 0, outputs=("log_probs",)):
    """The log-probs of every completion token given the tokens before it, with gradients, as one
    flat tensor (rows in order), and the LM head's other ``outputs`` (entropy, is_top1) beside.

    The numbers of running each full row through the model: the prompt prefix every row shares
    (the chat-templated system prompt) runs once, its keys and values shared by all rows (gradients
    flow back through them); rows are packed, ``rows_per_pack`` of them a sequence, without padding;
    the vocabulary projection covers only the completion tokens.
    """
    rows = [p + c for p, c in zip(prompts, completions, strict=True)]
    shared = shared_prefix_len(prompts) if len(prompts) > 1 else 0
    own = [r[shared:] for r in rows]
    per_pack = rows_per_pack(
        [(0, [len(r) for r in own])], shared, pair_cost(backbone.config, lm_head.weight.device.type)
    )
    ids, positions, mask, where = packed_rows(own, per_pack, pad_id)
    device = lm_head.weight.device
    cache = None
    if shared:
        cache = DynamicCache(config=backbone.config)
        backbone(input_ids=torch.tensor([rows[0][:shared]], device=device), cache=cache, use_cache=True)
        cache.batch_repeat_interleave(ids.size(0))
        mask = torch.cat([mask.new_ones((*mask.shape[:3], shared)), mask], dim=-1)
    hidden = backbone(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=(positions + shared).to(device),
        cache=cache,
        use_cache=cache is not None,
    ).last_hidden_state
    # completion token k of a row is predicted by the state before it (never the shared prefix's:
    # split_rows keeps a prompt token, shared_prefix_len one more of each prompt)
    predictors = [
        where[r] + len(p) - shared - 1 + k
        for r, (p, c) in enumerate(zip(prompts, completions, strict=True))
        for k in range(len(c))
    ]
    targets = torch.tensor([t for c in completions for t in c], dtype=torch.long, device=device)
    hidden = hidden.reshape(-1, hidden.size(-1))[torch.tensor(predictors, dtype=torch.long, device=device)]
    logps, entropy, _, _, is_top1 = LeanChunkedLogProb.apply(
        hidden,
        lm_head.weight,
        lm_head.bias,
        targets,
        1.0,
        32768,
        None,
        1.0,
        tuple(o for o in outputs if o != "log_probs"),
    )
    return logps, entropy, is_top1


class FastSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer with the completion-only cross-entropy computed by ``sft_logps``.

    Used only where that holds: one unwrapped process, no gradient checkpointing, a plain LM head,
    the ``nll`` loss without label smoothing or a custom loss, no active dropout, rows the collator
    right-pads with the completion's labels last; the first batch checks its loss against
    SFTTrainer's own, falling back for good on a mismatch or an error.
    ``fast = False`` (``--fast_paths off``) runs SFTTrainer's path only.
    """

    fast = True
    fast_check = None  # the first-batch comparison with SFTTrainer's loss, once made
    frozen_casts = None
    _dropout = None  # whether the model has active dropout (then SFTTrainer's path), once looked at

    def _fast_ok(self, model) -> bool:
        if not self.fast or self.compute_loss_func is not None or self.label_smoother is not None:
            return False
        if self.args.loss_type != "nll" or self.aux_loss_enabled or self.args.gradient_checkpointing:
            return False
        if self.accelerator.unwrap_model(model) is not model or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return False
        if self._dropout is None:  # a prefix run once shares one dropout mask among its rows: not SFTTrainer's numbers
            self._dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
            self._dropout |= bool(getattr(model.config.get_text_config(), "attention_dropout", 0.0))
        if self._dropout:
            return False
        text_config = model.config.get_text_config()
        scaled = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
        return all(getattr(text_config, k, None) is None for k in scaled)

    def _fast_loss(self, model, rows, num_items_in_batch):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        device = base.get_output_embeddings().weight.device.type
        if self.frozen_casts is None:
            self.frozen_casts = FrozenCasts()
        with self.accelerator.autocast():
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
            frozen = self.frozen_casts.swapped(base, dtype, device)
        with self.accelerator.autocast(), frozen:
            logps, entropy, is_top1 = sft_logps(
                base.get_decoder(),
                base.get_output_embeddings(),
                *rows,
                pad_id=self.processing_class.pad_token_id or 0,
                outputs=("log_probs", "entropy", "is_top1"),
            )
        tokens = logps.numel() if num_items_in_batch is None else num_items_in_batch
        loss = -logps.sum() / torch.as_tensor(tokens, device=logps.device).clamp(min=1)
        return loss, entropy, is_top1

    def _check(self, model, inputs, rows, num_items_in_batch) -> bool:
        """Both losses on this batch without gradients; with fp32 weights both in fp32 (autocast off,
        as the GRPO check does), where they agree to ~1e-6; with bf16/fp16 weights as in training."""
        exact = model.dtype == torch.float32
        saved = self.accelerator.autocast_handler, model.__dict__.get("forward")
        metrics = {k: list(v) for k, v in self._metrics["train"].items()}
        total = self._total_train_tokens
        try:
            if exact:  # also the autocast accelerate wraps around the model's forward
                self.accelerator.autocast_handler = AutocastKwargs(enabled=False)
                if saved[1] is not None and hasattr(model, "_original_forward"):
                    model.forward = model._original_forward
            off = torch.autocast(model.device.type, enabled=False) if exact else contextlib.nullcontext()
            with torch.no_grad(), off:
                fast = self._fast_loss(model, rows, num_items_in_batch)[0].item()
                plain = super().compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch).item()
        except Exception as err:  # noqa: BLE001 - any failure means: use SFTTrainer's path
            self.fast_check = {"error": f"{type(err).__name__}: {err}", "passed": False}
            logger.warning("packed SFT loss failed on this model (%s: %s); using TRL's path", type(err).__name__, err)
            return False
        finally:
            self.accelerator.autocast_handler = saved[0]
            if saved[1] is not None:
                model.forward = saved[1]
            self._metrics["train"].clear()
            self._metrics["train"].update(metrics)
            self._total_train_tokens = total
        tol = 1e-4 if exact else 2e-2
        diff = abs(fast - plain) / max(abs(plain), 1e-6)
        self.fast_check = {
            "loss": fast,
            "trl_loss": plain,
            "relative_diff": diff,
            "tolerance": tol,
            "passed": diff <= tol,
        }
        if diff > tol:
            logger.warning(
                "packed SFT loss %.6g differs from TRL's %.6g (> %g relative); using TRL's path", fast, plain, tol
            )
            return False
        logger.info("packed SFT loss matches TRL's (relative difference %.2g)", diff)
        return True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = None
        laid_out = {"labels", "attention_mask"} <= set(inputs) and "position_ids" not in inputs  # not padding-free
        if not return_outputs and model.training and laid_out and self._fast_ok(model):
            rows = split_rows(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        if rows is not None and self.fast_check is None:
            self.fast = self._check(model, inputs, rows, num_items_in_batch)
        if rows is None or not self.fast:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, entropy, is_top1 = self._fast_loss(model, rows, num_items_in_batch)
        gather = self.accelerator.gather_for_metrics
        valid = gather(torch.tensor(is_top1.numel(), device=loss.device)).sum()
        entropy_sum, correct = gather(entropy.detach().sum()).sum(), gather(is_top1.sum()).sum()
        self._metrics["train"]["entropy"].append((entropy_sum / valid).item() if valid > 0 else 0.0)
        self._metrics["train"]["mean_token_accuracy"].append((correct / valid).item() if valid > 0 else 0.0)
        self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
        self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return loss

    def fast_report(self) -> dict:
        return {"packed_sft_loss": "used" if self.fast and self.fast_check else "not used", "check": self.fast_check}
