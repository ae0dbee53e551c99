"""Evaluation decode speed: the original project's eval loop vs eval.py's generation path.

    python bench/eval_speed.py                  # or: make bench
    python bench/eval_speed.py --n 128 --repeats 3 --max_completion_length 64

Both paths run in this process on the same model (the embedded SmolLM2-135M-Instruct, fp32),
the same N problems of the built-in test split (spread over its levels), the same rendered
prompts and the same max_completion_length, greedy, after a warm-up; medians of repeats.

  baseline  the original loop: dataset order, batch 16, padded to the longest prompt (left
            padding, kinder than the original's right padding, which corrupts batched
            decoding), HF generate, decode prompt + completion, strip the prompt to score.
  ours      eval.generate: prompts sorted by length, bigger batches, left padding, generated
            tokens only.

It also measures this machine's fp32 matmul FLOP/s (2048^3) and reports decode speed as a
fraction of the compute limit (FLOP/s / FLOPs per generated token, 2 x parameters), and the
same counting the prompt tokens each path had to run too. Scores of both paths are compared
item by item. On a CPU with native bf16 it also times ``eval.py --bf16`` (bf16 weights, fp32
attention) against its own bf16 matmul limit, and counts how many scores bf16 changes. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import data_utils
from roofline import matmul_flops  # bench/roofline.py: this machine's probes
from trl_grpo.answers import rewards
from trl_grpo.data.prompts import render_prompt
from trl_grpo.evaluation import pipeline as eval_mod
from trl_grpo.fast import decoding, kv_cache
from trl_grpo.models import hardware, loading, locate
from trl_grpo.models.sampling import Sampling


def baseline_generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16
) -> tuple[list[str], int]:
    """The original eval loop, as faithfully as left padding allows."""
    import torch

    outputs, tokens = [], 0
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        full = tokenizer.batch_decode(out, skip_special_tokens=True)
        prompt_texts = tokenizer.batch_decode(enc["input_ids"], skip_special_tokens=True)
        outputs += [f[len(p) :] if f.startswith(p) else f for f, p in zip(full, prompt_texts, strict=True)]
        new = out[:, enc["input_ids"].shape[1] :]
        tokens += int(((new != tokenizer.pad_token_id) | (new == tokenizer.eos_token_id)).sum())
    return outputs, tokens


def score(completions: list[str], prompts: list[str], rows) -> list[tuple]:
    fmt = rewards.format_reward(completions, prompts=prompts)
    acc = rewards.accuracy_reward(completions, rows["solution"], answer=rows["answer"])
    return list(zip(fmt, acc, strict=True))


def load_paths(args):
    """The problems, the fp32 model (and a bf16 one on CPUs with native bf16), both paths warmed up."""
    import torch

    _, test = data_utils.load_and_process_data("builtin", None, "test")
    rows = test.select(range(0, len(test), max(1, len(test) // args.n)))[: args.n]
    resolved = locate.resolve_model("embedded")
    tokenizer = loading.load_tokenizer(resolved["base"])
    model = loading.load_model(resolved, torch.float32, "cpu").eval()
    prompts = [render_prompt(tokenizer, conv, True) for conv in rows["prompt"]]
    ours_args = Sampling(args.max_completion_length, temperature=0.0, batch_size=args.batch_size, seed=0)
    short = replace(ours_args, max_new_tokens=4)
    baseline_generate(model, tokenizer, prompts[:4], 4)  # warm-up both paths
    decoding.generate_batches(model, tokenizer, prompts[:4], short, "cpu")
    bf16_model = None
    if hardware.cpu_has_bf16():
        attention = kv_cache.pick_attention("cpu", True)
        bf16_model = loading.load_model(resolved, torch.bfloat16, "cpu", attn_implementation=attention).eval()
        decoding.generate_batches(bf16_model, tokenizer, prompts[:4], short, "cpu")
    return rows, prompts, tokenizer, model, bf16_model, ours_args


def time_paths(args, prompts, tokenizer, model, bf16_model, ours_args) -> dict:
    """Median seconds and the outputs of each path, repeats interleaved so machine noise hits all alike."""
    runs, out = {"baseline": [], "ours": [], "ours_bf16": []}, {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        out["baseline"] = baseline_generate(model, tokenizer, prompts, args.max_completion_length)
        runs["baseline"].append(time.perf_counter() - start)
        for name, m in (("ours", model), ("ours_bf16", bf16_model)):
            if m is not None:
                start = time.perf_counter()
                texts, ids = decoding.generate_batches(m, tokenizer, prompts, ours_args, "cpu")
                runs[name].append(time.perf_counter() - start)
                out[name] = ([t[0] for t in texts], sum(len(x[0]) for x in ids))
    return {name: (statistics.median(times), out[name]) for name, times in runs.items() if times}


def bf16_figures(timed: dict, base_scores, ours_scores, prompts, rows, flops_per_token: float) -> dict:
    import torch

    n = len(prompts)
    bf16_s, (bf16_out, bf16_tokens) = timed["ours_bf16"]
    bf16_scores = score(bf16_out, prompts, rows)
    bf16_tps, bf16_limit = bf16_tokens / bf16_s, matmul_flops(dtype=torch.bfloat16) / flops_per_token
    acc = {
        name: sum(a for _, a in sc if a is not None) / n for name, sc in (("fp32", ours_scores), ("bf16", bf16_scores))
    }
    same = sum(a == b for a, b in zip(base_scores, bf16_scores, strict=True))
    print(
        f"ours bf16: {bf16_s:6.1f} s  {n / bf16_s:6.2f} completions/s  {bf16_tps:6.1f} tokens/s  "
        f"({bf16_tps / bf16_limit:.0%} of the bf16 limit, {bf16_limit:.0f} tokens/s)"
    )
    print(f"bf16 vs fp32: {same}/{n} identical scores; accuracy {acc['bf16']:.3f} vs {acc['fp32']:.3f}")
    return {
        "ours_bf16_per_s": round(n / bf16_s, 3),
        "ratio_bf16": round(timed["baseline"][0] / bf16_s, 2),
        "bf16_limit_tokens_per_s": round(bf16_limit, 1),
        "fraction_of_bf16_limit": round(bf16_tps / bf16_limit, 3),
        "bf16_identical_scores": same,
        "bf16_accuracy": round(acc["bf16"], 4),
        "fp32_accuracy": round(acc["fp32"], 4),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=128, help="problems (>= 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per path (median reported)")
    p.add_argument("--max_completion_length", type=int, default=64, help="max new tokens, both paths")
    p.add_argument(
        "--batch_size", type=int, default=eval_mod.build_parser().get_default("batch_size"), help="eval.py's batch size"
    )
    args = p.parse_args()
    logging.disable(logging.WARNING)
    import torch

    rows, prompts, tokenizer, model, bf16_model, ours_args = load_paths(args)
    flops, flops_per_token = matmul_flops(), 2 * model.num_parameters()
    limit_tokens_per_s = flops / flops_per_token
    timed = time_paths(args, prompts, tokenizer, model, bf16_model, ours_args)
    (base_s, (base_out, base_tokens)), (ours_s, (ours_out, ours_tokens)) = timed["baseline"], timed["ours"]
    base_scores, ours_scores = score(base_out, prompts, rows), score(ours_out, prompts, rows)
    same_text = sum(a.strip() == b.strip() for a, b in zip(base_out, ours_out, strict=True))
    n, ours_tps = len(prompts), ours_tokens / ours_s
    # Prompt tokens each path runs besides generating: the baseline every padded prompt; ours
    # the shared prefix once and each prompt's own tokens.
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = decoding.shared_prefix_len(encoded)
    base_prompt_tokens = sum(16 * max(map(len, encoded[i : i + 16])) for i in range(0, n, 16))
    ours_prompt_tokens = shared + sum(len(e) - shared for e in encoded)
    with_prompts = (ours_tokens + ours_prompt_tokens) / ours_s / limit_tokens_per_s
    same_scores = sum(a == b for a, b in zip(base_scores, ours_scores, strict=True))
    print(f"{n} problems, max {args.max_completion_length} new tokens, greedy, fp32, {torch.get_num_threads()} threads")
    print(f"machine: {flops / 1e9:.0f} GFLOP/s fp32 matmul -> limit {limit_tokens_per_s:.0f} tokens/s")
    print(f"baseline: {base_s:7.1f} s  {n / base_s:6.2f} completions/s  (+{base_prompt_tokens} prompt tokens)")
    print(f"ours    : {ours_s:7.1f} s  {n / ours_s:6.2f} completions/s  {ours_tps:6.1f} tokens/s ({with_prompts:.0%})")
    print(f"identical completions: {same_text}/{n}; identical scores: {same_scores}/{n}")
    bf16 = bf16_figures(timed, base_scores, ours_scores, prompts, rows, flops_per_token) if "ours_bf16" in timed else {}
    result = {
        "baseline_per_s": round(n / base_s, 3),
        "ours_per_s": round(n / ours_s, 3),
        "ratio": round(base_s / ours_s, 2),
        "baseline_tokens_per_s": round(base_tokens / base_s, 1),
        "ours_tokens_per_s": round(ours_tps, 1),
        "limit_tokens_per_s": round(limit_tokens_per_s, 1),
        "fraction_of_limit": round(ours_tps / limit_tokens_per_s, 3),
        "fraction_of_limit_with_prompts": round(with_prompts, 3),
        "scores_identical": base_scores == ours_scores,
        "identical_scores": same_scores,
        "identical_completions": same_text,
        "n": n,
        "ours_batch_size": args.batch_size,
        "matmul_gflops": round(flops / 1e9, 1),
        **bf16,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
