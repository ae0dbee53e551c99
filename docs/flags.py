"""Write docs/flags.md, the flag reference of main.py and eval.py, from their parsers.

    python docs/flags.py          # or: make docs; tests/test_readme.py checks the file is current

The parsers' help= texts are the one source; this file only lays them out.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "docs", "flags.md")


def table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS and "-h" not in action.option_strings:
            flags = ", ".join(f"`{o}`" for o in action.option_strings)
            rows.append(f"| {flags} | `{action.default}` | {action.help.replace('%%', '%').replace('|', '/')} |")
    return rows


def render() -> str:
    import evaluation
    import main

    lines = [
        "# Flags",
        "",
        "Generated from the parsers by `python docs/flags.py` (`make docs`); a test fails when it is stale.",
        "",
        "## `main.py` (training)",
        "",
        *table(main.build_parser()),
        "",
        "## `eval.py` (evaluation)",
        "",
        *table(evaluation.build_parser()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(render())
    print(f"wrote {OUT}")
