"""bench/roofline.py's work model and bench/train_speed.py's use of it: counted from the shapes, checked
against the embedded model's parameter count and hand-worked cases."""

import os
import sys
from types import SimpleNamespace

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import roofline
import train_speed

SMOLLM2 = SimpleNamespace(  # SmolLM2-135M-Instruct's config.json
    num_hidden_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
)


def test_the_shape_counts_every_weight_of_the_embedded_model():
    shape = roofline.Shape.of(SMOLLM2)
    norms = (2 * 30 + 1) * 576
    assert shape.kv_dim == 192 and shape.linear_params + 49152 * 576 + norms == 134_515_008  # num_parameters()


def test_a_one_row_decode_is_bound_by_reading_the_weights():
    shape = roofline.Shape(layers=1, hidden=4, kv_dim=4, intermediate=8, vocab=10)
    machine = roofline.Machine(flops=1e30, bandwidth=1.0, weight_bytes=2)  # compute free: bytes decide
    weights = (shape.linear_params + 4 * 10) * 2
    got = roofline.generation_limit_s(shape, roofline.Batch(rows=1, prompt_width=3, completion_width=2), machine)
    cache = sum(1 * 1 * 2 * 4 * (3 + t) * 2 for t in range(2))
    assert got == pytest.approx(2 * weights + cache)


def test_the_loss_forward_and_backward_count_what_they_must_compute():
    shape = roofline.Shape(layers=2, hidden=8, kv_dim=4, intermediate=16, vocab=32)
    batch = roofline.Batch(rows=3, prompt_width=5, completion_width=2)
    n = 7
    linear = 3 * n * 2 * shape.linear_params
    attention = 3 * sum(4 * 2 * 8 * (n / 2) for _ in range(n))
    head = 3 * 2 * 2 * 8 * 32  # completion positions only
    assert roofline.loss_forward_flops(shape, batch) == pytest.approx(linear + attention + head)
    assert roofline.backward_flops(shape, batch) == pytest.approx(linear + 2 * attention + head)
    limits = roofline.phase_limits_s(shape, batch, roofline.Machine(flops=2.0, bandwidth=1.0))
    assert limits["loss_forward"] == pytest.approx((linear + attention + head) / 2)


def test_train_speed_turns_each_steps_phases_into_fractions_of_the_limit():
    """A worker's record as bench/train_speed.py prints it: the second step reused its round (no sampling)."""
    result = {
        "model_config": {k: getattr(SMOLLM2, k, None) for k in train_speed.MODEL_KEYS},
        "bf16": True,
        "step_s": [10.0, 4.0],
        "phases": [
            {
                "generation": {"s": 5.0, "shape": [16, 120, 48]},
                "loss_forward": {"s": 2.0, "shape": [16, 120, 48]},
                "backward": {"s": 2.5, "shape": None},
            },
            {"loss_forward": {"s": 1.5, "shape": [16, 120, 48]}, "backward": {"s": 2.0, "shape": None}},
        ],
    }
    machine = {"fp32_flops": 1e11, "bf16_flops": 4e11, "bandwidth": 1e10}
    got = train_speed.roofline_figures(result, machine)
    shape, batch = roofline.Shape.of(SMOLLM2), roofline.Batch(16, 120, 48)
    limits = roofline.phase_limits_s(shape, batch, roofline.Machine(4e11, 1e10))  # bf16: the bf16 rate
    assert got["phase_fraction_of_limit"]["generation"] == round(limits["generation"] / 5.0, 4)
    assert got["phase_fraction_of_limit"]["backward"] == round(2 * limits["backward"] / 4.5, 4)
    whole = limits["generation"] + 2 * (limits["loss_forward"] + limits["backward"])
    assert got["fraction_of_limit"] == round(whole / 14.0, 4) and 0 < got["fraction_of_limit"] < 1
    assert got["phase_s"]["generation"] == 2.5  # a mean per step: the step that reused its round sampled nothing


@pytest.mark.parametrize("bf16", [True, False])
def test_no_phase_can_beat_the_limit_on_a_cpu_that_emulates_bf16(bf16):
    """An AVX-512 CPU without avx512_bf16: the bf16 probe ran at 61 GFLOP/s, fp32 at 295. A step whose
    phases ran at the fp32 kernel's full rate (what its bf16 work can fall back to) is at 1.0 of the
    limit, never above it (it was 2.21 when the limit took the bf16 probe alone)."""
    shape, batch = roofline.Shape.of(SMOLLM2), roofline.Batch(16, 120, 48)
    fp32, slow_bf16, bandwidth = 295e9, 61e9, 1e10
    fastest = roofline.Machine(fp32, bandwidth, weight_bytes=2 if bf16 else 4)
    at_the_limit = roofline.phase_limits_s(shape, batch, fastest)  # a step as fast as this machine allows
    result = {
        "model_config": {k: getattr(SMOLLM2, k, None) for k in train_speed.MODEL_KEYS},
        "bf16": bf16,
        "step_s": [sum(at_the_limit.values())],
        "phases": [
            {
                "generation": {"s": at_the_limit["generation"], "shape": [16, 120, 48]},
                "loss_forward": {"s": at_the_limit["loss_forward"], "shape": [16, 120, 48]},
                "backward": {"s": at_the_limit["backward"], "shape": None},
            }
        ],
    }
    got = train_speed.roofline_figures(result, {"fp32_flops": fp32, "bf16_flops": slow_bf16, "bandwidth": bandwidth})
    assert got["fraction_of_limit"] == pytest.approx(1.0, abs=1e-3)
    assert all(f == pytest.approx(1.0, abs=1e-3) for f in got["phase_fraction_of_limit"].values())
    assert roofline.Machine.for_run(bf16, fp32, slow_bf16, bandwidth).flops == fp32


def test_the_work_is_what_no_path_can_skip():
    """A batch of 2 prompts x 2 rows: a 3-token prefix all share, 2 own tokens each, left padding; real
    completions of 1 and 3 tokens in a width of 3. Padding is no work; a group's prompt runs once."""
    import torch

    inputs = {
        "prompt_ids": torch.tensor([[0, 7, 7, 7, 1, 2]] * 2 + [[7, 7, 7, 3, 4, 5]] * 2),
        "prompt_mask": torch.tensor([[0, 1, 1, 1, 1, 1]] * 2 + [[1, 1, 1, 1, 1, 1]] * 2),
        "completion_mask": torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]]),
    }
    assert train_speed.real_work(inputs) == [3 + 2 + 3, 5 + 5 + 6 + 6, 7]
    shape = roofline.Shape(layers=1, hidden=4, kv_dim=4, intermediate=8, vocab=10)
    padded, real = roofline.Batch(4, 6, 3), roofline.Batch(4, 6, 3, *train_speed.real_work(inputs))
    assert roofline.loss_forward_flops(shape, real) < roofline.loss_forward_flops(shape, padded)
    linear = (8 + 7) * 2 * shape.linear_params
    assert roofline.loss_forward_flops(shape, real) >= linear + 7 * 2 * 4 * 10
