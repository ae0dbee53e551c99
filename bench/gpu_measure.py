"""Helpers of the GPU check: peak memory, step times, whether two greedy continuations part by
rounding or by a bug, the precision training used, and the printed report.

    python -m pytest tests/test_gpu_check.py     # explain_divergence is tested to refuse a real difference

Used by bench/gpu_check.py only.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata as md
import time


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


def reference_logps(model, ids, mask, keep: int):
    """Log-probs of the last ``keep`` tokens of each row from one plain forward of the full rows."""
    import torch

    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep - 1 : -1].float()
    out = torch.log_softmax(logits, -1).gather(-1, ids[:, -keep:, None]).squeeze(-1)
    return out * mask[:, -keep:]


# ---------------------------------------------------------------- check helpers and the report
def chars_reward(completions, **kwargs) -> list[float]:
    """Varies within every group even for a random model (all completions hit the length limit,
    so rewards on the contract are all 0 and would leave the LoRA weights at their init)."""
    from trl_grpo.answers import contract

    return [min(len(contract.completion_text(c)), 400) / 100 for c in completions]


def lora_moved(path: str) -> bool:
    """Whether a saved adapter's LoRA B matrices left their all-zero init (the optimizer stepped)."""
    from safetensors.torch import load_file

    weights = load_file(path)
    b = [t for n, t in weights.items() if "lora_B" in n]
    return bool(b) and any(t.abs().sum() > 0 for t in b)


def precision_as_trained(device: str):
    """(weight dtype, autocast context factory) as train.py trains with --bf16 on this device."""
    import torch

    from trl_grpo.models import hardware

    use_bf16, dtype = hardware.training_precision(device, True)
    if use_bf16 and dtype == torch.float32:  # CPU: fp32 weights under bf16 autocast
        return dtype, lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return dtype, contextlib.nullcontext


def sample_prompts(tokenizer, n: int) -> list[list[int]]:
    import data_utils
    from trl_grpo.data.prompts import render_prompt

    _, test = data_utils.load_and_process_data("builtin:1", None, f"test[:{n}]")
    return [tokenizer(render_prompt(tokenizer, p, True), add_special_tokens=False)["input_ids"] for p in test["prompt"]]


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{device} ({name}, torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu (torch {torch.__version__})"


def version_of(package: str) -> str | None:
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


def decode_profile(check: Check, run_dir: str, device: str, opts) -> None:
    """Milliseconds per decode step at evaluation's batch, for transformers' generate and for the
    decode loop with and without each of its parts (shared-prefix cache, in-place KV layer)."""
    import torch
    from transformers import GenerationConfig

    from trl_grpo.fast import decoding
    from trl_grpo.models import hardware, loading, locate

    with check.measure("decode_profile"):
        model = loading.load_model(locate.resolve_model(run_dir), hardware.eval_dtype(device, None), device).eval()
        tokenizer = loading.load_tokenizer(run_dir)
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
                    decoding.reserved_layer = lambda room, like=None, dtype=None: like
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
