"""Weights for generation: LoRA merged in, cast once to the sampling dtype, and on CPU packed
for oneDNN; the trained weights are put back untouched afterwards.

    with generation_weights(model, torch.bfloat16), packed_linears(model, "cpu"): ...

Used by trl_grpo/fast/decoding.py (the training generate hook and eval's batches) when fast paths are on;
tests/test_decoding.py compares each against the plain weights. Gains: bench/README.md.
"""

from __future__ import annotations

import contextlib

import torch

from trl_grpo.models.hardware import cpu_has_bf16, free_memory_bytes


@contextlib.contextmanager
def generation_weights(model, dtype=None):
    """Inside the block, linear layers run from fresh generation weights: LoRA merged in, and in
    ``dtype`` (the autocast dtype the caller samples under) when given.

    Unmerged, every adapted layer costs two extra small matmuls per call, which in a decode loop
    (one token per row per call) cost more than the layer itself. Under bf16 autocast, frozen
    fp32 weights are cast again on every call; pre-cast copies skip that, and a bf16 product at
    decode batch sizes is faster than fp32 on CPUs with native bf16 (figures: bench/README.md,
    "Where the speed paths' figures live").
    PEFT's ``merge_adapter`` rewrites the base weights in place and unmerging does not restore
    them bit for bit, so each layer's weight is swapped for a new tensor and the original one is
    put back afterwards, untouched. For generation only (no gradients flow inside). Models with
    other adapter layers (DoRA, quantized, embeddings) keep their adapters unmerged.
    """
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no PEFT: only casts
        LoraLinear = BaseTunerLayer = ()  # noqa: N806 - isinstance(x, ()) is False
    tuners = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    merge = all(
        type(m) is LoraLinear
        and not m.merged
        and not m.disable_adapters
        and not any(m.use_dora.get(a) for a in m.active_adapters)
        for m in tuners
    )
    swapped = []  # (module holding the weight, original weight, tuner layer whose adapter was switched off)
    try:
        with torch.no_grad():
            if merge:
                for layer in tuners:
                    weight = layer.base_layer.weight
                    merged = None  # weight + each delta: the same sums as adding them to a copy, one pass less
                    for name in layer.active_adapters:
                        delta = layer.get_delta_weight(name).to(weight.dtype)
                        merged = weight.detach() + delta if merged is None else merged.add_(delta)
                    merged = weight.detach().clone() if merged is None else merged
                    swapped.append((layer.base_layer, weight, layer))
                    layer.base_layer.weight = torch.nn.Parameter(merged.to(dtype or weight.dtype), requires_grad=False)
                    layer._disable_adapters = True
            if dtype is not None:  # the rest; merged layers' own modules are done or switched off
                done = {id(m) for layer in tuners for m in layer.modules()} if merge else set()
                for module in model.modules():
                    if type(module) is torch.nn.Linear and id(module) not in done and module.weight.dtype != dtype:
                        swapped.append((module, module.weight, None))
                        module.weight = torch.nn.Parameter(module.weight.detach().to(dtype), requires_grad=False)
        yield
    finally:
        for module, weight, tuner in swapped:
            module.weight = weight
            if tuner is not None:
                tuner._disable_adapters = False


def _packable_dtypes(device: str) -> tuple:
    """Weight dtypes oneDNN packs here: fp32, and bf16 where the CPU computes it natively (oneDNN
    refuses to pack bf16 on AVX2-only CPUs); none off CPU or without oneDNN."""
    ops = torch.ops.mkldnn
    usable = (
        device == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )
    if not usable:
        return ()
    return (torch.float32, torch.bfloat16) if cpu_has_bf16() else (torch.float32,)


