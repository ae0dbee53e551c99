"""How fast this machine could run a GRPO step's phases: probes and a work model (a roofline).

A phase's limit is the larger of two times: its floating-point work over the measured matmul
rate (in the precision the phase runs), and the bytes it must read over the measured memory
bandwidth. ``fraction = limit / measured``: 1.0 would be the machine's ceiling.

The work is counted from the model's shape and the tokens the step really held, and only what
the phase cannot avoid: padding is no work, a prefix all prompts share passes the layers once,
and so does each distinct prompt (a group's rows share theirs); every linear layer of every
such position and real completion token, attention over the causal context, the LM head where
its output is needed. A path that did less than this would be wrong, so a phase can reach the
limit but not pass it (tests/test_roofline.py). Per phase:

  generation     prefill of the prompt positions (LM head on each row's last one), then one
                 decode step per position of the longest completion, the real tokens spread
                 over them: each step's matmuls, and the bytes it reads, the weights once (in
                 the sampling precision) and the keys and values so far; each step is limited
                 by the larger of the two.
  loss forward   the prompt positions and every real completion token through the layers, the
                 LM head on the completion tokens (the only ones the loss reads).
  backward       gradients with respect to activations through the frozen base weights (as many
                 FLOPs as the forward's linear layers and LM head) and attention's four products
                 (twice its forward); LoRA's own weight gradients are left out (under 2% here).

The optimizer step, reward scoring and Python overhead get no budget: they count against the step
as a whole (``fraction_of_limit`` divides the phases' limits by the whole step's wall time).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


def matmul_flops(size: int = 2048, repeats: int = 5, dtype=None) -> float:
    """Median matmul throughput of this machine (fp32 unless ``dtype``), FLOP/s."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def copy_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """Median memory bandwidth of a large tensor copy (bytes read + bytes written per second)."""
    import torch

    src = torch.ones(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


@dataclass(frozen=True)
class Shape:
    """What one forward of one token costs, from a decoder-only model's config."""

    layers: int
    hidden: int
    kv_dim: int  # key (and value) width: kv heads x head size
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shape:
        """From a transformers config (Llama/Qwen2-shaped: q,k,v,o and a gated MLP)."""
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return cls(
            config.num_hidden_layers, config.hidden_size, kv_heads * head, config.intermediate_size, config.vocab_size
        )

    @property
    def linear_params(self) -> int:
        """Weights every token multiplies by, LM head and embedding aside."""
        h = self.hidden
        return self.layers * (2 * h * h + 2 * h * self.kv_dim + 3 * h * self.intermediate)

    def attention_flops(self, context: float) -> float:
        """One token's attention products (scores and weighted values) over ``context`` positions."""
        return 4 * self.layers * self.hidden * context


@dataclass(frozen=True)
class Batch:
    """The tensor shapes a step's generation round produced (padded), and the work it holds.

    ``prompt_positions``: the prompt positions no path can skip (the prefix all prompts share once,
    then each distinct prompt's own tokens once: a group's rows share their prompt);
    ``prompt_tokens`` and ``completion_tokens``: the real tokens of every row. Left None (a record
    without them), the padded shape stands for the work.
    """

    rows: int
    prompt_width: int
    completion_width: int
    prompt_positions: float | None = None
    prompt_tokens: float | None = None
    completion_tokens: float | None = None

    @property
    def prompt_work(self) -> float:
        return self.rows * self.prompt_width if self.prompt_positions is None else self.prompt_positions

    @property
    def completion_work(self) -> float:
        return self.rows * self.completion_width if self.completion_tokens is None else self.completion_tokens

    @property
    def mean_prompt(self) -> float:
        return self.prompt_width if self.prompt_tokens is None else self.prompt_tokens / self.rows

    @property
    def mean_completion(self) -> float:
        return self.completion_work / self.rows


@dataclass(frozen=True)
class Machine:
    flops: float  # matmul FLOP/s in the phases' precision
    bandwidth: float  # bytes/s
    weight_bytes: int = 2  # bytes per weight and per cached key/value element while sampling

    @classmethod
    def for_run(cls, bf16: bool, fp32_flops: float, bf16_flops: float, bandwidth: float) -> Machine:
        """The limit of a run in its precision, from the fastest kernel the machine offers for it.

        A bf16 phase can always run on the fp32 kernel (bf16 widens to fp32 exactly), so its rate is
        the faster of the two probes: on a CPU that emulates bf16 (AVX-512 without avx512_bf16) the
        bf16 probe is several times slower than fp32, and taking it alone put a step at 2.21x "the
        limit". An fp32 run has fp32's rate and reads 4 bytes a weight while sampling.
        """
        flops = max(fp32_flops, bf16_flops) if bf16 else fp32_flops
        return cls(flops, bandwidth, weight_bytes=2 if bf16 else 4)


def generation_limit_s(shape: Shape, batch: Batch, machine: Machine) -> float:
    """The prompts' positions once, then one decode step per position of the longest completion; the
    rows' real tokens spread evenly over the steps (the even spread gives the least time)."""
    r, p, c = batch.rows, batch.mean_prompt, batch.completion_width
    head = 2 * shape.hidden * shape.vocab
    prefill = batch.prompt_work * (2 * shape.linear_params + shape.attention_flops(p / 2)) + r * head
    limit = prefill / machine.flops
    weights = (shape.linear_params + shape.hidden * shape.vocab) * machine.weight_bytes
    active = batch.completion_work / c if c else 0  # rows decoding at a step, on average
    for t in range(c):
        context = p + t
        flops = active * (2 * shape.linear_params + head + shape.attention_flops(context))
        cache = active * shape.layers * 2 * shape.kv_dim * context * machine.weight_bytes
        limit += max(flops / machine.flops, (weights + cache) / machine.bandwidth)
    return limit


def _attention_flops(shape: Shape, batch: Batch) -> float:
    """Prompt positions over half their prompt, completion tokens over the prompt and half the completion."""
    p, c = batch.mean_prompt, batch.mean_completion
    return batch.prompt_work * shape.attention_flops(p / 2) + batch.completion_work * shape.attention_flops(p + c / 2)


def loss_forward_flops(shape: Shape, batch: Batch) -> float:
    layers = (batch.prompt_work + batch.completion_work) * 2 * shape.linear_params + _attention_flops(shape, batch)
    return layers + batch.completion_work * 2 * shape.hidden * shape.vocab


def backward_flops(shape: Shape, batch: Batch) -> float:
    return loss_forward_flops(shape, batch) + _attention_flops(shape, batch)  # attention: 2x its forward


def phase_limits_s(shape: Shape, batch: Batch, machine: Machine) -> dict[str, float]:
    """Seconds each phase would take at this machine's limit for this batch."""
    return {
        "generation": generation_limit_s(shape, batch, machine),
        "loss_forward": loss_forward_flops(shape, batch) / machine.flops,
        "backward": backward_flops(shape, batch) / machine.flops,
    }


def fractions(measured_s: dict[str, list[float]], limits_s: list[dict[str, float]], steps_s: list[float]) -> dict:
    """``fraction_of_limit`` (the phases' limits over the steps' wall time) and one fraction per phase,
    all over the same timed steps. Phases a step did not run (no generation in a step that reused a
    round) count zero on both sides."""
    total_limit = sum(sum(step.values()) for step in limits_s)
    per_phase = {}
    for phase in limits_s[0]:
        spent = sum(measured_s[phase])
        per_phase[phase] = round(sum(step[phase] for step in limits_s) / spent, 4) if spent else None
    return {"fraction_of_limit": round(total_limit / sum(steps_s), 4), "phase_fraction_of_limit": per_phase}
