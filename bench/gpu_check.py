"""Check the accelerator path end to end: GRPO + LoRA training, evaluation, fast vs stock paths.

    python bench/gpu_check.py                                  # CUDA when present, else CPU
    python bench/gpu_check.py --device cpu --layers 2          # what the test suite runs
    make gpu-bundle                                            # wheels + model spec for a GPU
                                                               # machine, and the command to run there

On whatever device it finds (or ``--device``), with a small model built from the embedded
model's config and tokenizer (seeded random weights, ``--layers`` deep; see bench/README.md for
what such a model can and cannot show: no learning claim), it runs:

  train_off / train_on   GRPO steps through main.py's flags and train.train, bf16 where the
                         device has it, ``--fast_paths off`` then ``on``: exit code 0, every
                         step done, an adapter saved whose LoRA weights moved from their init
  fast_paths_used        the ``on`` run really used the generate hook and the fast log-probs
  fast_logps_match       that run's first-batch check of the fast log-probs against TRL's own
                         path, on this device in the training dtype, within its tolerance
  adapter_reloads        the saved adapter reloads: unmerged and merged give the same logits
                         (to the dtype's rounding), and differ from the base model's
  generate_hook_matches  the generate hook's greedy output equals transformers' ``generate``,
                         or every divergence is rounding (see ``explain_divergence``)
  eval_off / eval_on     eval.py on the trained adapter with ``--fast_paths off`` then ``on``
  eval_matches           their completions and scores are equal, or every divergence is rounding

It prints a table and, last, one JSON line ``{"device", "checks", "timings", "details"}``:
step times and evaluation times of both paths, and on CUDA the peak GPU memory of each. A check
that does not apply to a device is left out of ``checks``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import glob
import importlib.metadata as md
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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


def chars_reward(completions, **kwargs) -> list[float]:
    """Varies within every group even for a random model (all completions hit the length limit,
    so rewards on the contract are all 0 and would leave the LoRA weights at their init)."""
    import reward

    return [min(len(reward.completion_text(c)), 400) / 100 for c in completions]


# ---------------------------------------------------------------- the small model
def write_spec(spec_dir: str, layers: int, seed: int = 0) -> str:
    """Config and tokenizer of the embedded model, cut to ``layers``, with the seed to build it.
    No weights: the model is built from the seed where the check runs."""
    from transformers import AutoConfig, AutoTokenizer

    import model_utils

    source = model_utils.ensure_embedded_model()
    config = AutoConfig.from_pretrained(source)
    config.num_hidden_layers = layers
    os.makedirs(spec_dir, exist_ok=True)
    config.save_pretrained(spec_dir)
    AutoTokenizer.from_pretrained(source).save_pretrained(spec_dir)
    with open(os.path.join(spec_dir, SPEC_FILE), "w") as f:
        json.dump(
            {"from": model_utils.EMBEDDED_NAME, "layers": layers, "seed": seed, "logit_scale": LOGIT_SCALE}, f, indent=1
        )
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


# ---------------------------------------------------------------- measuring
class Peak:
    """Peak GPU memory (MB) inside the block, on CUDA; None elsewhere."""

    def __init__(self, device: str):
        self.device, self.mb = device, None

    def __enter__(self):
        import torch

        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mb = round(torch.cuda.max_memory_allocated() / 2**20)


def step_timer(device: str, times: list):
    from transformers import TrainerCallback

    def sync():
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            times.append(time.perf_counter() - self.start)

    return StepTimer()


def explain_divergence(model, reference, prompt: list[int], a: list[int], b: list[int], autocast) -> dict:
    """Why two greedy continuations of ``prompt`` part: at the first differing position, the gap
    between the two chosen tokens' logits in fp32 (``reference``) against the rounding noise of
    the device path there (the largest |device - fp32| logit over the vocabulary). ``explained``
    when the gap is within that noise: the two tokens were tied up to rounding. A real bug (a
    wrong position, mask or weight) picks a token far from the top."""
    import torch

    i = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if i >= min(len(a), len(b)):  # one stops (end of sequence) where the other goes on
        i = min(len(a), len(b)) - 1
        if i < 0 or a[i] == b[i]:
            return {"position": i + 1, "explained": False, "why": "one ended where the other continued"}
    ids = torch.tensor([prompt + a[:i]], device=reference.device)
    with torch.no_grad():
        ref = reference(input_ids=ids).logits[0, -1].float()
        with autocast():
            dev = model(input_ids=ids).logits[0, -1].float()
    noise = (dev - ref).abs().max().item()
    gap = (ref[a[i]] - ref[b[i]]).abs().item()
    top = ref.max().item()
    return {
        "position": i,
        "gap": round(gap, 4),
        "noise": round(noise, 4),
        "below_top": round(top - max(ref[a[i]].item(), ref[b[i]].item()), 4),
        "explained": gap <= noise,
    }


def compare_continuations(
    model, reference, prompts: list[list[int]], got: list[list[int]], want: list[list[int]], autocast
) -> dict:
    """Equal rows counted; each differing one explained (or not) by ``explain_divergence``."""
    diverged = [
        explain_divergence(model, reference, p, g, w, autocast)
        for p, g, w in zip(prompts, got, want, strict=True)
        if g != w
    ]
    return {
        "rows": len(prompts),
        "identical": len(prompts) - len(diverged),
        "diverged": diverged,
        "all_explained": all(d["explained"] for d in diverged),
    }


# ---------------------------------------------------------------- the checks
class Check:
    """Runs named checks, keeps going after a failure, and collects the results."""

    def __init__(self):
        self.checks, self.timings, self.details = {}, {}, {}

    @contextlib.contextmanager
    def run(self, name: str):
        print(f"--- {name}", flush=True)
        try:
            yield
        except Exception as err:  # noqa: BLE001 - a broken check is a failed check, and the rest still run
            import traceback

            traceback.print_exc()
            self.checks[name] = False
            self.details[f"{name}_error"] = f"{type(err).__name__}: {err}"

    @contextlib.contextmanager
    def measure(self, name: str):
        """A measurement, not a check: a failure is recorded in details only."""
        print(f"--- {name}", flush=True)
        try:
            yield
        except Exception as err:  # noqa: BLE001 - the checks do not depend on it
            import traceback

            traceback.print_exc()
            self.details[f"{name}_error"] = f"{type(err).__name__}: {err}"

    def set(self, name: str, ok: bool, **details):
        self.checks[name] = bool(ok)
        self.details.update(details)


def train_run(check: Check, fast: str, model_dir: str, work: str, opts, device: str) -> str | None:
    import main
    import reward
    import train

    reward.REWARD_FUNCS.setdefault("chars", chars_reward)
    out = os.path.join(work, f"run-{fast}")
    argv = [
        "--model_id",
        model_dir,
        "--output_dir",
        out,
        "--dataset_id",
        "builtin:1",
        "--train_split",
        "train[:256]",
        "--max_steps",
        str(opts.steps + 1),
        "--per_device_train_batch_size",
        "16",
        "--num_generations",
        "4",
        "--max_completion_length",
        str(opts.max_completion_length),
        "--reward_funcs",
        "format,accuracy,chars",
        "--report_to",
        "none",
        "--save_steps",
        str(opts.steps + 1),
        "--seed",
        "0",
        "--fast_paths",
        fast,
        "--bf16",
    ]
    times: list[float] = []
    with check.run(f"train_{fast}"):
        args = main.build_parser().parse_args(argv)
        main.validate(args)
        with Peak(device) as peak:
            code = train.train(args, callbacks=[step_timer(device, times)])
        with open(os.path.join(out, "run_config.json")) as f:
            config = json.load(f)
        with open(os.path.join(out, "run_state.json")) as f:
            config.update(json.load(f)["attempts"][-1])  # steps, fast paths that ran
        moved = lora_moved(os.path.join(out, "adapter_model.safetensors"))
        ok = code == 0 and config["steps"] == opts.steps + 1 and moved
        check.set(
            f"train_{fast}",
            ok,
            **{
                f"train_{fast}": {
                    "exit_code": code,
                    "steps": config["steps"],
                    "lora_B_moved": moved,
                    "fast_paths": config["fast_paths"],
                    "dtype": config["dtype"],
                }
            },
        )
        timed = times[1:]  # the first step warms up (kernels, allocator, caches)
        check.timings[f"train_step_s_{fast}"] = round(statistics.median(timed), 3) if timed else None
        check.timings[f"train_steps_s_{fast}"] = [round(t, 3) for t in times]
        if peak.mb is not None:
            check.timings[f"train_peak_mb_{fast}"] = peak.mb
        if fast == "on":
            report = config["fast_paths"]
            check.set("fast_paths_used", report.get("generate_hook") == "used" and report.get("fast_logps") == "used")
            first = report.get("fast_logps_check") or {}
            check.set("fast_logps_match", bool(first.get("passed")), fast_logps_check=first)
        return out
    return None


def lora_moved(path: str) -> bool:
    """Whether a saved adapter's LoRA B matrices left their all-zero init (the optimizer stepped)."""
    from safetensors.torch import load_file

    weights = load_file(path)
    b = [t for n, t in weights.items() if "lora_B" in n]
    return bool(b) and any(t.abs().sum() > 0 for t in b)


