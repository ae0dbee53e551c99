"""One self-contained HTML page of a run: curves, the preflight verdict, a completion browser, results.

    python report.py ckpts/RUN                                   # -> ckpts/RUN/report.html
    python report.py ckpts/RUN results/base.json results/trained.json

Reads what a run folder holds (run_config.json, run_state.json, log_history.json,
reward_curves.png, preflight.json, completions.jsonl) and any eval.py results files, and
writes ``<run>/report.html`` (or ``--out``): no external scripts, fonts or styles, so it opens
offline. train.py writes it at the end of every run. The page is report_template.html beside
this file with the data embedded as JSON, written so that no text in it can end the script or
open a comment. Results files are paired problem by problem (by problem text), and refused,
with counts, when they are not over the same problems.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections import Counter

from trl_grpo.data.splits import normalise_problem

logger = logging.getLogger(__name__)


TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.html")


class ReportError(ValueError):
    """An input or output the page cannot be made from; the message names it and the fix."""


def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        logger.warning("report: %s unreadable (%s); left out", path, exc)
        return default


def read_completions(path: str) -> tuple[list[dict], dict[str, str], int]:
    """The completion log's rows, each prompt's text by its index (written once per prompt), and how
    many lines were unreadable (cut short, not UTF-8, not an object): those are left out and counted."""
    rows, prompts, bad = [], {}, 0
    if not os.path.isfile(path):
        return rows, prompts, bad
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included: a line cut mid-character by an interruption
                bad += 1
                continue
            if not isinstance(row, dict):
                bad += 1
                continue
            if "prompt" in row:
                prompts[str(row.get("prompt_index"))] = row.pop("prompt")
            rows.append(row)
    if bad:
        logger.warning("report: %d unreadable lines of %s left out", bad, path)
    return rows, prompts, bad


def _results_file(path: str) -> tuple[list[dict], dict]:
    """The records and summary of one eval.py results file, or ``ReportError`` naming what is wrong."""
    if path.endswith(".summary.json"):
        raise ReportError(f"{path} is an evaluation summary; pass the results file beside it ({path[:-13]}.json).")
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (OSError, ValueError) as exc:
        raise ReportError(f"results file {path} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ReportError(
            f"{path} is not an eval.py results file (a JSON list of one record per problem). Pass the file "
            "eval.py wrote as --output_file."
        )
    stem = path[:-5] if path.endswith(".json") else path
    summary = _read_json(f"{stem}.summary.json", {})
    return records, summary if isinstance(summary, dict) else {}


def _problem_key(record: dict) -> str:
    return normalise_problem(record.get("problem") or _problem_text(str(record.get("prompt", ""))))


def _paired(records: list[dict], base: list[dict], path: str, base_path: str) -> list[dict]:
    """``records`` in the order of ``base``'s problems (by problem text), or ``ReportError`` with counts."""
    keys, base_keys = Counter(map(_problem_key, records)), Counter(map(_problem_key, base))
    if keys != base_keys:
        shared = sum((keys & base_keys).values())
        raise ReportError(
            f"{path} and {base_path} are not over the same problems ({shared} shared, "
            f"{sum((base_keys - keys).values())} only in {base_path}, {sum((keys - base_keys).values())} only in "
            f"{path}). Pass results of one dataset split, evaluated with the same --limit."
        )
    queue: dict[str, list[dict]] = {}
    for r in records:
        queue.setdefault(_problem_key(r), []).append(r)
    return [queue[_problem_key(b)].pop(0) for b in base]


def _mean(values) -> float | None:
    kept = [v for v in values or [] if v is not None]
    return sum(kept) / len(kept) if kept else None


def read_results(paths: list[str]) -> list[dict]:
    """Each eval.py results file: its label, summary and records (prompt text left out), every file's
    records in the first file's problem order."""
    out, first = [], None
    for path in paths:
        records, summary = _results_file(path)
        if first is None:
            first = (records, path)
        else:
            records = _paired(records, first[0], path, first[1])
        keep = ("problem_id", "gold_answer", "extracted_answer", "reward", "format_reward", "completion", "truncated")
        rows = [
            {k: r.get(k) for k in keep}
            | {"i": i, "problem": (r.get("problem") or _problem_text(r.get("prompt", "")))[:300]}
            | {"math_verify_reward": _mean(r.get("math_verify_rewards"))}  # over the samples, as reward is
            for i, r in enumerate(records)
        ]
        out.append(
            {"label": summary.get("model", os.path.basename(path)), "file": path, "summary": summary, "records": rows}
        )
    return out