def linear_fn(weight, bias, device: str = "cpu"):
    """``x -> x @ weight.T + bias`` computed in ``weight``'s dtype (the input is cast to it), from a
    oneDNN-packed copy of the weight where ``_packable_dtypes`` allows (see ``packed_linears``)."""
    weight = weight.detach()
    bias = None if bias is None else bias.detach().to(weight.dtype)
    dtype = weight.dtype
    if dtype not in _packable_dtypes(device):
        return lambda x: torch.nn.functional.linear(x.to(dtype), weight, bias)
    ops = torch.ops.mkldnn
    packed = ops._reorder_linear_weight(weight, 64)  # 64: the batch size it is tuned for
    return lambda x: ops._linear_pointwise(x.to(dtype), packed, bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(model, device: str = "cpu"):
    """Inside the block, every plain linear layer runs through oneDNN with its weight packed once.

    On CPU, torch's default matmul for ``x @ W.T`` at decode sizes leaves much of the machine
    idle; a pre-packed oneDNN weight does not (figures: bench/README.md, "Where the speed paths'
    figures live"). This is the packing torch's own compiler
    applies to frozen CPU models (``torch.ops.mkldnn._reorder_linear_weight``). fp32 results
    differ from the default kernel's by rounding only (~1e-6 relative); bf16 ones are equal.
    No gradients inside. Skipped (a no-op) off CPU, without oneDNN, or when a packed copy of the
    weights would take more than a quarter of free memory; bf16 layers are left unpacked on CPUs
    without native bf16 (AVX2 only), where oneDNN refuses to pack them.
    """
    dtypes = _packable_dtypes(device)
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.dtype in dtypes]
    free = free_memory_bytes(device) if layers else None
    if not layers or (free is not None and sum(m.weight.nbytes for m in layers) > free / 4):
        yield
        return
    try:
        with torch.no_grad():
            for layer in layers:
                layer.forward = linear_fn(layer.weight, layer.bias, device)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


class FrozenCasts:
    """Copies of a model's frozen linear weights in the autocast dtype, made once and swapped in
    for each loss pass, so autocast does not cast them again on every call.

    Under CPU bf16 autocast every linear layer casts its fp32 weight to bf16 on each call (torch
    caches casts only of weights that require gradients), and the LM head's log-prob kernel casts
    each vocabulary chunk of its weight, forward and backward; frozen weights never change, so one
    copy serves the whole run. The copy is exactly what autocast would have made (the same
    rounding of the same tensor), so log-probs and gradients are bit for bit the same (tested);
    a weight changed in place is copied again. CPU only (measured there, bench/README.md), and
    skipped when the copies would take more than a quarter of the free memory.
    """

    def __init__(self):
        self.copies: dict[int, tuple] = {}  # id(weight) -> (weight, its version when copied, copy)

    def copy_of(self, weight, dtype):
        kept = self.copies.get(id(weight))
        if kept is None or kept[0] is not weight or kept[1] != weight._version or kept[2].dtype != dtype:
            kept = (weight, weight._version, torch.nn.Parameter(weight.detach().to(dtype), requires_grad=False))
            self.copies[id(weight)] = kept
        return kept[2]

    @contextlib.contextmanager
    def swapped(self, model, dtype, device: str, skip=()):
        """Inside, frozen fp32 ``nn.Linear`` weights of ``model`` (not the modules in ``skip``) are
        their ``dtype`` copies; a no-op without a dtype or off CPU."""
        skipped = {id(m) for m in skip}
        layers = []
        if dtype is not None and dtype != torch.float32 and device == "cpu":
            layers = [
                m
                for m in model.modules()
                if type(m) is torch.nn.Linear
                and id(m) not in skipped
                and m.weight.dtype == torch.float32
                and not m.weight.requires_grad
            ]
        free = free_memory_bytes(device) if layers else None
        needed = sum(m.weight.numel() * dtype.itemsize for m in layers if id(m.weight) not in self.copies)
        if not layers or (free is not None and needed > free / 4):
            yield
            return
        originals = [(m, m.weight) for m in layers]
        try:
            for m, weight in originals:
                m.weight = self.copy_of(weight, dtype)
            yield
        finally:
            for m, weight in originals:
                m.weight = weight
