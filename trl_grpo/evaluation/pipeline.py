"""The evaluation command behind eval.py: its flags, the run's own settings as defaults, and the
pipeline resolve -> prompts -> model -> generate -> score -> summary.

    python eval.py --help                                     # eval.py is the entry point

Writes ``--output_file`` (a JSON list, one record per problem, appended to a partial file as it
is scored) and ``<stem>.summary.json`` beside it, then prints ``Accuracy: 0.xxxx (n = N ...)``
and a summary table. Prompts come from data_utils' one prompt pipeline with the settings the
run was trained with (its run_config.json, or its parent's for a checkpoint-N folder).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import signal
import sys
import threading
import time

from trl_grpo.answers import equivalence, registry
from trl_grpo.data import prepare
from trl_grpo.models import hardware, loading, locate
from trl_grpo.observe import metrics
from trl_grpo.observe.telemetry import contract_telemetry
from trl_grpo.runs.cli import UsageError, user_errors
from trl_grpo.runs.context import changed_reward_files, check_held_out, run_record, run_settings, split_context
from trl_grpo.runs.files import release, write_json_atomic
from trl_grpo.runs.results import (
    PartialResults,
    finished_summary,
    load_summary,
    lock_path,
    partial_path,
    plan_output,
    rows_digest,
    summary_path,
    weights_fingerprint,
)
from trl_grpo.settings import flags

logger = logging.getLogger(__name__)


def build_parser():
    """eval.py's parser (trl_grpo/settings/flags.py holds both commands' flags)."""
    return flags.build_parser("eval")


# ---------------------------------------------------------------- files
# ---------------------------------------------------------------- settings from the run
# ---------------------------------------------------------------- generation
def evaluate(args, model_dir: str, label: str, output_file: str, context: dict | None = None) -> dict:
    """Resolve -> prompts -> model -> generate -> score (written as it goes) -> summary.

    ``context`` (``split_context``) says which rows a run's evaluation may score: its test split as
    held out in training, without the problems it trained on.

    An interruption (Ctrl-C, a crash) leaves the scored records in the partial file and a summary
    marked ``"complete": false``; ``--resume`` generates only what is missing.
    """
    resolved = locate.resolve_model(model_dir, args.base_model)
    if not os.path.isdir(resolved["base"]):
        locate.check_hub_model(resolved["base"])  # a clear error before any heavy work
    tokenizer = loading.load_tokenizer(
        resolved["adapter"] or resolved["base"],
        args.trust_remote_code,
        None if resolved["adapter"] else args.model_revision,  # an adapter folder holds its own tokenizer
        args.chat_template,
        args.chat_template_kwargs,
    )
    context = context or split_context(args)
    rows, dropped, held_out = prepare.prompt_rows(
        tokenizer,
        args.dataset_id,
        args.split,
        context["role"],
        held_out=context["held_out"],
        exclude=context["exclude"],
        template=args.prompt_template,
        system=args.system_prompt,
        dataset_config=args.dataset_config,
        prefill_think=args.prefill_think,
        max_prompt_length=args.max_prompt_length,
        columns=(args.problem_column, args.solution_column, args.answer_column),
        limit=args.limit,
        prompt_format=args.prompt_format,
        context=locate.context_length(resolved["base"]),
    )
    check_held_out(context["recorded"], held_out, args.split)
    device = hardware.pick_device(args.device)
    dtype = hardware.weights_dtype(args.dtype, hardware.eval_dtype(device, args.bf16), resolved["base"])
    fast = hardware.fast_paths_enabled(args.fast_paths, device, "eval")
    settings = _identity(args, label, rows, resolved, device, dtype, fast)
    partial = PartialResults(output_file, settings, args.resume and os.path.exists(partial_path(output_file)))
    meta = {
        "model": label,
        "model_source": resolved["source"],
        "dataset_id": args.dataset_id,
        "split": args.split,
        "settings": {**settings, "batch_size": args.batch_size},
        "device": device,
        "dtype": str(dtype),
        "fast_paths": {"setting": args.fast_paths, "enabled": fast},
        "results_file": output_file,
        "dropped": {k: dropped[k] for k in ("prompt_too_long", "empty_problem", "contaminated")},
        "held_out": held_out,
        "rewards_changed": getattr(args, "rewards_changed", []),
        "contamination": {
            "checked_against": context["against"],
            "left_out": dropped["contaminated"],
            "matched": dropped.get("contaminated_by"),
        },
    }
    checks_before, start = dict(equivalence.COUNTS), time.time()
    try:
        generated = _generate_missing(args, resolved, tokenizer, rows, partial, device, dtype, fast)
    except BaseException:
        records = [partial.records[i] for i in sorted(partial.records)]
        summary = {**metrics.summarize(records, args.num_samples), **meta, "complete": False}
        summary.update(missing=len(rows) - len(partial.records), partial_results=partial.path)
        with contextlib.suppress(UsageError):  # a full disk: the partial records still hold what was scored
            write_json_atomic(summary_path(output_file), summary)
        logger.error(
            "Evaluation stopped with %d of %d problems scored (kept in %s). Continue with the same command plus "
            "--resume.",
            len(partial.records),
            len(rows),
            partial.path,
        )
        raise
    wall = time.time() - start
    meta["fast_paths"]["lean_decode"] = generated.get("lean_decode")  # None: nothing left to generate
    records = [partial.records[i] for i in range(len(rows))]
    summary = {**metrics.summarize(records, args.num_samples), **meta, "complete": True}
    summary["telemetry"] = contract_telemetry(
        [c for r in records for c in r["completions"]],
        prompts=[r["prompt"] for r in records for _ in r["completions"]],
        truncated=[t for r in records for t in r.get("truncated", [False] * len(r["completions"]))],
        lengths=[n for r in records for n in r.get("completion_lengths", [r["completion_tokens"]])],
    )
    summary["dropped"]["unparseable_gold"] = summary["skipped_unparseable_gold"]
    summary.update(_run_facts(wall, generated, checks_before))
    then = f"free some space, then run the same command plus --resume (every record is kept in {partial.path})"
    write_json_atomic(output_file, records, then)
    write_json_atomic(summary_path(output_file), summary, then)
    os.remove(partial.path)
    return summary


def _identity(args, label, rows, resolved, device, dtype, fast) -> dict:
    """What a resumed evaluation must share with the partial one: the flags, and beyond them the
    rows' content, the weights, and how they run."""
    settings = {"model": label, "dataset_id": args.dataset_id, "split": args.split}
    settings.update({k: getattr(args, k) for k in _SETTINGS})
    settings.update(rows_sha256=rows_digest(rows), weights=weights_fingerprint(resolved))
    settings.update(device=device, dtype=str(dtype), fast_paths=fast)
    return settings


