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
