"""The model card (``README.md``) of an export: what the model was trained from and on, how, with which
libraries, how to prompt it, and every evaluation of it found in ``results/``, as a table and as the
card's ``model-index`` metadata (the hub reads it).

Every value that comes from a run or a dataset is written through YAML's own dumper (front matter) or
escaped for a Markdown table cell, and the system prompt sits in a fence longer than any backtick run it
holds: a dataset name or prompt cannot break out of the card's structure.
"""

from __future__ import annotations

import glob
import json
import os
import re

# GRPOConfig fields that name places or secrets, or that the run sets per machine: not the recipe.
_NOT_RECIPE = {"output_dir", "logging_dir", "run_name", "hub_token", "push_to_hub_token", "hub_model_id"}
_NOT_RECIPE |= {"use_cpu", "bf16", "fp16", "report_to", "local_rank", "data_seed", "ddp_backend"}


def cell(value) -> str:
    """``value`` as one Markdown table cell: pipes escaped, line breaks as spaces.

    >>> cell("a|b\\nc")
    'a\\\\|b c'
    """
    return " ".join(str(value).split()).replace("|", "\\|").replace("`", "'")  # a backtick would end a code span


def fenced(text: str) -> str:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def evaluations(folder: str, results_dir: str) -> list[dict]:
    """Summaries under ``results_dir`` (any depth) of evaluations of exactly ``folder``'s weights as they are
    now (eval.py records their fingerprint; a summary without one is matched by path), oldest first; an
    evaluation of the run's own training rows is not a held-out result and is left out."""
    from trl_grpo.models import locate
    from trl_grpo.runs.results import weights_fingerprint

    target = os.path.realpath(folder)
    fingerprint = weights_fingerprint(locate.resolve_model(folder))
    found = []
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "*.summary.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as f:
                summary = json.load(f)
        except (OSError, ValueError):
            continue  # a file being written, or not ours: not an evaluation to report
        if not isinstance(summary, dict) or not summary.get("complete", True):
            continue
        recorded = (summary.get("settings") or {}).get("weights")
        model = summary.get("model")
        same = recorded == fingerprint if recorded else isinstance(model, str) and os.path.realpath(model) == target
        against = str((summary.get("contamination") or {}).get("checked_against") or "")
        if same and not against.startswith("none: these are the run's own training rows"):
            found.append({**summary, "_file": path})
    return sorted(found, key=lambda s: str(s.get("finished", "")))


# The embedded model's hub id: what a card's base_model names (the run used the copy the package ships).
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def base_model(record: dict) -> tuple[str, str | None]:
    """(the base as the run named it, its hub id for the card's metadata, None for a local model)."""
    from trl_grpo.models import locate

    started = record.get("started_from") or {}
    path = str(started.get("base") or record.get("model_path") or "")
    named = str(record.get("args", {}).get("model_id") or path)
    if started:
        named = path
    if named == locate.EMBEDDED_MODEL_ID or os.path.basename(path.rstrip(os.sep)) == locate.EMBEDDED_NAME:
        return EMBEDDED_HUB_ID, EMBEDDED_HUB_ID
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", named) and not os.path.isdir(named):
        return named, named
    return named, None


def changed_settings(grpo_config: dict) -> dict:
    """The recorded GRPOConfig fields whose value differs from a GRPOConfig built with TRL's defaults."""
    import tempfile

    from trl import GRPOConfig

    with tempfile.TemporaryDirectory() as folder:
        defaults = GRPOConfig(output_dir=folder, use_cpu=True, bf16=False).to_dict()
    out = {}
    for key, value in sorted(grpo_config.items()):
        if key in _NOT_RECIPE or key.startswith("_") or key not in defaults:
            continue
        if value != defaults[key]:
            out[key] = (value, defaults[key])
    return out