def precision_as_trained(device: str):
    """(weight dtype, autocast context factory) as train.py trains with --bf16 on this device."""
    import torch

    import model_utils

    use_bf16, dtype = model_utils.training_precision(device, True)
    if use_bf16 and dtype == torch.float32:  # CPU: fp32 weights under bf16 autocast
        return dtype, lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return dtype, contextlib.nullcontext


def sample_prompts(tokenizer, n: int) -> list[list[int]]:
    import data_utils

    _, test = data_utils.load_and_process_data("builtin:1", None, f"test[:{n}]")
    return [
        tokenizer(data_utils.render_prompt(tokenizer, p, True), add_special_tokens=False)["input_ids"]
        for p in test["prompt"]
    ]


def adapter_and_hook(check: Check, run_dir: str, device: str, opts):
    import torch
    from transformers import GenerationConfig

    import decoding
    import model_utils

    dtype, autocast = precision_as_trained(device)
    resolved = model_utils.resolve_model(run_dir)
    tokenizer = model_utils.load_tokenizer(run_dir)
    prompts = sample_prompts(tokenizer, 8)
    pad = tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with check.run("adapter_reloads"):
        unmerged = model_utils.load_model(resolved, dtype, device, merge=False).eval()
        merged = model_utils.load_model(resolved, dtype, device, merge=True).eval()
        base = model_utils.load_model({"base": resolved["base"]}, dtype, device).eval()
        with torch.no_grad(), autocast():
            a, b, c = (
                m(input_ids=ids, attention_mask=mask).logits.float()[mask.bool()] for m in (unmerged, merged, base)
            )
        scale = a.abs().max().item()
        merge_err, adapter_effect = (a - b).abs().max().item() / scale, (a - c).abs().max().item() / scale
        tol = 1e-4 if dtype == torch.float32 and autocast is contextlib.nullcontext else 5e-2
        check.set(
            "adapter_reloads",
            merge_err <= tol and adapter_effect > merge_err,
            adapter={
                "merge_rel_err": round(merge_err, 6),
                "adapter_rel_effect": round(adapter_effect, 6),
                "tolerance": tol,
            },
        )
        del merged, base
    with check.run("generate_hook_matches"):
        eos = [tokenizer.eos_token_id]
        config = GenerationConfig(
            do_sample=False, max_new_tokens=opts.max_completion_length, eos_token_id=eos, pad_token_id=pad
        )
        autocast_dtype = torch.bfloat16 if autocast is not contextlib.nullcontext else None
        hook = decoding.SharedPrefixGenerate(unmerged, pad, autocast_dtype=autocast_dtype)
        with torch.no_grad():
            got = hook(input_ids=ids, attention_mask=mask, generation_config=config)
            with autocast():
                want = unmerged.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        cut = lambda row: row[: next((j + 1 for j, t in enumerate(row) if t in eos), len(row))]  # noqa: E731 - TRL keeps tokens up to the first EOS
        got_rows, want_rows = [cut(r) for r in got[:, width:].tolist()], [cut(r) for r in want[:, width:].tolist()]
        reference = model_utils.load_model(resolved, torch.float32, device, merge=False).eval()
        result = compare_continuations(unmerged, reference, prompts, got_rows, want_rows, autocast)
        check.set(
            "generate_hook_matches",
            hook.failed is None and result["all_explained"],
            generate_hook={**result, "hook_failed": hook.failed},
        )
        del reference
    del unmerged


