"""trl_grpo/models/hardware.py: bf16 autocast on CPU only where the CPU computes bf16 natively, read
from its own flags (oneDNN says "supported" on any AVX-512 CPU, where it emulates bf16)."""

import pytest
import torch

from trl_grpo.models import hardware

AVX512 = "fpu sse2 avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        (f"processor\t: 0\nflags\t\t: {AVX512}\n", False),  # AVX-512 without BF16: emulated
        (f"flags\t\t: {AVX512} avx512_bf16\n", True),  # Zen 4, Cooper Lake
        (f"flags\t\t: {AVX512} amx_bf16 amx_tile\n", True),  # Sapphire Rapids (AMX)
        ("flags\t\t: fpu sse2 avx avx2 fma\n", False),  # AVX2 only
        ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm\n", True),  # Arm with BF16
        ("Features\t: fp asimd evtstrm aes pmull\n", False),  # Arm without
    ],
)
def test_native_bf16_comes_from_the_cpus_own_flags(tmp_path, monkeypatch, cpuinfo, native):
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: hardware._read_flags(str(tmp_path / "cpuinfo")))
    monkeypatch.setattr(hardware, "_bf16_probe", lambda: pytest.fail("the flags decide; no probe"))
    hardware.cpu_has_bf16.cache_clear()
    try:
        assert hardware.cpu_has_bf16() is native
        use, dtype = hardware.training_precision("cpu", None)
        assert (use, dtype) == (native, torch.float32)  # the default follows the CPU; weights stay fp32
        assert hardware.training_precision("cpu", True)[0] and not hardware.training_precision("cpu", False)[0]
    finally:
        hardware.cpu_has_bf16.cache_clear()


@pytest.mark.parametrize("ratio, native", [(3.0, True), (0.2, False), (1.1, False)])
def test_without_flags_a_short_probe_decides(monkeypatch, ratio, native):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)
    monkeypatch.setattr(hardware, "_bf16_probe", lambda: ratio)
    hardware.cpu_has_bf16.cache_clear()
    try:
        assert hardware.cpu_has_bf16() is native
    finally:
        hardware.cpu_has_bf16.cache_clear()


def test_the_probe_measures_a_ratio():
    assert 0 < hardware._bf16_probe(size=64, repeats=2) < 100
