"""Check the accelerator path end to end: GRPO + LoRA training, evaluation, fast vs stock paths.

    python bench/gpu_check.py                                  # CUDA when present, else CPU
    python bench/gpu_check.py --device cpu --layers 2          # what the test suite runs
    make gpu-bundle                                            # bench/gpu_bundle.py: wheels + model spec for a GPU
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
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from gpu_bundle import build_model, write_spec
from gpu_measure import (
    Check,
    Peak,
    chars_reward,
    compare_continuations,
    decode_profile,
    describe_device,
    lora_moved,
    precision_as_trained,
    print_table,
    reference_logps,
    sample_prompts,
    step_timer,
    version_of,
)


def train_run(check: Check, fast: str, model_dir: str, work: str, opts, device: str) -> str | None:
    import train
    from trl_grpo.answers import registry
    from trl_grpo.settings import resolve

    registry.REWARD_FUNCS.setdefault("chars", chars_reward)
    out = os.path.join(work, f"run-{fast}")
    argv = ["--model_id", model_dir, "--output_dir", out, "--dataset_id", "builtin:1", "--train_split", "train[:256]"]
    argv += ["--max_steps", str(opts.steps + 1), "--save_steps", str(opts.steps + 1), "--seed", "0", "--bf16"]
    argv += ["--per_device_train_batch_size", str(opts.batch_size), "--num_generations", "4", "--report_to", "none"]
    argv += ["--max_completion_length", str(opts.max_completion_length), "--fast_paths", fast]
    argv += ["--reward_funcs", "format,accuracy,chars"]
    times: list[float] = []
    with check.run(f"train_{fast}"):
        args, startup = resolve.parse("train", argv)
        with Peak(device) as peak:
            code = train.train(args, startup, callbacks=[step_timer(device, times)])
        with open(os.path.join(out, "run_config.json")) as f:
            config = json.load(f)
        with open(os.path.join(out, "run_state.json")) as f:
            config.update(json.load(f)["attempts"][-1])  # steps, fast paths that ran
        moved = lora_moved(os.path.join(out, "adapter_model.safetensors"))
        ok = code == 0 and config["steps"] == opts.steps + 1 and moved
        keep = {"exit_code": code, "steps": config["steps"], "lora_B_moved": moved}
        keep.update(fast_paths=config["fast_paths"], dtype=config["dtype"])
        check.set(f"train_{fast}", ok, **{f"train_{fast}": keep})
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


# The other ways to adapt (docs/adapting.md), each a short run with the paths on; QLoRA and vLLM only where
# their package is there (the GPU machine reaches no network: a skip says which line installs it).
ADAPTATIONS = {
    "train_dora": ["--use_dora"],
    "train_full": ["--no-use_peft", "--learning_rate", "1e-5"],
    "train_qlora": ["--load_in_4bit"],
    "train_vllm": ["--use_vllm", "--trainer", "vllm_mode=colocate", "--trainer", "vllm_gpu_memory_utilization=0.3"],
}


def adaptations(check: Check, model_dir: str, work: str, opts, device: str) -> None:
    import train
    from trl_grpo.settings import backends, resolve

    gates = {"train_qlora": lambda: backends.check_bitsandbytes("--load_in_4bit"), "train_vllm": backends.check_vllm}
    for name, flags in ADAPTATIONS.items():
        refused = gates[name]() if name in gates else []
        if refused:
            check.details[name] = f"skipped: {refused[0]}"
            continue
        out = os.path.join(work, name)
        argv = ["--model_id", model_dir, "--output_dir", out, "--dataset_id", "builtin:1", "--seed", "0"]
        argv += ["--train_split", "train[:64]", "--max_steps", str(opts.steps)]
        argv += ["--per_device_train_batch_size", str(opts.batch_size)]
        argv += ["--num_generations", "4", "--report_to", "none", "--no-preflight"]
        argv += ["--max_completion_length", str(opts.max_completion_length), "--reward_funcs", "format,accuracy,chars"]
        times: list[float] = []
        with check.run(name):
            args, startup = resolve.parse("train", [*argv, *flags])
            with Peak(device) as peak:
                code = train.train(args, startup, callbacks=[step_timer(device, times)])
            with open(os.path.join(out, "run_state.json")) as f:
                attempt = json.load(f)["attempts"][-1]
            ok = code == 0 and attempt["steps"] == opts.steps
            check.set(name, ok, **{name: {"fast_paths": attempt["fast_paths"]}})
            check.timings[f"{name}_step_s"] = round(times[-1], 3) if times else None
            if peak.mb is not None:
                check.timings[f"{name}_peak_mb"] = peak.mb


def adapter_and_hook(check: Check, run_dir: str, device: str, opts):
    import torch

    from trl_grpo.fast import decoding
    from trl_grpo.models import loading, locate
    from trl_grpo.models.sampling import Sampling, cut_at_end, end_ids

    dtype, autocast = precision_as_trained(device)
    resolved = locate.resolve_model(run_dir)
    tokenizer = loading.load_tokenizer(run_dir)
    prompts = sample_prompts(tokenizer, 8)
    pad = tokenizer.pad_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with check.run("adapter_reloads"):
        unmerged = loading.load_model(resolved, dtype, device, merge=False).eval()
        merged = loading.load_model(resolved, dtype, device, merge=True).eval()
        base = loading.load_model({"base": resolved["base"]}, dtype, device).eval()
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
        end = end_ids(unmerged, tokenizer)
        config = Sampling(opts.max_completion_length).generation_config(pad, end)
        autocast_dtype = torch.bfloat16 if autocast is not contextlib.nullcontext else None
        hook = decoding.SharedPrefixGenerate(unmerged, pad, autocast_dtype=autocast_dtype)
        with torch.no_grad():
            got = hook(input_ids=ids, attention_mask=mask, generation_config=config)
            with autocast():
                want = unmerged.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        # TRL keeps tokens up to the first end token
        got_rows = [cut_at_end(r, end)[0] for r in got[:, width:].tolist()]
        want_rows = [cut_at_end(r, end)[0] for r in want[:, width:].tolist()]
        reference = loading.load_model(resolved, torch.float32, device, merge=False).eval()
        result = compare_continuations(unmerged, reference, prompts, got_rows, want_rows, autocast)
        check.set(
            "generate_hook_matches",
            hook.failed is None and result["all_explained"],
            generate_hook={**result, "hook_failed": hook.failed},
        )
        del reference
    del unmerged


def fast_logps_exact(check: Check, run_dir: str, device: str) -> None:
    """The fast log-probs against a plain full-row forward in fp32 on this device (Triton kernels
    included on CUDA), with a control that must fail: the same rows with shifted completions."""
    import torch

    from trl_grpo.fast import packed_logps
    from trl_grpo.models import loading, locate

    with check.run("fast_logps_exact_fp32"):
        model = loading.load_model(locate.resolve_model(run_dir), torch.float32, device, merge=False).eval()
        tokenizer = loading.load_tokenizer(run_dir)
        prompts = sample_prompts(tokenizer, 6)
        gen = torch.Generator().manual_seed(0)
        keep, pad = 12, tokenizer.pad_token_id
        lengths = [12, 7, 1, 12, 4, 9]
        width = max(map(len, prompts))
        rows, masks = [], []
        top = min(40000, len(tokenizer))  # ids the vocabulary has (a spec may carry a small tokenizer)
        for p, n in zip(prompts, lengths, strict=True):
            completion = torch.randint(100, top, (n,), generator=gen).tolist()
            rows.append([pad] * (width - len(p)) + p + completion + [pad] * (keep - n))
            masks.append([0] * (width - len(p)) + [1] * (len(p) + n) + [0] * (keep - n))
        ids, mask = torch.tensor(rows, device=device), torch.tensor(masks, device=device)
        base = model.get_base_model()
        with torch.no_grad():
            want = reference_logps(model, ids, mask, keep)
            got, _ = packed_logps.shared_prefix_logps(
                base.get_decoder(), base.get_output_embeddings(), ids, mask, keep, pad_id=pad
            )
            shifted = ids.clone()
            shifted[:, -keep:] = ids[:, -keep:].roll(1, dims=1)
            control, _ = packed_logps.shared_prefix_logps(
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


def eval_runs(check: Check, run_dir: str, work: str, device: str, opts) -> None:
    """eval.py on the trained adapter with --fast_paths off, then on; then whether they agree."""
    from trl_grpo.evaluation import pipeline as eval_mod

    outputs = {}
    for fast in ("off", "on"):
        out = os.path.join(work, f"eval-{fast}.json")
        with check.run(f"eval_{fast}"):
            argv = ["--model_dir", run_dir, "--limit", str(opts.eval_limit), "--fast_paths", fast, "--device", device]
            argv += ["--max_completion_length", str(opts.max_completion_length), "--output_file", out]
            with Peak(device) as peak:
                code = eval_mod.main(argv)
            with open(out) as f:
                records = json.load(f)
            with open(eval_mod.summary_path(out)) as f:
                summary = json.load(f)
            ran = code == 0 and summary["fast_paths"]["enabled"] == (fast == "on") and len(records) == opts.eval_limit
            check.set(f"eval_{fast}", ran)
            check.timings[f"eval_s_{fast}"] = summary["generation_wall_s"]
            check.timings[f"eval_tokens_per_s_{fast}"] = summary["tokens_per_s"]
            if peak.mb is not None:
                check.timings[f"eval_peak_mb_{fast}"] = peak.mb
            outputs[fast] = (records, summary)
    if len(outputs) == 2:
        with check.run("eval_matches"):
            ok, details = eval_agreement(outputs, run_dir, device, opts)
            check.set("eval_matches", ok, **details)


def eval_agreement(outputs: dict, run_dir: str, device: str, opts) -> tuple[bool, dict]:
    """(ok, details): the same completions and scores, or every divergence explained as rounding at
    the token level (the generation eval.py ran, repeated and checked to reproduce its records)."""
    import torch

    from trl_grpo.fast import decoding
    from trl_grpo.models import hardware, loading, locate
    from trl_grpo.models.sampling import Sampling

    (off, s_off), (on, s_on) = outputs["off"], outputs["on"]
    pairs = list(zip(off, on, strict=True))
    text_diffs = sum(a["completion"] != b["completion"] for a, b in pairs)
    details = {
        "problems": len(off),
        "different_completions": text_diffs,
        "different_scores": sum(
            a["reward"] != b["reward"] or a["format_reward"] != b["format_reward"] for a, b in pairs
        ),
        "accuracy": [s_off["accuracy"], s_on["accuracy"]],
        "dtype": s_on["dtype"],
    }
    if not text_diffs:
        return True, {"eval": details}
    resolved = locate.resolve_model(run_dir)
    tokenizer = loading.load_tokenizer(run_dir)
    model = loading.load_model(resolved, hardware.eval_dtype(device, None), device).eval()
    prompts = [r["prompt"] for r in on]
    ns = Sampling(opts.max_completion_length, temperature=0.0, batch_size=128, seed=42)
    texts, tokens = {}, {}
    for fast in (False, True):
        texts[fast], tokens[fast] = decoding.generate_batches(model, tokenizer, prompts, ns, device, fast)
    reproduced = all(
        [t[0] for t in texts[fast]] == [r["completion"] for r in records]
        for fast, records in ((True, on), (False, off))
    )
    reference = loading.load_model(resolved, torch.float32, device).eval()
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    fast_rows, stock_rows = [t[0] for t in tokens[True]], [t[0] for t in tokens[False]]
    result = compare_continuations(model, reference, encoded, fast_rows, stock_rows, contextlib.nullcontext)
    details.update(reproduced=reproduced, **{k: result[k] for k in ("identical", "diverged", "all_explained")})
    return reproduced and result["all_explained"], {"eval": details}


def run_checks(opts) -> dict:
    from trl_grpo.models import hardware

    device = hardware.pick_device(opts.device)
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
        p: version_of(p) for p in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify")
    }
    check.details["fast_paths_auto"] = {
        job: hardware.fast_paths_enabled("auto", device, job) for job in ("train", "eval")
    }
    runs = {fast: train_run(check, fast, model_dir, work, opts, device) for fast in ("off", "on")}
    if runs["on"]:
        adapter_and_hook(check, runs["on"], device, opts)
        fast_logps_exact(check, runs["on"], device)
        eval_runs(check, runs["on"], work, device, opts)
        decode_profile(check, runs["on"], device, opts)
    if not opts.skip_adaptations:
        adaptations(check, model_dir, work, opts, device)
    t = check.timings
    if t.get("train_step_s_off") and t.get("train_step_s_on"):
        t["train_speedup_on_vs_off"] = round(t["train_step_s_off"] / t["train_step_s_on"], 2)
    if t.get("eval_s_off") and t.get("eval_s_on"):
        t["eval_speedup_on_vs_off"] = round(t["eval_s_off"] / t["eval_s_on"], 2)
    if not opts.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return {"device": describe_device(device), "checks": check.checks, "timings": t, "details": check.details}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--device", default="auto", help="'auto' (CUDA if available, else CPU), 'cpu', or 'cuda[:N]'")
    p.add_argument(
        "--model_spec",
        default=None,
        help="folder from bench/gpu_bundle.py (config, tokenizer, seed); default: made now from the embedded model",
    )
    p.add_argument("--layers", type=int, default=None, help="model depth (default: the spec's; 4 for a spec made now)")
    p.add_argument("--steps", type=int, default=3, help="timed GRPO steps per path (after one warm-up step)")
    p.add_argument(
        "--max_completion_length", type=int, default=32, help="new tokens per completion, in training and evaluation"
    )
    p.add_argument("--eval_limit", type=int, default=64, help="problems evaluated per path")
    p.add_argument(
        "--batch_size",
        type=int,
        default=16,
        help="completions per GRPO step (4 per prompt); the CPU test uses fewer, the GPU check keeps 16",
    )
    p.add_argument(
        "--skip_adaptations", action="store_true", help="leave out the DoRA, full, QLoRA and vLLM runs (ADAPTATIONS)"
    )
    p.add_argument("--work_dir", default=None, help="keep runs and results here (default: a temporary folder, removed)")
    p.add_argument("--json_out", default=None, help="also write the result JSON to this file")
    opts = p.parse_args(argv)
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