def _problem_text(prompt: str) -> str:
    """The user's problem out of a rendered prompt (the text after the last user marker)."""
    for marker in ("<|im_start|>user\n", "user\n", "\n"):
        if marker in prompt:
            prompt = prompt.rsplit(marker, 1)[-1]
            break
    return prompt.split("<|im_end|>")[0].strip()


def is_run(folder: str) -> bool:
    """Whether ``folder`` is a run folder main.py wrote (it holds run_config.json or run_state.json)."""
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("run_config.json", "run_state.json"))


def collect(run_dir: str, results: list[str]) -> dict:
    """Everything the page shows, as one JSON-able dict."""
    completions, prompts, bad = read_completions(os.path.join(run_dir, "completions.jsonl"))
    config = _read_json(os.path.join(run_dir, "run_config.json"), {})
    config = config if isinstance(config, dict) else {}
    curves = os.path.join(run_dir, "reward_curves.png")
    image = None
    if os.path.isfile(curves):
        with open(curves, "rb") as f:
            image = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    keys = ("model_id", "dataset_id", "prompt_template", "max_steps", "num_generations", "max_completion_length")
    settings = config.get("args") if isinstance(config.get("args"), dict) else {}
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "settings": {k: settings.get(k) for k in (*keys, "learning_rate")},
        "device": config.get("device"),
        "state": _read_json(os.path.join(run_dir, "run_state.json"), {}),
        "preflight": _read_json(os.path.join(run_dir, "preflight.json")),
        "preflight_after_sft": _read_json(os.path.join(run_dir, "preflight_after_sft.json")),
        "curves": image,
        "completions": completions,
        "unreadable_completion_lines": bad,
        "prompts": prompts,
        "results": read_results(results),
    }


# Inside <script>, "</script" ends the block and "<!--" starts an HTML comment: in the embedded JSON every
# "<" (and ">", "&", and the two line separators JavaScript treats as newlines) is written as its \\u escape,
# which JSON.parse reads back as the same character.
_SCRIPT_SAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(data) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element whatever its strings hold.

    >>> embed_json({"a": "</script><!--"})
    '{"a": "\\\\u003c/script\\\\u003e\\\\u003c!--"}'
    """
    text = json.dumps(data, ensure_ascii=False)
    for ch, escaped in _SCRIPT_SAFE.items():
        text = text.replace(ch, escaped)
    return text


def render(data: dict) -> str:
    """The template with ``data`` embedded (``embed_json``)."""
    with open(TEMPLATE, encoding="utf-8") as f:
        page = f.read()
    return page.replace("/*DATA*/null", embed_json(data), 1)


def write_report(run_dir: str, results: list[str] = (), out: str | None = None) -> str:
    """Write the page; returns its path. ``ReportError`` for a folder that is not a run, an unreadable or
    mismatched results file, or an output that cannot be written."""
    if not os.path.isdir(run_dir) or not is_run(run_dir):
        raise ReportError(
            f"{run_dir!r} is not a run folder (no run_config.json or run_state.json). Pass a folder main.py wrote, "
            "e.g. ckpts/<run>."
        )
    out = out or os.path.join(run_dir, "report.html")
    if os.path.isdir(out):
        raise ReportError(f"--out {out!r} is a folder; give a file path such as {os.path.join(out, 'report.html')}.")
    page = render(collect(run_dir, list(results)))
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, out)
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ReportError(f"cannot write {out!r} ({exc.strerror}). Choose a writable --out.") from None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run folder from main.py")
    p.add_argument("results", nargs="*", help="eval.py results files to show per problem (two: side by side)")
    p.add_argument("--out", default=None, help="where to write the page (default: <run_dir>/report.html)")
    args = p.parse_args(argv)
    try:
        path = write_report(args.run_dir, args.results, args.out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Report: {path}")
    return 0
