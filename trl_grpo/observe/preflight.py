"""Preflight: before any training step, sample and score a few groups with the run's exact settings,
and say whether the run can learn anything, and what to fix if not.

    python main.py --preflight_only [flags]     # the check alone: exit 0 (ok / warn) or 3 (no signal)
    python main.py [flags]                      # training runs it first, prints the verdict, goes on

It samples ``--preflight_prompts`` prompts x ``--num_generations`` completions from the untrained
model through the trainer's own generation path (template, prefill, lengths, temperature as
the run), scores them with the run's rewards, and reports (also to ``<run>/preflight.json``):
the share of completions cut at ``--max_completion_length``, the format reward's distribution,
the accuracy, the share of groups whose rewards do not vary (no GRPO signal), the share of
training rows without a usable gold, the prompts dropped for length, the measured seconds per
step and an estimate of the whole run. Thresholds of the verdict: ``NO_SIGNAL_AT`` and ``WARN_AT``.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import time
from dataclasses import dataclass, replace

import torch

from trl_grpo.answers import boxes, contract, rewards
from trl_grpo.answers.rewards import finite_or_none
from trl_grpo.models.sampling import Sampling, cut_at_end, end_ids, left_pad
from trl_grpo.observe.telemetry import contract_telemetry

# no_signal: at least this share of groups have rewards that do not vary (GRPO's advantage is 0)
NO_SIGNAL_AT = 0.9
# The format this rarely written (mean format reward below it): the prompt, not the sampling, is the fix
FORMAT_RARE = 0.1
# warn: the share at which each milder problem is reported
WARN_AT = {"zero_variance_group_fraction": 0.5, "truncated_fraction": 0.5, "unparseable_gold_fraction": 0.2}
# A GRPO step costs about this many times its sampling and scoring (bench/README.md, "GRPO step":
# the step against its sampling on 2 CPU cores); the estimate of a step and of the run rests on it.
STEP_OVER_SAMPLING = 2.3


@dataclass(frozen=True)
class Plan:
    """What the preflight samples and what it knows of the run, as plain numbers (train.py builds it from
    the settings): ``prompts`` prompts x ``sampling.samples`` completions (the group size), sampled as the
    run samples; the run's size for the time estimate; and the flags its advice may name."""

    sampling: Sampling
    prompts: int
    prompts_per_step: int
    steps: int
    max_prompt_length: int = 0
    sft_steps: int = 0
    prompt_template: str | None = None
    prefill_think: bool = True
    dynamic_sampling: int = 0


def dynamic_sampling_plan(zero_fraction: float, rounds: int) -> dict:
    """What --dynamic_sampling ``rounds`` should do at this share of groups without signal: each extra round
    samples one more batch of prompts, of which ``1 - zero_fraction`` have signal.

    >>> dynamic_sampling_plan(0.6, 2)  # 40% with signal: 2 rounds find 80% more, enough for the 60% missing
    {'rounds': 2, 'with_signal_after': 1.0}
    >>> dynamic_sampling_plan(0.9, 2)
    {'rounds': 2, 'with_signal_after': 0.3}
    """
    signal = 1 - zero_fraction
    if zero_fraction <= 0 or rounds <= 0:
        return {"rounds": 0, "with_signal_after": round(signal, 4)}
    needed = math.ceil(round(zero_fraction / signal, 9)) if signal > 0 else rounds
    return {"rounds": min(rounds, needed), "with_signal_after": round(min(1.0, signal * (1 + rounds)), 4)}


def check_rewards(funcs, rows) -> None:
    """Call each reward as TRL will, on a first batch (the first training rows, each with its gold answer in
    the output contract and a wrong one), before the model loads. ``ValueError`` naming the reward when it
    raises or returns something TRL cannot use (not one float or None per completion)."""
    rows = [rows[i] for i in range(min(2, len(rows)))]
    completions = [
        f"{contract.THINK_START}{c}{contract.THINK_END}{contract.ANSWER_START}{boxes.BOXED}{{{a}}}{contract.ANSWER_END}"
        for r in rows
        for c, a in (("worked", r["answer"] or "1"), ("guessed", "0"))
    ]
    columns = {k: [r[k] for r in rows for _ in range(2)] for k in rows[0] if k != "prompt"}
    kwargs = {"prompts": [r["prompt"] for r in rows for _ in range(2)], "completion_ids": [[0]] * len(completions)}
    for func in funcs:
        inner = getattr(func, "func", func)  # the guard would hide the error we are looking for
        try:
            out = inner(completions, trainer_state=None, **kwargs, **columns)
        except Exception as exc:  # noqa: BLE001 - the user's reward: any error is reported in one line
            raise ValueError(
                f"reward {func.__name__} raised on a first batch of {len(completions)} completions "
                f"({type(exc).__name__}: {exc}). Fix it, or drop it from --reward_funcs."
            ) from None
        out = rewards._materialised(out)  # an async reward's result, an array or a generator, as TRL reads it
        ok = isinstance(out, (list, tuple)) and len(out) == len(completions)
        if ok and any(v is not None and not isinstance(v, bool) and finite_or_none(v) is None for v in out):
            raise ValueError(
                f"reward {func.__name__} returned {str(out)[:80]} on a first batch: NaN and infinite values give "
                "no learning signal (an infinite one wipes out every advantage of its group). Return a finite "
                "float, or None to skip a completion."
            )
        if not ok or not all(v is None or not isinstance(v, bool) and finite_or_none(v) is not None for v in out):
            raise ValueError(
                f"reward {func.__name__} returned {str(out)[:80]} for {len(completions)} completions: TRL needs a "
                "list with one float (or None) per completion."
            )