def reference_logps(model, ids, mask, keep: int):
    """Log-probs of the last ``keep`` tokens of each row from one plain forward of the full rows."""
    import torch

    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep - 1 : -1].float()
    out = torch.log_softmax(logits, -1).gather(-1, ids[:, -keep:, None]).squeeze(-1)
    return out * mask[:, -keep:]


def fast_logps_exact(check: Check, run_dir: str, device: str) -> None:
    """The fast log-probs against a plain full-row forward in fp32 on this device (Triton kernels
    included on CUDA), with a control that must fail: the same rows with shifted completions."""
    import torch

    import fast_logps
    import model_utils

    with check.run("fast_logps_exact_fp32"):
        model = model_utils.load_model(model_utils.resolve_model(run_dir), torch.float32, device, merge=False).eval()
        tokenizer = model_utils.load_tokenizer(run_dir)
        prompts = sample_prompts(tokenizer, 6)
        gen = torch.Generator().manual_seed(0)
        keep, pad = 12, tokenizer.pad_token_id
        lengths = [12, 7, 1, 12, 4, 9]
        width = max(map(len, prompts))
        rows, masks = [], []
        for p, n in zip(prompts, lengths, strict=True):
            completion = torch.randint(100, 40000, (n,), generator=gen).tolist()
            rows.append([pad] * (width - len(p)) + p + completion + [pad] * (keep - n))
            masks.append([0] * (width - len(p)) + [1] * (len(p) + n) + [0] * (keep - n))
        ids, mask = torch.tensor(rows, device=device), torch.tensor(masks, device=device)
        base = model.get_base_model()
        with torch.no_grad():
            want = reference_logps(model, ids, mask, keep)
            got, _ = fast_logps.shared_prefix_logps(
                base.get_decoder(), base.get_output_embeddings(), ids, mask, keep, pad_id=pad
            )
            shifted = ids.clone()
            shifted[:, -keep:] = ids[:, -keep:].roll(1, dims=1)
            control, _ = fast_logps.shared_prefix_logps(
                base.get_decoder(), base.get_output_embeddings(), shifted, mask, keep, pad_id=pad
            )
        valid = mask[:, -keep:].bool()
        diff = (got - want).abs()[valid].max().item()
        control_diff = (control - want).abs()[valid].mean().item()
        check.set(
            "fast_logps_exact_fp32",
            diff <= 1e-3 and control_diff > 0.1,
            fast_logps_fp32={
                "max_abs_diff": diff,
                "tokens": int(valid.sum()),
                "control_mean_abs_diff": round(control_diff, 3),
            },
        )
        del model


