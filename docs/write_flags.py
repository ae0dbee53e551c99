"""Write docs/flags.md, the flag reference of main.py and eval.py, from trl_grpo/settings/flags.py's one table.

    python docs/write_flags.py          # or: make docs; tests/test_readme.py checks the file is current

The parsers' help= texts are the one source; this file only lays them out, grouped as the
parsers group them, each with the key a recipe file (--config) uses for it.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "docs", "flags.md")


def table(command: str, group: str) -> list[str]:
    from trl_grpo.settings import flags

    parser = flags.build_parser(command)
    rows = ["| flag | recipe key | default | meaning |", "| --- | --- | --- | --- |"]
    for flag in (f for f in flags.flags_of(command) if f.group == group):
        action = next(a for a in parser._actions if a.dest == flag.name)
        spelled = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{flag.name.upper()}` (first argument)"
        recipe = flag.name != "config" and command != "export"  # export.py reads no recipe
        keys = ", ".join(f"`{k}`" for k in (flag.name, *flag.aliases)) if recipe else "-"
        meaning = action.help.replace("%%", "%").replace("|", "/")
        rows.append(f"| {spelled} | {keys} | `{action.default}` | {meaning} |")
    return rows


def render() -> str:
    from trl_grpo.settings import flags

    lines = [
        "# Flags",
        "",
        "Generated from `trl_grpo/settings/flags.py` by `python docs/write_flags.py` (`make docs`); "
        "a test fails when it is stale.",
        "Every flag can also be set in a recipe file (`--config PATH.yaml`) under its recipe key; flags on the",
        "command line win. Every other `GRPOConfig` field is a flag of main.py and a recipe key under its own",
        "name (the last section, grouped as TRL and transformers document them), generated from the installed TRL;",
        "`--trainer KEY=VALUE` works too.",
        "",
    ]
    for command, title in (
        ("train", "`main.py` (training)"),
        ("eval", "`eval.py` (evaluation)"),
        ("export", "`export.py` (export)"),
    ):
        lines += [f"## {title}", ""]
        for group in flags.GROUPS:
            rows = table(command, group)
            if len(rows) > 2:
                lines += [f"### {group}", "", *rows, ""]
        if command == "train":
            lines += trl_table() + older_table()
    return "\n".join(lines)


def trl_table() -> list[str]:
    """TRL's other GRPOConfig fields, as main.py takes them (generated from the installed TRL)."""
    from trl_grpo.settings import flags

    parser = flags.build_parser("train")
    rows = [
        "### TRL's GRPOConfig fields",
        "",
        "Every other field of the installed TRL's `GRPOConfig` (trl_grpo/settings/trl_fields.py): a flag and a",
        "recipe key under its own name; unset, TRL's default applies.",
        "",
        "Grouped as TRL's and transformers' own documentation groups them.",
        "",
    ]
    ours = set(parser.trl_fields)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.dest in ours]
        if not actions:
            continue
        rows += [f"#### {group.title}", "", "| flag | recipe key | meaning |", "| --- | --- | --- |"]
        for action in actions:
            spelled = ", ".join(f"`{o}`" for o in action.option_strings)
            rows.append(f"| {spelled} | `{action.dest}` | {action.help.replace('%%', '%').replace('|', '/')} |")
        rows.append("")
    return rows


def older_table() -> list[str]:
    """Keys of older TRL and transformers releases (trl_grpo/settings/older_keys.py) and what becomes of them."""
    from trl_grpo.settings.older_keys import OLDER

    rows = [
        "### Older releases' keys",
        "",
        "Keys that older TRL and transformers took, which recipes and tutorials still carry. In a recipe each is",
        "read under today's name, or skipped, with one line saying so; typed on the command line, it stops with",
        "its replacement.",
        "",
        "| older key | today | why |",
        "| --- | --- | --- |",
    ]
    for key, old in OLDER.items():
        now = f"`{old.now}`" + (" (converted)" if old.convert else "") if old.now else "skipped"
        rows.append(f"| `--{key}` | {now} | {old.why} |")
    return [*rows, ""]


if __name__ == "__main__":
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(render())
    print(f"wrote {OUT}")
