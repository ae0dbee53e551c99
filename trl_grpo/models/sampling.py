"""How completions are sampled and where one ends: one settings object and the stock generation
every generator shares (evaluation, the preflight, the GPU check, training's generate hook).

    sampling = Sampling(max_new_tokens=96, temperature=0.7, samples=4)
    new = generate_stock(model, token_rows, pad_id, end_ids(model, tokenizer), sampling, "cpu")

``plain_sampling_settings`` says whether a transformers ``GenerationConfig`` asks for nothing the
fast decode loop does not reproduce; ``sample_rows`` draws its tokens.

A completion ends at the first of its model's end tokens (``end_ids``: the tokenizer's and every
one the generation config lists; Qwen2.5-Instruct lists two); one cut at ``max_new_tokens`` has
none (``cut_at_end`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """What a generator samples: ``samples`` completions per prompt, ``batch_size`` prompts at a time,
    up to ``max_new_tokens`` each; ``temperature`` 0 is greedy. ``top_p``, ``top_k``, ``min_p`` and
    ``repetition_penalty`` at their neutral values are off (the fast decode loop reproduces only that)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    samples: int = 1
    batch_size: int = 1
    seed: int = 0

    @property
    def plain(self) -> bool:
        """Nothing but temperature (or greedy): what the fast decode loop reproduces exactly.

        >>> Sampling(8, 0.7).plain, Sampling(8, 0.7, top_p=0.9).plain
        (True, False)
        """
        return self.top_p == 1.0 and self.top_k == 0 and not self.min_p and self.repetition_penalty == 1.0

    def generation_config(self, pad_id: int, end: tuple[int, ...]):
        """transformers' ``GenerationConfig`` for these settings, with no model default left in
        (a checkpoint's ``top_k=50`` would otherwise apply)."""
        from transformers import GenerationConfig

        knobs = {}
        if self.temperature > 0:
            knobs = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
            if self.min_p:
                knobs["min_p"] = self.min_p
        if self.repetition_penalty != 1.0:
            knobs["repetition_penalty"] = self.repetition_penalty
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=self.temperature > 0,
            num_return_sequences=self.samples,
            pad_token_id=pad_id,
            eos_token_id=list(end),
            **knobs,
        )


def end_ids(model, tokenizer) -> tuple[int, ...]:
    """The token ids that end a completion of ``model``: the tokenizer's end token and every one its
    generation config lists, sorted."""
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = [] if listed is None else [listed] if isinstance(listed, int) else list(listed)
    return tuple(sorted({tokenizer.eos_token_id, *listed} - {None}))


def cut_at_end(tokens: list[int], end: tuple[int, ...] | set[int]) -> tuple[list[int], bool]:
    """``(tokens up to and including the first end token, whether one was found)``.

    >>> cut_at_end([5, 6, 2, 0, 0], (2,)), cut_at_end([5, 6], (2,))
    (([5, 6, 2], True), ([5, 6], False))
    """
    at = next((j + 1 for j, t in enumerate(tokens) if t in end), None)
    return (tokens[:at], True) if at else (list(tokens), False)


def left_pad(rows: list[list[int]], pad_id: int, device):
    """``(ids, mask)``: token rows left-padded to the longest, padding masked out."""
    import torch

    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def generate_stock(model, rows: list[list[int]], pad_id: int, end: tuple[int, ...], sampling: Sampling, device):
    """transformers' ``generate`` on left-padded token ``rows``, ``sampling.samples`` completions each
    (in order): each completion's new tokens up to and including its first end token."""
    ids, mask = left_pad(rows, pad_id, device)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=sampling.generation_config(pad_id, end))
    return [cut_at_end(tokens, end)[0] for tokens in out[:, ids.shape[1] :].tolist()]


def sample_rows(logits, temperature: float):
    """One token per row from softmax(logits / temperature), by inverse CDF.

    The same distribution as ``torch.multinomial`` (what HF ``generate`` uses), for one uniform
    draw per row instead of an exponential per vocabulary entry (timings: bench/README.md, "Where
    the speed paths' figures live").
    """
    import torch

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