def front_matter(meta: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def model_index(name: str, evals: list[dict]) -> list[dict]:
    results = []
    for e in evals:
        dataset = str(e.get("dataset_id"))
        metrics = [{"type": "accuracy", "value": e.get("accuracy"), "name": f"accuracy (n={e.get('n')})"}]
        if e.get("math_verify_accuracy") is not None:
            metrics.append({"type": "math_verify_accuracy", "value": e["math_verify_accuracy"], "name": "math-verify"})
        results.append(
            {
                "task": {"type": "text-generation", "name": "math reasoning"},
                "dataset": {"name": f"{dataset} {e.get('split')}", "type": dataset, "split": str(e.get("split"))},
                "metrics": metrics,
            }
        )
    return [{"name": name, "results": results}] if results else []


def write_card(out_dir: str, src: dict, name: str, results_dir: str, system_prompt: str, merged: bool) -> str:
    """Write ``out_dir/README.md`` for the export of ``src`` (merged.source); returns its path."""
    record = src["record"]
    args = record.get("args", {})
    base, hub_id = base_model(record)
    dataset = str(args.get("dataset_id"))
    evals = evaluations(src["folder"], results_dir)
    meta = {
        **({"base_model": hub_id} if hub_id else {}),
        "library_name": "transformers" if merged else "peft",
        "tags": ["trl", "grpo", "trl_grpo", "math", "reasoning"],
        "datasets": [dataset],
        "pipeline_tag": "text-generation",
        "model-index": model_index(name, evals),
    }
    adapter = record.get("lora_config")
    how = f"a LoRA adapter (r={adapter.get('r')}, alpha={adapter.get('lora_alpha')})" if adapter else "the whole model"
    lines = [
        front_matter(meta),
        f"# {cell(name)}",
        "",
        f"Trained by trl_GRPO with GRPO (TRL's `GRPOTrainer`) "
        f"from `{cell(base)}` on `{cell(dataset)}`, training {how}; exported from `{cell(src['folder'])}`"
        + (" with the adapter merged in." if merged and adapter else "."),
        "",
        "## Output contract and prompting",
        "",
        "Every answer is written `<think>reasoning</think><answer>\\boxed{final answer}</answer>`. The model was",
        f"trained with this system prompt (template `{cell(args.get('prompt_template'))}`)"
        + (", and each answer starts with `<think>` already written:" if args.get("prefill_think") else ":"),
        "",
        fenced(system_prompt),
        "",
        "## Training",
        "",
        f"{record.get('sft', {}) and 'A supervised cold start, then ' or ''}GRPO; the settings that differ "
        "from TRL's `GRPOConfig` defaults:",
        "",
        "| setting | this run | TRL's default |",
        "| --- | --- | --- |",
    ]
    for key, (value, default) in changed_settings(record.get("grpo_config", {})).items():
        lines.append(f"| `{cell(key)}` | {cell(value)} | {cell(default)} |")
    recipe = (record.get("recipe") or {}).get("path")
    lines += [
        "",
        f"Rewards: `{cell(args.get('reward_funcs'))}`"
        + (f"; recipe file: `{cell(recipe)}`" if recipe else "")
        + (f"; a cold start of {cell(args.get('sft_steps'))} supervised steps first" if args.get("sft_steps") else "")
        + ".",
    ]
    versions = record.get("versions", {})
    lines += ["", "Libraries: " + ", ".join(f"{cell(k)} {cell(v)}" for k, v in versions.items() if v) + ".", ""]
    lines += ["## Evaluations", ""]
    if evals:
        lines += ["| dataset | split | n | accuracy [95%] | format | file |", "| --- | --- | --- | --- | --- | --- |"]
        for e in evals:
            low, high = (e.get("accuracy_ci95") or [None, None])[:2]
            interval = f"[{low:.3f}, {high:.3f}]" if isinstance(low, float) and isinstance(high, float) else ""
            accuracy = e.get("accuracy")
            shown = f"{accuracy:.3f} {interval}" if isinstance(accuracy, (int, float)) else "-"
            lines.append(
                f"| {cell(e.get('dataset_id'))} | {cell(e.get('split'))} | {cell(e.get('n'))} | {shown} | "
                f"{cell(e.get('format_reward_mean'))} | {cell(os.path.basename(e['_file']))} |"
            )
    else:
        folder = cell(src["folder"])
        lines.append(
            f"No evaluation of `{folder}` in `{cell(results_dir)}/`: `python eval.py --model_dir {folder}` adds one."
        )
    path = os.path.join(out_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
