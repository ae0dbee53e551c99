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

from fast_weights import generation_weights, packed_linears
from kv_cache import cache_in_fp32, expanded_prefix_cache, prefix_cache, reserved_layer, rows_that_fit
from lean_decode import LeanDecoder
from model_utils import free_memory_bytes
from sampling import Sampling, end_ids, generate_stock

logger = logging.getLogger(__name__)


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


def sample_rows(logits, temperature: float):
    """One token per row from softmax(logits / temperature), by inverse CDF.

    The same distribution as ``torch.multinomial`` (what HF ``generate`` uses), for one uniform
    draw per row instead of an exponential per vocabulary entry (timings: bench/README.md, "Where
    the speed paths' figures live").
    """
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum_(-1)
    u = torch.rand(cdf.shape[0], 1, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[1] - 1)


# Generation settings the plain decode loop reproduces, with their neutral values; anything
# else set in a GenerationConfig sends the call to HF ``generate``.
_NEUTRAL_GENERATION = {
    "top_k": (None, 0),
    "top_p": (None, 1.0),
    "min_p": (None, 0.0),
    "typical_p": (None, 1.0),
    "top_h": (None,),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "min_new_tokens": (None, 0),
    "min_length": (None, 0),
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "use_cache": (None, True),
}
_IGNORED_GENERATION = {
    "max_new_tokens",
    "max_length",
    "do_sample",
    "temperature",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "disable_compile",
    "transformers_version",
    "_from_model_config",
}


def plain_sampling_settings(generation_config) -> tuple[Sampling, tuple[int, ...]] | None:
    """``(sampling, end ids)`` when ``generation_config`` asks for nothing but plain sampling (or
    greedy decoding) up to ``max_new_tokens``; None otherwise.

    >>> from transformers import GenerationConfig
    >>> config = GenerationConfig(do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=8, eos_token_id=2)
    >>> sampling, end = plain_sampling_settings(config)
    >>> sampling.max_new_tokens, sampling.temperature, sampling.plain, end
    (8, 0.7, True, (2,))
    >>> plain_sampling_settings(GenerationConfig(do_sample=True, top_p=0.9, max_new_tokens=8)) is None
    True
    """
    if generation_config is None or not generation_config.max_new_tokens or other_sampling(generation_config):
        return None
    eos = generation_config.eos_token_id
    eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(sorted(eos))
    temperature = (generation_config.temperature or 1.0) if generation_config.do_sample else 0.0
    return Sampling(generation_config.max_new_tokens, temperature), eos


def other_sampling(generation_config) -> list[str]:
    """The settings of ``generation_config`` beyond plain sampling (``top_p=0.9``, ...), which the decode
    loop does not reproduce."""
    return [
        f"{key}={value}"
        for key, value in generation_config.to_diff_dict().items()
        if key not in _IGNORED_GENERATION and value not in _NEUTRAL_GENERATION.get(key, (None,))
    ]