def decode_profile(check: Check, run_dir: str, device: str, opts) -> None:
    """Milliseconds per decode step at evaluation's batch, for transformers' generate and for the
    decode loop with and without each of its parts (shared-prefix cache, in-place KV layer)."""
    import torch
    from transformers import GenerationConfig

    import decoding
    import model_utils

    with check.measure("decode_profile"):
        model = model_utils.load_model(
            model_utils.resolve_model(run_dir), model_utils.eval_dtype(device, None), device
        ).eval()
        tokenizer = model_utils.load_tokenizer(run_dir)
        prompts = sample_prompts(tokenizer, opts.eval_limit)
        steps, pad = opts.max_completion_length, tokenizer.pad_token_id
        never = [-1]  # no end-of-sequence token: every variant runs all steps, the same work
        shared = decoding.shared_prefix_len(prompts)
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        config = GenerationConfig(
            do_sample=False, max_new_tokens=steps, min_new_tokens=steps, pad_token_id=pad, eos_token_id=None
        )
        original = decoding.reserved_layer
        variants = {
            "generate": lambda: model.generate(input_ids=ids, attention_mask=mask, generation_config=config),
            "loop": lambda: decoding.decode_shared_prefix(model, prompts, pad, shared, device, steps, never),
            "loop_no_prefix_cache": lambda: decoding.decode_shared_prefix(model, prompts, pad, 0, device, steps, never),
            "loop_dynamic_cache": lambda: decoding.decode_shared_prefix(
                model, prompts, pad, shared, device, steps, never
            ),
        }
        ms = {}
        with torch.inference_mode():
            for name, fn in variants.items():
                if name == "loop_dynamic_cache":  # the stock layer: concatenates every step
                    decoding.reserved_layer = lambda room, like=None: like
                try:
                    best = None
                    for _ in range(2):
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        fn()
                        if device.startswith("cuda"):
                            torch.cuda.synchronize()
                        took = (time.perf_counter() - start) * 1000 / steps
                        best = took if best is None else min(best, took)
                    ms[name] = round(best, 2)
                finally:
                    decoding.reserved_layer = original
        check.timings["decode_ms_per_step"] = {"batch": len(prompts), **ms}


