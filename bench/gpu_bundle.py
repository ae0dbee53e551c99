"""Prepare the GPU check for a GPU machine that reaches no network: wheels and a model spec.

    python bench/gpu_bundle.py              # or: make gpu-bundle  -> .gpu/, and the command to run there

``.gpu/wheels``: the pure-Python wheels of the versions tested here that the GPU machine lacks
or has at other versions (for its Python 3.12; ``--no-deps``); the machine's own torch + CUDA is
used, never carried. ``.gpu/model-spec``: the embedded model's config and tokenizer, a depth and
a seed; the weights are built from the seed where the check runs (``build_model``), so none
travel. bench/gpu_check.py reads both; bench/README.md says what the check can and cannot show.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPEC_FILE = "SPEC.json"
# Random weights give nearly flat logits (std ~0.5), where bf16 rounding flips greedy choices
# all the time and a wrong position or mask would go unnoticed. Scaling the final norm spreads
# the logits (std ~4) so that a bug shows as a token far from the top, while sampling at
# temperature 1 still varies within a group (the GRPO advantage needs that).
LOGIT_SCALE = 8.0
# The packages the GPU machine lacks or has at other versions than tested here (pure Python,
# except regex: transformers checks its version at import). torch is the machine's own.
BUNDLE_PACKAGES = (
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "math-verify",
    "latex2sympy2_extended",
    "antlr4-python3-runtime",
    "dill",
    "multiprocess",
    "regex",
)
BUNDLE_LIMIT_MB = 60


# ---------------------------------------------------------------- the small model
def write_spec(spec_dir: str, layers: int, seed: int = 0, tokenizer: str | None = None) -> str:
    """Config and tokenizer of the embedded model, cut to ``layers``, with the seed to build it.
    No weights: the model is built from the seed where the check runs. ``tokenizer``: a folder
    whose tokenizer replaces the embedded one, the vocabulary cut to its size (the CPU test uses
    the test suite's small one: the 49,152-token LM head was most of that test's time)."""
    from transformers import AutoConfig, AutoTokenizer

    from trl_grpo.models import locate

    source = locate.ensure_embedded_model()
    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    tok = AutoTokenizer.from_pretrained(tokenizer or source)
    if tokenizer:
        config.vocab_size = len(tok)
    os.makedirs(spec_dir, exist_ok=True)
    config.save_pretrained(spec_dir)
    tok.save_pretrained(spec_dir)
    with open(os.path.join(spec_dir, SPEC_FILE), "w") as f:
        spec = {"from": locate.EMBEDDED_NAME, "layers": layers, "seed": seed, "logit_scale": LOGIT_SCALE}
        json.dump({**spec, "tokenizer": tokenizer or locate.EMBEDDED_NAME}, f, indent=1)
    return spec_dir


def build_model(spec_dir: str, out_dir: str, layers: int | None = None) -> str:
    """A model folder with seeded random weights from a spec (``layers`` overrides its depth)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with open(os.path.join(spec_dir, SPEC_FILE)) as f:
        spec = json.load(f)
    config = AutoConfig.from_pretrained(spec_dir)
    config.num_hidden_layers = layers or spec["layers"]
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_decoder().norm.weight.mul_(spec["logit_scale"])
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(spec_dir).save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------- the bundle
def make_bundle(folder: str, layers: int) -> int:
    """Wheels the GPU machine lacks (for its Python 3.12) and the model spec, in ``folder``;
    prints the one command to run there."""
    wheels = os.path.join(folder, "wheels")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(wheels)
    pins = [f"{p}=={md.version(p)}" for p in BUNDLE_PACKAGES]
    platforms = [
        f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
    ]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        *platforms,
        "-d",
        wheels,
        *pins,
    ]
    subprocess.run(cmd, check=True)
    got = sorted(os.path.basename(w) for w in glob.glob(os.path.join(wheels, "*.whl")))
    missing = [
        p for p in BUNDLE_PACKAGES if not any(w.lower().startswith(p.replace("-", "_").lower() + "-") for w in got)
    ]
    if missing:
        raise SystemExit(f"error: no wheel downloaded for {missing}; check the network or the versions in the venv.")
    write_spec(os.path.join(folder, "model-spec"), layers)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs) / 2**20
    if size > BUNDLE_LIMIT_MB:
        raise SystemExit(
            f"error: {folder} holds {size:.1f} MiB, over the {BUNDLE_LIMIT_MB} MiB that may travel; drop a package "
            "from BUNDLE_PACKAGES."
        )
    rel = os.path.relpath(folder, ROOT)
    print(f"{rel}: {len(got)} wheels ({', '.join(pins)}) and a {layers}-layer model spec, {size:.1f} MiB")
    print("Run on the GPU machine, from the repo root, carrying that folder:")
    print(device_command(rel))
    return 0


def device_command(folder: str) -> str:
    out = "${OUT:-gpu-check-out}"
    return (
        "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "
        f"{folder}/wheels/*.whl"
        f" && mkdir -p {out} && set -o pipefail && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_check.py"
        f" --model_spec {folder}/model-spec --json_out {out}/gpu_check.json 2>&1 | tee {out}/gpu_check.log"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default=os.path.join(ROOT, ".gpu"), help="folder to write (replaced)")
    p.add_argument(
        "--layers", type=int, default=30, help="depth of the model the spec builds (30: the embedded model's)"
    )
    opts = p.parse_args(argv)
    return make_bundle(opts.out, opts.layers)


if __name__ == "__main__":
    sys.exit(main())
