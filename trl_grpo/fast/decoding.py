"""Speed path for generation: run the prompt prefix a batch shares once, decode with rows that
leave the batch at their end, from merged (and, on CPU, packed) weights.

    python eval.py --fast_paths on ...      # evaluation: ``generate_batches``
    python main.py --fast_paths on ...      # training: ``SharedPrefixGenerate`` on TRL's model

Every piece here is tested against the stock transformers path it replaces (tests/test_decoding.py),
and ``--fast_paths off`` uses none of it. Measured gains: bench/README.md.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from trl_grpo.fast.kv_cache import cache_in_fp32, expanded_prefix_cache, prefix_cache, reserved_layer, rows_that_fit
from trl_grpo.fast.lean_decode import LeanDecoder
from trl_grpo.fast.merged_weights import generation_weights, packed_linears
from trl_grpo.models.hardware import free_memory_bytes
from trl_grpo.models.sampling import (
    Sampling,
    end_ids,
    generate_stock,
    other_sampling,
    plain_sampling_settings,
    sample_rows,
)

logger = logging.getLogger(__name__)

# Prompts per chunk of ``lean_prefill``: enough rows for the linear layers to run at full speed,
# few enough that a chunk of length-sorted prompts holds little padding.
PREFILL_ROWS = 32


# ---------------------------------------------------------------- the shared-prefix layout
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


def group_size(rows: list[list[int]]) -> int:
    """k where ``rows`` are each of their distinct rows k times in a row (TRL's sampler lays a
    GRPO generation batch out so), else 1.

    >>> group_size([[1, 2], [1, 2], [3], [3]]), group_size([[1], [1], [1], [2]]), group_size([[1], [1]])
    (2, 1, 2)
    """
    k = next((i for i, r in enumerate(rows) if r != rows[0]), len(rows))
    if k < 2 or len(rows) % k or any(rows[i] != rows[i - i % k] for i in range(len(rows))):
        return 1
    return k


def shared_prefix_layout(rows, pad_id: int, shared: int, width: int | None = None):
    """(ids, mask, prompt_width): rows laid out as [prefix][padding][own tokens], padding masked."""
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


# ---------------------------------------------------------------- the decode loop
class _CachedSteps:
    """Decode steps through the model itself, over a KV cache of rows laid out as its ``mask`` says."""

    def __init__(self, model, cache, mask):
        self.model, self.cache, self.mask = model, cache, mask

    def step(self, tokens, positions):
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=positions[:, None],
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def select(self, rows) -> None:
        for layer in self.cache.layers:
            layer.batch_select_indices(rows)
        self.mask = self.mask[rows]


def decode_compacting(
    model, ids, mask, cache, max_new_tokens: int, eos_ids, temperature: float = 0.0, repeats: int = 1
):
    """Greedy (or sampled) decoding that drops each row from the batch as soon as it ends.

    ``model.generate`` keeps computing finished rows until the longest one stops; on a CPU,
    where a decode step costs about the same per row whatever the batch, that waste is a large
    share of evaluation time. Same model calls as ``generate`` (the cache holds the shared
    prefix, ``ids``/``mask`` the full padded rows, positions come from the mask). Returns one
    list of new token ids per row, each ending at its first end-of-sequence token.

    With ``repeats`` = k > 1, each row is decoded k times (row 0's k samples first): its prompt
    runs once and the prompt's keys, values and last logits are copied to the k samples, instead
    of prefilling k identical rows (a third of a pass@8 evaluation's time here, bench/README.md).
    """
    cache = cache if cache is not None else DynamicCache(config=model.config)
    done_at = cache.get_seq_length()
    room = ids.shape[1] - done_at + max_new_tokens
    if all(type(layer) is DynamicLayer for layer in cache.layers):  # full-attention layers only
        kv_dtype = torch.float32 if cache_in_fp32(model) else None
        cache.layers = [reserved_layer(room, like=layer, dtype=kv_dtype) for layer in cache.layers]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids[:, done_at:],
        attention_mask=mask,
        position_ids=positions[:, done_at:],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits, last = out.logits[:, -1, :].float(), positions[:, -1]
    if repeats > 1:  # the prompts ran once each: copy them to their samples
        logits, mask, last = (t.repeat_interleave(repeats, 0) for t in (logits, mask, last))
        for layer in cache.layers:
            layer.batch_repeat_interleave(repeats)
    return _decode(_CachedSteps(model, cache, mask), logits, last, max_new_tokens, eos_ids, temperature)


def _decode(steps, logits, last_pos, max_new_tokens: int, eos_ids, temperature: float):
    """The decode loop from the prompts' last ``logits`` (rows at ``last_pos``) on: ``steps`` runs a
    step (``step(tokens, positions)``) and drops rows (``select(rows)``)."""
    eos = torch.tensor(sorted(eos_ids), device=logits.device)
    active = torch.arange(logits.shape[0], device=logits.device)
    outputs: list[list[int]] = [[] for _ in range(logits.shape[0])]
    nxt = None
    for step in range(max_new_tokens):
        if step:
            logits = steps.step(nxt, last_pos)
        nxt = sample_rows(logits, temperature) if temperature > 0 else logits.argmax(-1)
        finished = torch.isin(nxt, eos)
        for row, token in zip(active.tolist(), nxt.tolist(), strict=True):
            outputs[row].append(token)
        keep = (~finished).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < active.numel():
            keep = kept_in_place(keep)
            steps.select(keep)
            active, nxt, last_pos = active[keep], nxt[keep], last_pos[keep]
        last_pos = last_pos + 1
    return outputs


def kept_in_place(keep):
    """The surviving rows ``keep`` (ascending) in the order that moves fewest: survivors already
    among the first ``len(keep)`` slots stay there, the last ones fill the freed slots.

    >>> kept_in_place(torch.tensor([0, 2, 3, 5, 7])).tolist()
    [0, 5, 2, 3, 7]
    """
    m = keep.numel()
    order, freed = torch.arange(m, device=keep.device), torch.ones(m, dtype=torch.bool, device=keep.device)
    freed[keep[keep < m]] = False
    order[freed] = keep[keep >= m]
    return order


def lean_prefill(model, lean, rows, pad_id: int, shared: int, device, room: int, repeats: int = 1, cache=None):
    """The prompts' last logits (``repeats`` rows per prompt, in order), their last positions and
    ``lean``'s state holding their keys and values, for token ``rows`` sharing their first ``shared``
    tokens (whose KV cache at batch 1 ``cache`` may hold; else the model runs them). The prompts'
    own tokens run through the lean step's layers in chunks of ``PREFILL_ROWS`` prompts of similar
    length, each padded only to its longest: one evaluation batch of 128 prompts padded to its
    longest ran ~50% more tokens than it holds. ``room``: new tokens to make space for."""
    prefix = (cache if cache is not None else prefix_cache(model, rows[0][:shared], device)) if shared else None
    state = lean.start(prefix, shared, len(rows) * repeats, max(map(len, rows)) - shared, room)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    logits = None
    for start in range(0, len(rows), PREFILL_ROWS):
        idx = order[start : start + PREFILL_ROWS]
        ids, mask, _ = shared_prefix_layout([rows[i] for i in idx], pad_id, shared)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        where = torch.tensor(idx)
        out = state.prefill(where, ids[:, shared:], mask[:, shared:], positions[:, shared:], repeats)
        if logits is None:
            logits = out.new_empty((len(rows) * repeats, out.shape[-1]))
        logits[(where[:, None] * repeats + torch.arange(repeats)).flatten()] = out
    last = torch.tensor([len(r) - 1 for r in rows]).repeat_interleave(repeats)
    return logits, last, state


def decode_shared_prefix(
    model,
    rows,
    pad_id: int,
    shared: int,
    device,
    max_new_tokens: int,
    eos_ids,
    temperature: float = 0.0,
    *,
    cache=None,
    repeats: int = 1,
    lean=None,
):
    """New tokens for token ``rows`` (each sampled ``repeats`` times, in order) by
    ``decode_compacting`` on the [prefix][padding][own tokens] layout, the ``shared``-token
    prefix run once (or taken from ``cache``, its KV cache at batch 1) and each row's own
    tokens once whatever ``repeats``. With ``lean`` (a ``lean_decode.LeanDecoder``), the model runs
    the prompts (``lean_prefill``) and the lean step every token after: the same logits to
    rounding, not bit for bit (tests/test_lean_decode.py)."""
    if lean is not None:
        logits, last, state = lean_prefill(model, lean, rows, pad_id, shared, device, max_new_tokens, repeats, cache)
        return _decode(state, logits, last, max_new_tokens, eos_ids, temperature)
    ids, mask, _ = shared_prefix_layout(rows, pad_id, shared)
    ids, mask = ids.to(device), mask.to(device)
    cache = expanded_prefix_cache(model, rows[0][:shared], device, len(rows), cache) if shared else None
    return decode_compacting(model, ids, mask, cache, max_new_tokens, eos_ids, temperature, repeats)


def lean_decoder(model, device_type: str) -> tuple[LeanDecoder | None, str | None]:
    """``model``'s lean decode step for its weights as they stand, else None and why not."""
    why = "not on CPU" if device_type != "cpu" else LeanDecoder.why_not(model)
    if why is None:
        free = free_memory_bytes(device_type)
        weights = sum(m.weight.nbytes for m in model.modules() if type(m) is torch.nn.Linear)
        if free is not None and weights > free / 4:
            why = "its packed copy of the weights would take over a quarter of free memory"
    return (None, why) if why else (LeanDecoder(model), None)


class SharedPrefixGenerate:
    """Drop-in for a PEFT model's ``generate`` that samples with the adapter merged and runs the
    prompt prefix a batch shares only once.

    TRL's GRPOTrainer generates a whole group batch whose prompts all start with the same system
    prompt; installed on the trainer's model, this removes that repeated prefill (with
    ``shared=True``) and the unmerged adapter's per-layer cost (``generation_weights``; with
    ``autocast_dtype``, sampling runs under that autocast from weights cast once). Rows come in
    left-padded and go out with the same prompt width, so TRL's slicing of completions holds.
    Calls the decode loop does not reproduce go to ``generate`` (merged weights still); any error
    switches the hook to plain ``generate`` for good (logged once). With ``lean``, decode steps
    after the prompts run ``lean_decode``'s step where the model allows (``lean_skipped`` says why
    not), from its own packed copy of the merged weights (so the model's layers are not packed).
    """

    def __init__(self, model, pad_id: int, shared: bool = True, autocast_dtype=None, lean: bool = True):
        self.model, self.inner, self.pad_id, self.shared, self.autocast_dtype = (
            model,
            model.generate,
            pad_id,
            shared,
            autocast_dtype,
        )
        self.lean = lean
        self.failed = None  # the error that switched this hook off, if any
        self.stepped_aside = None  # sampling settings the decode loop leaves to transformers' generate
        self.lean_skipped = None  # why the lean decode step was not used, once known

    def __call__(self, input_ids=None, attention_mask=None, **kwargs):
        if self.failed is None:
            try:
                return self._fast(input_ids, attention_mask, **kwargs)
            except Exception as err:  # noqa: BLE001 - any failure of the speed path: use the stock one
                self.failed = f"{type(err).__name__}: {err}"
                logger.warning("fast generation failed (%s); using transformers' generate from now on", self.failed)
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def _fast(self, input_ids=None, attention_mask=None, **kwargs):
        device_type = input_ids.device.type if input_ids is not None else "cpu"
        autocast = torch.autocast(device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with generation_weights(self.model, self.autocast_dtype), autocast, torch.no_grad():
            plan = self._plan(input_ids, attention_mask, kwargs)
            lean = self._lean(device_type) if plan is not None else None
            with packed_linears(self.model, device_type) if lean is None else contextlib.nullcontext():
                if plan is None:
                    return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                return self._decode(input_ids, *plan, lean)

    def _plan(self, input_ids, attention_mask, kwargs):
        """``(rows, shared prefix length, sampling, end ids)`` where the decode loop reproduces the call,
        else None (``generate`` then runs it)."""
        if input_ids is None or attention_mask is None or {"cache", "past_key_values"} & set(kwargs):
            return None
        plain = (
            plain_sampling_settings(kwargs.get("generation_config"))
            if set(kwargs) <= {"generation_config", "pad_token_id"}
            else None
        )
        if plain is None:  # sampling the decode loop does not reproduce (top-p, penalties, ...)
            reason = other_sampling(kwargs["generation_config"]) if "generation_config" in kwargs else []
            if reason and self.stepped_aside is None:
                self.stepped_aside = ", ".join(reason)
                logger.info("sampling with %s: transformers' generate samples (merged weights)", self.stepped_aside)
            return None
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask, strict=True)]
        shared = shared_prefix_len(rows) if self.shared and len(rows) > 1 else 0
        return (rows, shared, *plain)

    def _lean(self, device_type: str):
        """The lean decode step for the weights as they stand (merged), or None (``lean_skipped`` why)."""
        if not self.lean:
            return None
        lean, self.lean_skipped = lean_decoder(self.model, device_type)
        return lean

    def _decode(self, input_ids, rows, shared: int, sampling: Sampling, end: tuple[int, ...], lean=None):
        """``decode_compacting`` (rows leave the batch at their end), laid out like ``generate``'s
        output: the prompts as given, then new tokens, padded after each row's end."""
        width = input_ids.shape[1]
        k = group_size(rows)  # GRPO's groups: each prompt k times in a row, prefilled once
        new = decode_shared_prefix(
            self.model,
            rows[::k],
            self.pad_id,
            shared,
            input_ids.device,
            sampling.max_new_tokens,
            end,
            sampling.temperature,
            repeats=k,
            lean=lean,
        )
        out = torch.full(
            (len(rows), width + max(map(len, new))), self.pad_id, dtype=input_ids.dtype, device=input_ids.device
        )
        out[:, :width] = input_ids
        for i, tokens in enumerate(new):
            out[i, width : width + len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
        return out


# ---------------------------------------------------------------- batches of prompts (evaluation)


def generate_batches(
    model,
    tokenizer,
    prompts: list[str],
    sampling: Sampling,
    device: str,
    fast: bool = True,
    on_batch=None,
    lean: LeanDecoder | bool = True,
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Completions (``sampling.samples`` per prompt) and their token ids (each up to and including its end-of-sequence
    token), in prompt order.

    Prompts are tokenized exactly as TRL tokenizes text prompts. With ``fast`` (the default), the
    token prefix all prompts share (system prompt and chat template) is run through the model
    once and its KV cache reused by every batch; each batch then holds [prefix][left padding][own
    tokens], with the padding masked out, so positions and outputs match an unpadded run.
    Batches go longest first; a row leaves its batch as soon as it ends (``_decode``). On CPU, where
    the model allows (``lean``: True, or a ``lean_decode.LeanDecoder``, or False), prompts run in
    chunks of similar length (``lean_prefill``) and every decode step after through the lean step:
    the same logits to rounding, 128/128 identical completions in bench/eval_speed.py; else the
    model's own step from packed weights (``packed_linears``). Without ``fast``: transformers'
    ``generate`` on left-padded batches, nothing else. Only generated tokens are decoded.
    ``on_batch(indices, texts, token_ids)`` is called after each batch with its prompts' results.
    """
    from tqdm import tqdm

    fast = fast and sampling.plain  # the decode loop reproduces plain sampling only
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = shared_prefix_len(encoded) if fast and sampling.batch_size > 1 else 0
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    texts: list[list[str]] = [[] for _ in prompts]
    token_ids: list[list[list[int]]] = [[] for _ in prompts]
    k, batch = sampling.samples, sampling.batch_size
    fit = rows_that_fit(model, device, max(map(len, encoded)) + sampling.max_new_tokens)
    if fit is not None and batch * k > fit:
        batch = max(1, fit // k)
        logger.info(
            "Batch of %d prompts x %d samples lowered to %d prompts: its KV cache must fit a quarter of free memory",
            sampling.batch_size,
            k,
            batch,
        )
    end = end_ids(model, tokenizer)
    torch.manual_seed(sampling.seed)
    if lean is True:
        lean = lean_decoder(model, torch.device(device).type)[0] if fast else None
    # the lean step packs its own weights; transformers' prefill then runs at sizes packing barely helps
    packed = packed_linears(model, device) if fast and not lean else contextlib.nullcontext()
    with packed, torch.inference_mode():
        cache = prefix_cache(model, encoded[0][:shared], device) if shared else None
        for start in tqdm(range(0, len(order), batch), desc="Generating", unit="batch"):
            idx = order[start : start + batch]
            rows = [encoded[i] for i in idx]
            if fast:
                new = decode_shared_prefix(
                    model,
                    rows,
                    tokenizer.pad_token_id,
                    shared,
                    device,
                    sampling.max_new_tokens,
                    end,
                    sampling.temperature,
                    cache=cache,
                    repeats=k,
                    lean=lean or None,
                )
            else:
                new = generate_stock(model, rows, tokenizer.pad_token_id, end, sampling, device)
            for row, tokens in enumerate(new):
                i = idx[row // k]
                texts[i].append(tokenizer.decode(tokens, skip_special_tokens=True))
                token_ids[i].append(tokens)
            if on_batch is not None:
                on_batch(idx, [texts[i] for i in idx], [token_ids[i] for i in idx])
    return texts, token_ids