def eval_runs(check: Check, run_dir: str, work: str, device: str, opts) -> None:
    import torch

    import decoding
    import evaluation as eval_mod
    import model_utils

    outputs = {}
    for fast in ("off", "on"):
        out = os.path.join(work, f"eval-{fast}.json")
        with check.run(f"eval_{fast}"):
            argv = [
                "--model_dir",
                run_dir,
                "--limit",
                str(opts.eval_limit),
                "--max_completion_length",
                str(opts.max_completion_length),
                "--fast_paths",
                fast,
                "--device",
                device,
                "--output_file",
                out,
            ]
            with Peak(device) as peak:
                code = eval_mod.main(argv)
            with open(out) as f:
                records = json.load(f)
            with open(eval_mod.summary_path(out)) as f:
                summary = json.load(f)
            check.set(
                f"eval_{fast}",
                code == 0 and summary["fast_paths"]["enabled"] == (fast == "on") and len(records) == opts.eval_limit,
            )
            check.timings[f"eval_s_{fast}"] = summary["generation_wall_s"]
            check.timings[f"eval_tokens_per_s_{fast}"] = summary["tokens_per_s"]
            if peak.mb is not None:
                check.timings[f"eval_peak_mb_{fast}"] = peak.mb
            outputs[fast] = (records, summary)
    if len(outputs) < 2:
        return
    with check.run("eval_matches"):
        (off, s_off), (on, s_on) = outputs["off"], outputs["on"]
        score_diffs = sum(
            a["reward"] != b["reward"] or a["format_reward"] != b["format_reward"] for a, b in zip(off, on, strict=True)
        )
        text_diffs = sum(a["completion"] != b["completion"] for a, b in zip(off, on, strict=True))
        details = {
            "problems": len(off),
            "different_completions": text_diffs,
            "different_scores": score_diffs,
            "accuracy": [s_off["accuracy"], s_on["accuracy"]],
            "dtype": s_on["dtype"],
        }
        ok = text_diffs == 0
        if text_diffs:  # token level: the same generation eval.py ran, and why each pair parts
            resolved = model_utils.resolve_model(run_dir)
            tokenizer = model_utils.load_tokenizer(run_dir)
            dtype = model_utils.eval_dtype(device, None)
            model = model_utils.load_model(resolved, dtype, device).eval()
            prompts = [r["prompt"] for r in on]
            ns = argparse.Namespace(
                batch_size=128,
                max_completion_length=opts.max_completion_length,
                num_samples=1,
                temperature=0.0,
                seed=42,
            )
            texts = {}
            tokens = {}
            for fast in (False, True):
                texts[fast], tokens[fast] = decoding.generate_batches(model, tokenizer, prompts, ns, device, fast)
            reproduced = [t[0] for t in texts[True]] == [r["completion"] for r in on] and [
                t[0] for t in texts[False]
            ] == [r["completion"] for r in off]
            reference = model_utils.load_model(resolved, torch.float32, device).eval()
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
            result = compare_continuations(
                model,
                reference,
                encoded,
                [t[0] for t in tokens[True]],
                [t[0] for t in tokens[False]],
                contextlib.nullcontext,
            )
            details.update(reproduced=reproduced, **{k: result[k] for k in ("identical", "diverged", "all_explained")})
            ok = reproduced and result["all_explained"]
        check.set("eval_matches", ok, eval=details)


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{device} ({name}, torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu (torch {torch.__version__})"


def run_checks(opts) -> dict:
    import model_utils

    device = model_utils.pick_device(opts.device)
    work = opts.work_dir or tempfile.mkdtemp(prefix="gpu_check-")
    check = Check()
    spec = opts.model_spec
    if spec is None:
        spec = write_spec(os.path.join(work, "model-spec"), opts.layers or 4)
    model_dir = build_model(spec, os.path.join(work, "model"), opts.layers)
    with open(os.path.join(model_dir, "config.json")) as f:
        layers = json.load(f)["num_hidden_layers"]
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(os.path.join(model_dir, "model.safetensors")).values())
    check.details["model"] = {"spec": spec, "layers": layers, "params_m": round(params / 1e6, 1)}
    check.details["versions"] = {
        p: _version(p) for p in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify")
    }
    check.details["fast_paths_auto"] = {
        job: model_utils.fast_paths_enabled("auto", device, job) for job in ("train", "eval")
    }
    runs = {fast: train_run(check, fast, model_dir, work, opts, device) for fast in ("off", "on")}
    if runs["on"]:
        adapter_and_hook(check, runs["on"], device, opts)
        fast_logps_exact(check, runs["on"], device)
        eval_runs(check, runs["on"], work, device, opts)
        decode_profile(check, runs["on"], device, opts)
    t = check.timings
    if t.get("train_step_s_off") and t.get("train_step_s_on"):
        t["train_speedup_on_vs_off"] = round(t["train_step_s_off"] / t["train_step_s_on"], 2)
    if t.get("eval_s_off") and t.get("eval_s_on"):
        t["eval_speedup_on_vs_off"] = round(t["eval_s_off"] / t["eval_s_on"], 2)
    if not opts.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return {"device": describe_device(device), "checks": check.checks, "timings": t, "details": check.details}


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


