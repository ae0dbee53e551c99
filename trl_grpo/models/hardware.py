"""Which device and precision a command runs with, where the speed paths turn on, and memory left.

    python -c "from trl_grpo.models.hardware import pick_device; print(pick_device())"

``pick_device``, ``training_precision`` (training) and ``eval_dtype`` (evaluation); which speed
paths ``--fast_paths auto`` turns on per device (``fast_paths_enabled``); the memory left
(``free_memory_bytes``). The one place hardware choices are made.
"""

from __future__ import annotations

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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX), where bf16 autocast pays off."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
