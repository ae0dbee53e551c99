"""One self-contained HTML page of a run: curves, the preflight verdict, a completion browser, results.

    python report.py ckpts/RUN                                   # -> ckpts/RUN/report.html
    python report.py ckpts/RUN results/base.json results/trained.json

Reads what a run folder holds (run_config.json, run_state.json, log_history.json,
reward_curves.png, preflight.json, completions.jsonl) and any eval.py results files, and
writes ``<run>/report.html`` (or ``--out``): no external scripts, fonts or styles, so it opens
offline. train.py writes it at the end of every run. The page is assets/report_template.html
with the data embedded as JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys

logger = logging.getLogger(__name__)

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "report_template.html")


def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        logger.warning("report: %s unreadable (%s); left out", path, exc)
        return default


def read_completions(path: str) -> tuple[list[dict], dict[str, str]]:
    """The completion log's rows, and each prompt's text by its index (written once per prompt)."""
    rows, prompts = [], {}
    if not os.path.isfile(path):
        return rows, prompts
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by an interruption
            if "prompt" in row:
                prompts[str(row["prompt_index"])] = row.pop("prompt")
            rows.append(row)
    return rows, prompts


def read_results(paths: list[str]) -> list[dict]:
    """Each eval.py results file: its label, summary and records (prompt text left out)."""
    out = []
    for path in paths:
        records = _read_json(path, [])
        stem = path[:-5] if path.endswith(".json") else path
        summary = _read_json(f"{stem}.summary.json", {})
        keep = ("problem_id", "gold_answer", "extracted_answer", "reward", "format_reward", "completion", "truncated")
        rows = [
            {k: r.get(k) for k in keep} | {"i": i, "problem": _problem_text(r.get("prompt", ""))}
            for i, r in enumerate(records)
        ]
        out.append(
            {"label": summary.get("model", os.path.basename(path)), "file": path, "summary": summary, "records": rows}
        )
    return out


def _problem_text(prompt: str) -> str:
    """The user's problem out of a rendered prompt (the text after the last user marker), short."""
    for marker in ("<|im_start|>user\n", "user\n", "\n"):
        if marker in prompt:
            prompt = prompt.rsplit(marker, 1)[-1]
            break
    return prompt.split("<|im_end|>")[0].strip()[:300]


def collect(run_dir: str, results: list[str]) -> dict:
    """Everything the page shows, as one JSON-able dict."""
    completions, prompts = read_completions(os.path.join(run_dir, "completions.jsonl"))
    config = _read_json(os.path.join(run_dir, "run_config.json"), {})
    curves = os.path.join(run_dir, "reward_curves.png")
    image = None
    if os.path.isfile(curves):
        with open(curves, "rb") as f:
            image = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    return {
        "run": os.path.basename(os.path.normpath(run_dir)),
        "settings": {
            k: config.get("args", {}).get(k)
            for k in (
                "model_id",
                "dataset_id",
                "prompt_template",
                "max_steps",
                "num_generations",
                "max_completion_length",
                "learning_rate",
            )
        },
        "device": config.get("device"),
        "state": _read_json(os.path.join(run_dir, "run_state.json"), {}),
        "preflight": _read_json(os.path.join(run_dir, "preflight.json")),
        "curves": image,
        "completions": completions,
        "prompts": prompts,
        "results": read_results(results),
    }


def render(data: dict) -> str:
    """The template with ``data`` embedded (``</`` escaped so no string can end the script)."""
    with open(TEMPLATE, encoding="utf-8") as f:
        page = f.read()
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return page.replace("/*DATA*/null", blob, 1)


def write_report(run_dir: str, results: list[str] = (), out: str | None = None) -> str:
    """Write the page; returns its path."""
    out = out or os.path.join(run_dir, "report.html")
    page = render(collect(run_dir, list(results)))
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run folder from main.py")
    p.add_argument("results", nargs="*", help="eval.py results files to show per problem (two: side by side)")
    p.add_argument("--out", default=None, help="where to write the page (default: <run_dir>/report.html)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.run_dir):
        print(f"error: {args.run_dir!r} is not a folder; pass a run folder from main.py (ckpts/...).", file=sys.stderr)
        return 2
    missing = [r for r in args.results if not os.path.isfile(r)]
    if missing:
        print(f"error: no such results file: {missing[0]}; pass files written by eval.py.", file=sys.stderr)
        return 2
    print(f"Report: {write_report(args.run_dir, args.results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