def print_table(result: dict) -> None:
    print(f"\nGPU check on {result['device']}")
    for name, ok in result["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    for name, value in result["timings"].items():
        print(f"  {name:28s} {value}")


# ---------------------------------------------------------------- the bundle for a GPU machine
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
    p.add_argument("--device", default="auto", help="'auto' (CUDA if available, else CPU), 'cpu', or 'cuda[:N]'")
    p.add_argument(
        "--model_spec",
        default=None,
        help="folder written by --bundle (config, tokenizer, seed); default: made now from the embedded model",
    )
    p.add_argument("--layers", type=int, default=None, help="model depth (default: the spec's; 4 for a spec made now)")
    p.add_argument("--steps", type=int, default=3, help="timed GRPO steps per path (after one warm-up step)")
    p.add_argument(
        "--max_completion_length", type=int, default=32, help="new tokens per completion, in training and evaluation"
    )
    p.add_argument("--eval_limit", type=int, default=64, help="problems evaluated per path")
    p.add_argument("--work_dir", default=None, help="keep runs and results here (default: a temporary folder, removed)")
    p.add_argument("--json_out", default=None, help="also write the result JSON to this file")
    p.add_argument(
        "--bundle",
        default=None,
        metavar="DIR",
        help="write the wheels and the model spec for a GPU machine to DIR, print the command to run there, and exit",
    )
    opts = p.parse_args(argv)
    if opts.bundle:
        return make_bundle(opts.bundle, opts.layers or 30)
    if opts.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # train.py picks CUDA whenever it sees one
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    start = time.time()
    result = run_checks(opts)
    result["timings"]["total_s"] = round(time.time() - start, 1)
    print_table(result)
    line = json.dumps(result)
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0 if result["checks"] and all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