def run_preflight(trainer, plan: Plan, train_ds, dropped: dict) -> dict:
    """The preflight report of a built trainer (its model still untrained); RNG state left as found."""
    cpu_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        torch.manual_seed(plan.sampling.seed)
        return _measure(trainer, plan, train_ds, dropped)
    finally:
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


def _measure(trainer, plan: Plan, train_ds, dropped: dict) -> dict:
    tokenizer, g = trainer.processing_class, plan.sampling.samples
    picks = sorted(random.Random(plan.sampling.seed).sample(range(len(train_ds)), min(plan.prompts, len(train_ds))))
    rows = [train_ds[i] for i in picks]
    start = time.perf_counter()
    texts, truncated, lengths = _sample(trainer, tokenizer, [r["prompt"] for r in rows], plan.sampling)
    prompts = [r["prompt"] for r in rows for _ in range(g)]
    # every dataset column but the prompt, as TRL passes them to the rewards
    columns = {k: [r[k] for r in rows for _ in range(g)] for k in rows[0] if k != "prompt"}
    scores = {f.__name__: f(texts, prompts=prompts, **columns) for f in trainer.reward_funcs}
    took = time.perf_counter() - start
    weights = trainer.reward_weights.tolist()
    totals = [
        sum(w * v for w, v in zip(weights, vals, strict=True) if v is not None)
        for vals in zip(*scores.values(), strict=True)
    ]
    groups = [totals[i : i + g] for i in range(0, len(totals), g)]
    fmt = rewards.format_reward(texts, prompts=prompts)
    acc = [a for a in rewards.accuracy_reward(texts, **columns) if a is not None]
    sampling_s = took * plan.prompts_per_step * g / max(len(texts), 1)
    report = {
        "prompts": len(rows),
        "completions": len(texts),
        "truncated_fraction": round(sum(truncated) / len(texts), 4),
        "format_reward_mean": round(statistics.mean(fmt), 4),
        "format_distribution": {str(k): fmt.count(k) for k in (0.0, 0.5, 1.0)},
        "accuracy_mean": round(statistics.mean(acc), 4) if acc else None,
        "zero_variance_group_fraction": round(sum(max(x) - min(x) < 1e-9 for x in groups) / len(groups), 4),
        "unparseable_gold_fraction": round(dropped.get("unusable_gold", 0) / max(len(train_ds), 1), 4),
        "dropped": {k: v for k, v in dropped.items() if k != "unusable_gold"},
        "sampling_seconds_per_step": round(sampling_s, 3),
        "telemetry": contract_telemetry(texts, prompts=prompts, truncated=truncated, lengths=lengths),
        "rewards_mean": {name: _mean(vals) for name, vals in scores.items()},
        "samples": [
            {"prompt_index": picks[i // g], "completion": texts[i], "rewards": {n: v[i] for n, v in scores.items()}}
            for i in range(min(len(texts), 2 * g))
        ],
    }
    step_s = sampling_s * STEP_OVER_SAMPLING
    if plan.dynamic_sampling:  # each extra round is one more batch sampled and scored
        report["dynamic_sampling"] = dynamic_sampling_plan(
            report["zero_variance_group_fraction"], plan.dynamic_sampling
        )
        step_s += sampling_s * report["dynamic_sampling"]["rounds"]
    report["seconds_per_step"] = round(step_s, 3)
    # From the unrounded time: a tiny model's 0.02 s a step x 2 steps must not print as 0 s.
    report["estimated_total_s"] = round(step_s * plan.steps, 3)
    report["verdict"], report["problems"] = verdict(report, plan)
    return report


def _sample(trainer, tokenizer, prompts: list[str], sampling: Sampling) -> tuple[list[str], list[bool], list[int]]:
    """``sampling.samples`` completions per prompt through the trainer's own generation path (its
    generate hook included), ending where training's end; whether each was cut; their lengths."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = [e for e in encoded for _ in range(sampling.samples)]
    ids, mask = left_pad(rows, tokenizer.pad_token_id, trainer.accelerator.device)
    end = end_ids(trainer.model, tokenizer)
    config = replace(sampling, samples=1).generation_config(tokenizer.pad_token_id, end)
    autocast = trainer.accelerator.autocast() if hasattr(trainer.accelerator, "autocast") else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        out = trainer.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    texts, truncated, lengths = [], [], []
    for tokens in out[:, ids.shape[1] :].tolist():
        kept, ended = cut_at_end(tokens[: sampling.max_new_tokens], end)
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
        truncated.append(not ended)
        lengths.append(len(kept))
    return texts, truncated, lengths


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.mean(known), 4) if known else None


def verdict(report: dict, plan: Plan) -> tuple[str, list[str]]:
    """("ok" | "warn" | "no_signal", one message with its fix per problem found)."""
    problems, zero = [], report["zero_variance_group_fraction"]
    format_flags = [
        flag
        for flag, on in (
            ("--prompt_template worked_example", plan.prompt_template == "worked_example"),
            ("--prefill_think", plan.prefill_think),
        )
        if not on
    ]  # advise only what is not on already
    format_fix = None
    if report["format_reward_mean"] < FORMAT_RARE and format_flags:
        format_fix = f"try {' with '.join(format_flags)} (the prompt states the format and shows an example)"
    if zero >= NO_SIGNAL_AT:
        fix = "raise --temperature or --num_generations, or start from an easier --dataset_id"
        if not plan.sft_steps:
            fix += ", or teach worked solutions first with a cold start: --sft_steps 30"
        problems.append(f"{zero:.0%} of groups score the same: no learning signal; {format_fix or fix}.")
    elif zero >= WARN_AT["zero_variance_group_fraction"]:
        fix = format_fix or "raise --num_generations"
        rounds = math.ceil(round(zero / (1 - zero), 9))  # extra batches that would replace every such group
        if not format_fix and not plan.dynamic_sampling:
            fix += f", or replace them with groups of further prompts: --dynamic_sampling {min(3, rounds)}"
        elif not format_fix and report["dynamic_sampling"]["with_signal_after"] < 1:
            fix += f", or allow more rounds: --dynamic_sampling {min(8, rounds)}"
        problems.append(f"{zero:.0%} of groups score the same (no signal from them): {fix}.")
    if report["truncated_fraction"] >= WARN_AT["truncated_fraction"]:
        problems.append(
            f"{report['truncated_fraction']:.0%} of completions hit the {plan.sampling.max_new_tokens} token limit: "
            "raise --max_completion_length."
        )
    if report["unparseable_gold_fraction"] >= WARN_AT["unparseable_gold_fraction"]:
        problems.append(
            f"{report['unparseable_gold_fraction']:.0%} of training rows have no usable gold answer (the accuracy "
            "reward skips them): check --solution_column / --answer_column."
        )
    if report["dropped"].get("prompt_too_long"):
        problems.append(
            f"{report['dropped']['prompt_too_long']} prompts are longer than --max_prompt_length "
            f"{plan.max_prompt_length} and were dropped: raise it to keep them."
        )
    if zero >= NO_SIGNAL_AT:
        return "no_signal", problems
    return ("warn" if problems else "ok"), problems


def summary_lines(report: dict) -> list[str]:
    """The verdict as printed at the start of a run."""
    lines = [
        f"Preflight: {report['verdict'].upper()} ({report['prompts']} prompts x "
        f"{report['completions'] // max(report['prompts'], 1)} completions from "
        f"{report.get('sampled_from', 'the untrained model')})",
        f"  format reward {report['format_reward_mean']:.2f} {report['format_distribution']}, accuracy "
        f"{report['accuracy_mean']}, groups without signal {report['zero_variance_group_fraction']:.0%}, "
        f"truncated {report['truncated_fraction']:.0%}",
        f"  about {report['seconds_per_step']:.1f} s per step, {report['estimated_total_s'] / 60:.1f} min in all",
    ]
    if "dynamic_sampling" in report:
        plan = report["dynamic_sampling"]
        lines.append(
            f"  dynamic sampling: about {plan['rounds']} extra round(s) a step, "
            f"{plan['with_signal_after']:.0%} of groups with signal after"
        )
    return lines + [f"  problem: {p}" for p in report["problems"]]
