"""requirements-vllm.txt pins a vLLM whose own pins keep this project's torch and transformers and that the
installed TRL supports (read from vLLM's published metadata, kept in tests/data; nothing is installed)."""

import json
import os
import re
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.version import Version

from conftest import ROOT


def _lines(name: str) -> list[str]:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def _pinned() -> str:
    (pin,) = [line for line in _lines("requirements-vllm.txt") if line.startswith("vllm")]
    return str(Requirement(pin).specifier).removeprefix("==")


def _requires(vllm: str) -> dict:
    with open(os.path.join(ROOT, "tests", "data", f"vllm_{vllm}_requires.json"), encoding="utf-8") as f:
        return json.load(f)["requires"]


def test_the_vllm_file_installs_the_project_beside_one_exact_vllm():
    lines = _lines("requirements-vllm.txt")
    assert "-r requirements.txt" in lines
    assert re.fullmatch(r"vllm==\d+\.\d+\.\d+", [line for line in lines if line.startswith("vllm")][0])


def test_vllms_own_pins_keep_this_projects_torch_and_transformers():
    ours = {Requirement(line).name.lower(): Requirement(line) for line in _lines("requirements.txt")}
    theirs = _requires(_pinned())
    torch_pin = str(ours["torch"].specifier).removeprefix("==")
    assert Version(torch_pin) in Requirement("torch" + theirs["torch"]).specifier
    # every transformers requirements.txt allows (its lower bound and the one installed) satisfies vLLM's pin
    lowest = min(s.version for s in ours["transformers"].specifier if s.operator in (">=", "=="))
    for candidate in (lowest, version("transformers")):
        assert Version(candidate) in Requirement("transformers" + theirs["transformers"]).specifier, candidate
    for name in ("huggingface_hub", "tokenizers", "safetensors"):  # what transformers brings, as installed here
        assert Version(version(name)) in Requirement(name + theirs[name]).specifier, name


def test_the_pinned_vllm_is_in_the_range_the_installed_trl_supports():
    from trl import import_utils

    with open(import_utils.__file__, encoding="utf-8") as f:
        source = f.read()
    low, high = re.search(r"supports vLLM versions from ([\d.]+\d) to ([\d.]+\d)", source).groups()
    assert Version(low) <= Version(_pinned()) <= Version(high)


def test_use_vllm_where_it_cannot_run_is_one_line(monkeypatch):
    import pytest

    from trl_grpo.models import hardware
    from trl_grpo.runs.cli import UsageError
    from trl_grpo.settings import resolve

    with pytest.raises(UsageError, match="vLLM generates on CUDA GPUs and this machine has none") as stop:
        resolve.parse("train", ["--use_vllm"])
    assert "\n" not in str(stop.value)
    monkeypatch.setattr(hardware, "pick_device", lambda: "cuda")  # a GPU without vLLM installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "vllm" else object())
    with pytest.raises(UsageError, match="pip install -r requirements-vllm.txt"):
        resolve.parse("train", ["--use_vllm"])