# ---------------------------------------------------------------- the decode loop
def decode_compacting(
    model, ids, mask, cache, max_new_tokens: int, eos_ids, temperature: float = 0.0, repeats: int = 1, lean=None
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

    With ``lean`` (a ``lean_decode.LeanDecoder``), the model runs the prompts and the lean step every
    token after (same logits to rounding, not bit for bit; training's sampling only).
    """
    cache = cache if cache is not None else DynamicCache(config=model.config)
    done_at = cache.get_seq_length()
    room = ids.shape[1] - done_at + max_new_tokens
    if all(type(layer) is DynamicLayer for layer in cache.layers):  # full-attention layers only
        kv_dtype = torch.float32 if cache_in_fp32(model) else None
        cache.layers = [reserved_layer(room, like=layer, dtype=kv_dtype) for layer in cache.layers]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    eos = torch.tensor(sorted(eos_ids), device=ids.device)
    active = torch.arange(ids.shape[0] * repeats, device=ids.device)
    outputs: list[list[int]] = [[] for _ in range(ids.shape[0] * repeats)]
    step_ids, step_pos = ids[:, done_at:], positions[:, done_at:]
    last_pos = positions[:, -1]
    state = None  # the lean step's keys and values, once it takes over
    for step in range(max_new_tokens):
        if state is not None:
            logits = state.step(step_ids[:, 0], step_pos[:, 0])
        else:
            logits = (
                model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1, :]
                .float()
            )
        if step == 0 and repeats > 1:  # the prompts ran once each: copy them to their samples
            logits = logits.repeat_interleave(repeats, 0)
            for layer in cache.layers:
                layer.batch_repeat_interleave(repeats)
            mask, last_pos = mask.repeat_interleave(repeats, 0), last_pos.repeat_interleave(repeats, 0)
        if step == 0 and lean is not None:
            state = lean.start(cache, mask, done_at, max_new_tokens)
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
            if state is not None:
                state.select(keep)
            else:
                for layer in cache.layers:
                    layer.batch_select_indices(keep)
            active, nxt, mask, last_pos = active[keep], nxt[keep], mask[keep], last_pos[keep]
        if state is None:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        step_ids, step_pos = nxt[:, None], last_pos[:, None]
    return outputs


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
    tokens once whatever ``repeats``; ``lean``: see ``decode_compacting``."""
    ids, mask, _ = shared_prefix_layout(rows, pad_id, shared)
    ids, mask = ids.to(device), mask.to(device)
    cache = expanded_prefix_cache(model, rows[0][:shared], device, len(rows), cache) if shared else None
    return decode_compacting(model, ids, mask, cache, max_new_tokens, eos_ids, temperature, repeats, lean)


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
        self.lean_skipped = "not on CPU" if device_type != "cpu" else LeanDecoder.why_not(self.model)
        if self.lean_skipped is None:
            free = free_memory_bytes(device_type)
            weights = sum(m.weight.nbytes for m in self.model.modules() if type(m) is torch.nn.Linear)
            if free is not None and weights > free / 4:
                self.lean_skipped = "its packed copy of the weights would take over a quarter of free memory"
        return None if self.lean_skipped else LeanDecoder(self.model)

    def _decode(self, input_ids, rows, shared: int, sampling: Sampling, end: tuple[int, ...], lean=None):
        """``decode_compacting`` (rows leave the batch at their end), laid out like ``generate``'s
        output: the prompts as given, then new tokens, padded after each row's end."""
        width = input_ids.shape[1]
        k = group_size(rows)  # GRPO's groups: each prompt k times in a row, prefilled once
        new = decode_shared_prefix(
            self.model, rows[::k], self.pad_id, shared, input_ids.device, sampling.max_new_tokens, end,
            sampling.temperature, repeats=k, lean=lean,
        )  # fmt: skip
        out = torch.full(
            (len(rows), width + max(map(len, new))), self.pad_id, dtype=input_ids.dtype, device=input_ids.device
        )
        out[:, :width] = input_ids
        for i, tokens in enumerate(new):
            out[i, width : width + len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
        return out


# ---------------------------------------------------------------- batches of prompts (evaluation)


def generate_batches(
    model, tokenizer, prompts: list[str], sampling: Sampling, device: str, fast: bool = True, on_batch=None
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Completions (``sampling.samples`` per prompt) and their token ids (each up to and including its end-of-sequence
    token), in prompt order.

    Prompts are tokenized exactly as TRL tokenizes text prompts. With ``fast`` (the default), the
    token prefix all prompts share (system prompt and chat template) is run through the model
    once and its KV cache reused by every batch; each batch then holds [prefix][left padding][own
    tokens], with the padding masked out, so positions and outputs match an unpadded run.
    Batches go longest first; a row leaves its batch as soon as it ends
    (``decode_compacting``), and linear layers run from packed weights on CPU
    (``packed_linears``). Without ``fast``: transformers' ``generate`` on
    left-padded batches, nothing else. Only generated tokens are decoded. ``on_batch(indices,
    texts, token_ids)`` is called after each batch with that batch's prompts' results.
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
    packed = packed_linears(model, device) if fast else contextlib.nullcontext()
    with packed, torch.inference_mode():
        cache = prefix_cache(model, encoded[0][:shared], device) if shared else None
        for start in tqdm(range(0, len(order), batch), desc="Generating", unit="batch"):
            idx = order[start : start + batch]
            rows = [encoded[i] for i in idx]
            if fast:
                new = decode_shared_prefix(
                    model, rows, tokenizer.pad_token_id, shared, device, sampling.max_new_tokens, end,
                    sampling.temperature, cache=cache, repeats=k,
                )  # fmt: skip
            else:
                new = generate_stock(model, rows, tokenizer.pad_token_id, end, sampling, device)
            for row, tokens in enumerate(new):
                i = idx[row // k]
                texts[i].append(tokenizer.decode(tokens, skip_special_tokens=True))
                token_ids[i].append(tokens)
            if on_batch is not None:
                on_batch(idx, [texts[i] for i in idx], [token_ids[i] for i in idx])
    return texts, token_ids
