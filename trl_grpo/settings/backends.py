"""Optional packages a setting needs, each checked against this machine's device before anything loads:
vLLM (``--use_vllm``), liger-kernel (``use_liger_kernel``), bitsandbytes (``--load_in_4bit``/``8bit``).

    pip install -r requirements-vllm.txt     # vLLM, at the release that keeps this project's pins
    pip install -r requirements-qlora.txt    # bitsandbytes, for QLoRA

Each refusal is one line naming the package, the device and the way around it.
"""

from __future__ import annotations

import importlib.util

VLLM_REQUIREMENTS = "requirements-vllm.txt"
QLORA_REQUIREMENTS = "requirements-qlora.txt"
# The bitsandbytes releases this tool is tested with (requirements-qlora.txt pins the same; a test
# checks both). 0.50 quantizes and trains 4- and 8-bit layers on CPU as well as CUDA.
BNB_TESTED = ">=0.50,<0.51"
# The devices bitsandbytes 0.50 runs its 4- and 8-bit layers on (its backends/ folder).
BNB_DEVICES = ("cuda", "cpu", "xpu")


def _device() -> str:
    from trl_grpo.models import hardware

    return hardware.pick_device()


def check_vllm() -> list[str]:
    """--use_vllm where vLLM can run: a CUDA GPU, and vLLM installed (at requirements-vllm.txt's pin)."""
    device = _device()
    if device != "cuda":
        return [
            f"--use_vllm: vLLM generates on CUDA GPUs and this machine has none ({device}). "
            "Drop --use_vllm: the CPU speed paths are on by default."
        ]
    if importlib.util.find_spec("vllm") is None:
        return [
            f"--use_vllm needs vLLM: pip install -r {VLLM_REQUIREMENTS} (its pin keeps this project's torch and "
            "transformers; a bare pip install vllm moves them). Or drop --use_vllm."
        ]
    return []


def check_liger() -> list[str]:
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None:
        return []
    where = "liger-kernel is not installed" if torch.cuda.is_available() else "its kernels need a CUDA GPU"
    return [f"use_liger_kernel: {where}; run without it (--use_liger_kernel false)."]


def check_bitsandbytes(flag: str) -> list[str]:
    """``flag`` (--load_in_4bit or --load_in_8bit) where bitsandbytes can quantize: installed, at a tested
    release, on a device it has kernels for."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet

    try:
        have = version("bitsandbytes")
    except PackageNotFoundError:
        have = None
    if have is None or importlib.util.find_spec("bitsandbytes") is None:
        return [f"{flag} needs bitsandbytes: pip install -r {QLORA_REQUIREMENTS}. Or drop {flag}."]
    if have not in SpecifierSet(BNB_TESTED):
        return [
            f"{flag}: bitsandbytes {have} is installed; this tool is tested with bitsandbytes{BNB_TESTED} "
            f"(pip install -r {QLORA_REQUIREMENTS})."
        ]
    device = _device()
    if device not in BNB_DEVICES:
        return [
            f"{flag}: bitsandbytes {have} has no quantized kernels for this machine's device ({device}); it runs "
            f"on {', '.join(BNB_DEVICES)}. Drop {flag} (LoRA on the full-precision base fits a 0.5B-3B model)."
        ]
    return []
