"""How fast this machine could run a GRPO step's phases: probes and a work model (a roofline).

A phase's limit is the larger of two times: its floating-point work over the measured matmul
rate (in the precision the phase runs), and the bytes it must read over the measured memory
bandwidth. ``fraction = limit / measured``: 1.0 would be the machine's ceiling.

The work is counted from the model's shape and the tensor shapes the step really processed,
padding included (a padded position costs what a real one does), and only what the phase
cannot avoid in that shape: every linear layer of every processed token, attention over the
causal context, the LM head where its output is needed. Per phase:

  generation     prefill of each padded prompt (LM head on its last position only), then one
                 decode step per completion position for every row: each step's matmuls, and
                 the bytes it reads, the weights once (in the sampling precision) and every
                 row's keys and values so far; each step is limited by the larger of the two.
  loss forward   every row's prompt + completion through the layers, the LM head on the
                 completion positions (the only ones the loss reads).
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
    """The tensor shapes a step's generation round produced (all padded)."""

    rows: int
    prompt_width: int
    completion_width: int


@dataclass(frozen=True)
class Machine:
    flops: float  # matmul FLOP/s in the phases' precision
    bandwidth: float  # bytes/s
    weight_bytes: int = 2  # bytes per weight and per cached key/value element while sampling


def generation_limit_s(shape: Shape, batch: Batch, machine: Machine) -> float:
    r, p, c = batch.rows, batch.prompt_width, batch.completion_width
    head = 2 * shape.hidden * shape.vocab
    prefill = r * (p * 2 * shape.linear_params + shape.attention_flops(p / 2) * p) + r * head
    limit = prefill / machine.flops
    weights = (shape.linear_params + shape.hidden * shape.vocab) * machine.weight_bytes
    for t in range(c):
        context = p + t
        flops = r * (2 * shape.linear_params + head + shape.attention_flops(context))
        cache = r * shape.layers * 2 * shape.kv_dim * context * machine.weight_bytes
        limit += max(flops / machine.flops, (weights + cache) / machine.bandwidth)
    return limit


def loss_forward_flops(shape: Shape, batch: Batch) -> float:
    r, n = batch.rows, batch.prompt_width + batch.completion_width
    layers = r * n * 2 * shape.linear_params + r * shape.attention_flops(n / 2) * n
    return layers + r * batch.completion_width * 2 * shape.hidden * shape.vocab


def backward_flops(shape: Shape, batch: Batch) -> float:
    r, n = batch.rows, batch.prompt_width + batch.completion_width
    return loss_forward_flops(shape, batch) + r * shape.attention_flops(n / 2) * n  # attention: 2x its forward


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
