"""Which device and precision a command runs with, where the speed paths turn on, and memory left.

    python -c "from trl_grpo.models.hardware import pick_device; print(pick_device())"

``pick_device``, ``training_precision`` (training) and ``eval_dtype`` (evaluation); which speed
paths ``--fast_paths auto`` turns on per device (``fast_paths_enabled``); the memory left
(``free_memory_bytes``). The one place hardware choices are made.
"""

from __future__ import annotations

import functools

from trl_grpo.models.locate import ModelError


# ---------------------------------------------------------------- hardware: the one place
def pick_device(requested: str | None = None) -> str:
    """``cuda`` when available (or asked), else ``cpu``."""
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError(
                f"--device {requested} was asked for but no CUDA GPU is visible. Use --device cpu or auto."
            )
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


# CPU features that compute bf16 in hardware: x86's AVX-512 BF16 and AMX, Arm's BF16 extension.
# oneDNN also reports bf16 "supported" on any AVX-512 CPU, where it emulates it: measured there, 3
# cold-start steps took 71.6 s each under bf16 autocast and 25.7 s with --no-bf16.
_NATIVE_BF16 = frozenset(("avx512_bf16", "amx_bf16", "bf16"))


def _read_flags(cpuinfo: str) -> frozenset[str] | None:
    """The first ``flags`` (x86) or ``Features`` (Arm) line of a Linux cpuinfo file, or None."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (Linux: x86 ``flags``, Arm ``Features``; macOS: the
    ``hw.optional.arm.FEAT_BF16`` sysctl), or None where the system does not say."""
    flags = _read_flags("/proc/cpuinfo")
    if flags is not None:
        return flags
    import subprocess
    import sys

    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
            return frozenset(("bf16",)) if out.stdout.strip() == "1" else frozenset()
        except OSError:
            return None
    return None


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively, where bf16 autocast pays off: from its own flags
    (``avx512_bf16``, ``amx_bf16``, Arm's ``bf16``), else a short probe (a bf16 matmul at least 1.3x
    an fp32 one)."""
    flags = cpu_flags()
    if flags is not None:
        return bool(flags & _NATIVE_BF16)
    return _bf16_probe() >= 1.3


def _bf16_probe(size: int = 512, repeats: int = 5) -> float:
    """How many times faster a bf16 matmul runs than an fp32 one here (medians; about 0.1 s)."""
    import statistics
    import time

    import torch

    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        rates[dtype] = 1 / statistics.median(times)
    return rates[torch.bfloat16] / rates[torch.float32]


def training_precision(device: str, bf16: bool | None) -> tuple:
    """(bf16 compute?, weight dtype) for training.

    CUDA: bf16 weights and compute when the GPU supports it. CPU: weights stay fp32 and bf16 is
    autocast (the trainer's mixed precision), on by default only where the CPU has native bf16.
    ``bf16`` True/False forces compute either way.
    """
    import torch

    if device.startswith("cuda"):
        use = torch.cuda.is_bf16_supported() if bf16 is None else bf16
        return use, (torch.bfloat16 if use else torch.float32)
    use = cpu_has_bf16() if bf16 is None else bf16
    return use, torch.float32


FAST_PATHS_CHOICES = ("auto", "on", "off")


# What ``--fast_paths auto`` picks, per job and device type, from side-by-side measurements
# (bench/README.md, "GPU check"): on CPU every path is faster with equal results; on CUDA a GRPO
# step is faster with the paths on, and evaluation never was, so transformers' generate stays there.
FAST_PATHS_AUTO = {"train": {"cpu": True, "cuda": True}, "eval": {"cpu": True, "cuda": False}}


def fast_paths_enabled(setting: str, device: str, job: str) -> bool:
    """Whether the speed paths run for ``job`` ('train' or 'eval'): ``on``/``off`` as asked,
    ``auto`` as measured for the device.

    The speed paths are the generate hook (shared-prefix prefill, merged/packed weights, the
    decode loop and in-place KV cache), fp32 CPU attention under bf16, and the loss's
    shared-prefix log-probs; ``off`` runs TRL's and transformers' stock paths only.

    >>> [fast_paths_enabled(*a) for a in (("auto", "cpu", "eval"), ("auto", "cuda:1", "eval"), ("off", "cpu", "train"))]
    [True, False, False]
    """
    if setting not in FAST_PATHS_CHOICES:
        raise ModelError(f"--fast_paths {setting!r}: expected one of {list(FAST_PATHS_CHOICES)}.")
    if setting != "auto":
        return setting == "on"
    return FAST_PATHS_AUTO[job].get(device.split(":")[0], False)


def weights_dtype(name: str | None, chosen, model_path: str | None = None):
    """``--dtype`` (``auto``: the checkpoint's own, from its config.json; ``bfloat16``, ``float16``,
    ``float32``) over the dtype chosen for the device."""
    import json
    import os

    import torch

    if name is None:
        return chosen
    if name == "auto":
        try:
            with open(os.path.join(model_path or "", "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            name = config.get("dtype") or config.get("torch_dtype") or "float32"
        except (OSError, ValueError):
            name = "float32"  # a hub id not yet downloaded: the weights as fp32
    dtype = getattr(torch, str(name), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def eval_dtype(device: str, bf16: bool | None):
    """Weight dtype for evaluation: bf16 on CUDA GPUs that support it, fp32 on CPU (exact greedy
    scores); ``bf16`` True/False forces either way."""
    import torch

    if bf16 is None:
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float32


# ---------------------------------------------------------------- memory
def free_memory_bytes(device: str) -> int | None:
    """Memory the process can still use on ``device`` (a GPU's free memory, or the host's
    MemAvailable), or None when unknown."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