def _generate_missing(args, resolved, tokenizer, rows, partial, device, dtype, fast) -> dict:
    """Generate and score every problem not in ``partial`` yet; returns counts for throughput."""
    todo = [i for i in range(len(rows)) if i not in partial.records]
    logger.info(
        "Evaluating %s on %s %s: %d problems (%d to generate) x %d samples, %s %s",
        *(resolved["source"], args.dataset_id, args.split, len(rows), len(todo), args.num_samples, device, dtype),
    )
    counts = {"problems": len(todo), "tokens": 0}
    if not todo:
        return counts
    import torch

    from trl_grpo.fast import decoding  # torch and transformers: imported only when there is work
    from trl_grpo.fast.kv_cache import pick_attention
    from trl_grpo.models.sampling import Sampling, end_ids

    attention = args.attn_implementation or (pick_attention(device, dtype == torch.bfloat16) if fast else None)
    model = loading.load_model(
        resolved,
        dtype,
        device,
        args.trust_remote_code,
        attn_implementation=attention,
        revision=args.model_revision,
        init_kwargs=args.model_init_kwargs,
    )
    model.eval()

    end = end_ids(model, tokenizer)
    params = registry.parameters_of(run_settings(args.model_dir))  # the run's own cosine_*, repetition_*
    rewards = registry.get_reward_funcs(args.reward_funcs, params)
    extra = [f for f in rewards if f.__name__ not in metrics.OWN_REWARDS]

    def on_batch(idx, texts, token_ids):
        for j, outs, ids in zip(idx, texts, token_ids, strict=True):
            row = rows[todo[j]]
            cut = [len(t) >= args.max_completion_length and (not t or t[-1] not in end) for t in ids]
            partial.add(todo[j], metrics.score(row["prompt"], row, outs, ids, cut, extra))
            counts["tokens"] += sum(map(len, ids))

    sampling = Sampling(
        args.max_completion_length,
        args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    # the lean decode step (trl_grpo/fast/lean_decode.py): the same logits to rounding, where the model allows it
    lean, why_not = decoding.lean_decoder(model, torch.device(device).type) if fast else (None, "fast paths off")
    counts["lean_decode"] = why_not or "used"
    prompts = [rows[i]["prompt"] for i in todo]
    decoding.generate_batches(model, tokenizer, prompts, sampling, device, fast, on_batch, lean=lean or False)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return counts


def _run_facts(wall: float, generated: dict, checks_before: dict) -> dict:
    import importlib.metadata as md

    without = {k: v - checks_before.get(k, 0) for k, v in equivalence.COUNTS.items() if v > checks_before.get(k, 0)}
    return {
        "checks_without_verdict": without,
        "generation_wall_s": round(wall, 2),
        "problems_per_s": round(generated["problems"] / wall, 3) if wall and generated["problems"] else None,
        "tokens_per_s": round(generated["tokens"] / wall, 1) if wall and generated["tokens"] else None,
        "generated_tokens": generated["tokens"],
        "versions": {p: md.version(p) for p in ("torch", "transformers", "peft", "math-verify")},
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
    }


# Settings that decide the results: a resumed evaluation must use the same ones.
_SETTINGS = (
    "prompt_template",
    "prompt_format",
    "prefill_think",
    "max_completion_length",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "r1_sampling",
    "num_samples",
    "seed",
    "limit",
    "max_prompt_length",
    "problem_column",
    "solution_column",
    "answer_column",
    "base_model",
    "system_prompt",
    "dataset_config",
    "reward_funcs",
)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends an evaluation as Ctrl-C does: partial records and summary kept


def main(argv: list[str] | None = None) -> int:
    previous = (
        signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        with user_errors():
            return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None, written: list | None = None) -> int:
    from trl_grpo.settings import resolve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    args, startup = resolve.parse("eval", argv)
    if args.benchmark:
        argv = list(argv if argv is not None else sys.argv[1:])
        return _benchmarks(argv, args.benchmark, startup.typed, args.model_dir)
    equivalence.set_verify_timeout(args.verify_timeout)
    args.rewards_changed = changed_reward_files(args)  # refused unless --allow_changed_rewards
    columns: dict[str, dict] = {}
    jobs = []  # (model, column label, results file, base model): every output claimed and checked before any work
    output_file = None
    try:
        resolved = locate.resolve_model(args.model_dir, args.base_model)  # fail on a bad folder before any work
        output_file = plan_output(args, args.model_dir)
        context = split_context(args)  # the same rows for the model and its --compare model
        if args.compare and args.compare.endswith(".json"):
            columns[f"{args.compare} (compare)"] = load_summary(args.compare)
        elif args.compare:
            compare_model = args.compare
            if compare_model == "base":
                trained_from = run_record(args.model_dir).get("model_path")  # a run's base, full fine-tuning's too
                if not resolved["adapter"] and not trained_from:
                    raise UsageError(
                        f"--compare base needs --model_dir to be an adapter or a run folder; {args.model_dir!r} is "
                        "neither. Name the model: --compare MODEL."
                    )
                compare_model = args.base_model or (resolved["base"] if resolved["adapter"] else trained_from)
            compare_file = summary_path(output_file)[: -len(".summary.json")] + ".compare.json"
            jobs.append(
                (compare_model, f"{compare_model} (compare)", plan_output(args, compare_model, compare_file), None)
            )
        jobs.append((args.model_dir, args.model_dir, output_file, args.base_model))
        for model, label, path, base in jobs:
            done = finished_summary(path) if args.resume else None
            if done is not None:
                logger.info("%s is complete already; kept as it is.", path)
            args.base_model = base
            columns[label] = done or evaluate(args, model, model, path, context)
    except KeyboardInterrupt:
        print(
            "Interrupted. Finished records are kept; continue with the same command plus --resume (results: "
            f"{output_file}).",
            file=sys.stderr,
        )
        return 130
    finally:  # every claim made here, the results file's too when a later check refused
        for path in {output_file, *(job[2] for job in jobs)} - {None}:
            release(lock_path(path))
    summary = columns[args.model_dir]
    print(metrics.accuracy_line(summary))
    if context["role"] == "train":
        print("Not a held-out measure: these are the run's own training rows.")
    metrics.print_table(columns)
    print(f"Results: {output_file}\nSummary: {summary_path(output_file)}")
    if written is not None:  # --benchmark's table reads each summary
        written.append(summary_path(output_file))
    return 0


def _benchmarks(argv: list[str], specs: list[str], given: set[str], model: str) -> int:
    """Each ``--benchmark`` as its own evaluation (benchmarks.py), then one table over them."""
    from trl_grpo.evaluation import benchmarks

    runs = [benchmarks.argv_for(spec, argv, given, len(specs) > 1, model) for spec in specs]  # all checked first
    table = {}
    for name, sub_argv in runs:
        written: list[str] = []
        code = _main(sub_argv, written)
        if code != 0:
            return code
        table[name] = (load_summary(written[0]), written[0])
    print("\nbenchmark  n      accuracy [95%]            math-verify alone  summary")
    for name, (s, path) in table.items():
        low, high = (s.get("accuracy_ci95") or [0.0, 0.0])[:2]
        acc = s.get("accuracy")
        shown = f"{acc:.3f} [{low:.3f}, {high:.3f}]" if acc is not None else "-"
        mv = s.get("math_verify_accuracy")
        print(f"{name:10s} {s.get('n', 0):<6d} {shown:25s} {mv if mv is not None else '-':<18} {path}")
    return 0


if __name__ == "__main__":
    from trl_grpo.runs.cli import cli

    sys.exit(cli(main))
