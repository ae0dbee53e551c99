"""bench/gpu_check.py (+ gpu_measure.py, gpu_bundle.py): every check passes on CPU, a real divergence
is not excused, the bundle is complete."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_bundle
import gpu_measure

CHECKS = {
    "train_off",
    "train_on",
    "fast_paths_used",
    "fast_logps_match",
    "adapter_reloads",
    "generate_hook_matches",
    "fast_logps_exact_fp32",
    "eval_off",
    "eval_on",
    "eval_matches",
}


@pytest.mark.slow
def test_every_check_passes_on_cpu(tiny_model_dir, tmp_path):
    """The embedded model's shape at 2 layers, with the tiny model's small vocabulary."""
    out = tmp_path / "result.json"
    spec = gpu_bundle.write_spec(str(tmp_path / "spec"), layers=2, tokenizer=tiny_model_dir)
    argv = [
        "--device",
        "cpu",
        "--model_spec",
        spec,
        "--steps",
        "1",
        "--eval_limit",
        "8",
        "--batch_size",
        "8",
        "--max_completion_length",
        "8",
        "--json_out",
        str(out),
    ]
    done = subprocess.run(
        [sys.executable, "bench/gpu_check.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last == json.loads(out.read_text())
    import importlib.util

    # the other ways to adapt: QLoRA where bitsandbytes is installed, vLLM never on a CPU (a skip says why)
    adapted = {"train_dora", "train_full"} | ({"train_qlora"} if importlib.util.find_spec("bitsandbytes") else set())
    assert last["device"].startswith("cpu") and set(last["checks"]) == CHECKS | adapted and all(last["checks"].values())
    assert last["details"]["train_vllm"].startswith("skipped: --use_vllm: vLLM generates on CUDA GPUs")
    for key in ("train_step_s_off", "train_step_s_on", "eval_s_off", "eval_s_on", "decode_ms_per_step"):
        assert last["timings"][key], key
    assert not any(k.endswith("_peak_mb_on") for k in last["timings"])  # GPU memory: CUDA only, left out here
    assert last["details"]["model"]["layers"] == 2 and last["details"]["model"]["spec"] == spec


def test_a_divergence_beyond_rounding_is_not_explained(tiny_model_dir):
    """Same model on both sides (no rounding noise): a token far from the top is a real difference."""
    import contextlib

    from trl_grpo.models import loading

    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    prompt = [1, 690, 198, 67, 2, 198, 69, 70]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
    top, bottom = int(logits.argmax()), int(logits.argmin())
    got = gpu_measure.explain_divergence(model, model, prompt, [5, top], [5, bottom], contextlib.nullcontext)
    assert got["position"] == 1 and got["noise"] == 0 and got["gap"] > 0 and not got["explained"]
    result = gpu_measure.compare_continuations(
        model, model, [prompt, prompt], [[top], [7]], [[top], [7]], contextlib.nullcontext
    )
    assert result == {"rows": 2, "identical": 2, "diverged": [], "all_explained": True}


@pytest.mark.slow
def test_gpu_bundle_has_every_wheel_and_a_buildable_model(tmp_path):
    """make gpu-bundle's work: the wheels for Python 3.12 (needs PyPI, as make setup does) and the spec."""
    folder = tmp_path / "gpu"
    done = subprocess.run(
        [sys.executable, "bench/gpu_bundle.py", "--out", str(folder), "--layers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = os.listdir(folder / "wheels")
    for package in gpu_bundle.BUNDLE_PACKAGES:
        assert any(w.lower().startswith(package.replace("-", "_").lower() + "-") for w in wheels), package
    assert not any(w.startswith("torch-") for w in wheels)  # the GPU machine's own torch is used
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < gpu_bundle.BUNDLE_LIMIT_MB * 2**20
    assert "PYTHONPATH=/tmp/site" in done.stdout and "bench/gpu_check.py --model_spec" in done.stdout
    model_dir = gpu_bundle.build_model(str(folder / "model-spec"), str(tmp_path / "model"))
    with open(tmp_path / "model" / "config.json") as f:
        assert json.load(f)["num_hidden_layers"] == 2
    assert os.path.isfile(os.path.join(model_dir, "tokenizer.json"))
