"""Every field of TRL's ``GRPOConfig`` as a flag of main.py, generated from TRL's own dataclass.

    python main.py --adam_beta2 0.99 --logging_first_step --no-push_to_hub      # any GRPOConfig field
    python -m trl_grpo.settings.trl_fields                                     # the fields and their types

The project's own flags (settings/flags.py) come first and keep their names; every other field of the
installed ``GRPOConfig`` becomes ``--FIELD`` with TRL's help text and default, read as YAML (numbers,
true/false, lists) and converted to the field's type (settings/recipe.py ``trainer_values``), so a
TRL upgrade brings its new fields with it. A boolean field takes ``--FIELD``, ``--no-FIELD`` and
``--FIELD true|false``. An unset field is not passed (nor in the parsed namespace): TRL's default
applies. The table is read from
TRL once per TRL version and kept in the cache folder, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import os

# GRPOConfig fields the run sets itself from its own flags and facts (device, precision, folders):
# a flag for them would only contradict those.
SET_BY_THE_RUN = frozenset(
    ("output_dir", "bf16", "fp16", "use_cpu", "report_to", "logging_dir", "data_seed", "reward_weights")
)


OTHER = "fields neither docstring places"
_FORMAT = 3  # of the cache file: a new format never reads an old file


def _cache_path(version: str) -> str:
    folder = os.path.expanduser(os.environ.get("TRL_GRPO_CACHE") or "~/.cache/trl_grpo")
    return os.path.join(folder, f"grpo_config_fields-v{_FORMAT}-{version}.json")


def _well_formed(fields) -> bool:
    keys = {"name", "type", "default", "help", "bool", "group"}
    return isinstance(fields, list) and bool(fields) and all(isinstance(f, dict) and keys <= set(f) for f in fields)


def grpo_config_fields() -> list[dict]:
    """``[{name, type, default, help, bool}]`` of the installed GRPOConfig, from the cache or from TRL."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # GRPOConfig's fields come from TRL and from transformers' TrainingArguments
        key = f"trl-{version('trl')}-transformers-{version('transformers')}"
    except PackageNotFoundError:
        return []
    path = _cache_path(key)
    try:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        if _well_formed(cached):
            return cached
    except (OSError, ValueError):
        pass
    try:
        fields = _read_from_trl()
    except Exception:  # noqa: BLE001 - TRL that cannot be imported: the project's own flags still work
        return []
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(fields, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: read from TRL each time
    return fields


def sections(doc: str) -> dict[str, str]:
    r"""Field name -> the heading it is documented under, from a docstring laid out as TRL's and
    transformers' configs are (``> Parameters that control generation``, then ``name (`type`): ...``).

    >>> sections("    > Parameters that control generation\n        temperature (`float`):\n"
    ...          "    > [!TIP]\n    > Not a heading\n\n    > Optimizer\n        optim (`str`):")
    {'temperature': 'generation', 'optim': 'Optimizer'}
    """
    import re

    out, heading, in_note = {}, None, False
    for line in (doc or "").splitlines():
        text = line.strip()
        if text.startswith("> [!"):  # a note or tip box: its lines are not headings
            in_note = True
            continue
        if in_note and text.startswith(">"):
            continue
        in_note = False
        if text.startswith("> ") and not text.startswith("> -"):
            heading = text[2:].strip().removeprefix("Parameters that control ").removeprefix("the ")
            continue
        entry = re.match(r"\s+([A-Za-z_]\w*)( \(`|:$)", line)
        if entry and heading:
            out.setdefault(entry.group(1), heading)
    return out


def _read_from_trl() -> list[dict]:
    import dataclasses
    import typing

    from transformers import TrainingArguments
    from trl import GRPOConfig

    hints = typing.get_type_hints(GRPOConfig)
    # TRL's own sections first; the fields GRPOConfig inherits are grouped as transformers documents them
    groups = {k: f"transformers: {v}" for k, v in sections(TrainingArguments.__doc__).items()}
    groups.update({k: f"TRL: {v}" for k, v in sections(GRPOConfig.__doc__).items()})
    out = []
    for f in dataclasses.fields(GRPOConfig):
        if not f.init:
            continue
        kind = hints.get(f.name, str)
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = None
        text = " ".join(str(f.metadata.get("help", "")).split())
        out.append(
            {
                "name": f.name,
                "type": getattr(kind, "__name__", None) or str(kind).replace("typing.", ""),
                "default": default if isinstance(default, (str, int, float, bool, type(None))) else repr(default),
                "help": text,
                "bool": kind is bool or str(kind) in ("bool | None", "typing.Optional[bool]"),
                "group": groups.get(f.name, OTHER),
            }
        )
    return out


class _Boolean(argparse.Action):
    """``--X`` (true), ``--X true|false``, ``--no-X`` (false), as TRL's parser and recipes write them."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.update(nargs="?", default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string and option_string.startswith("--no-"):
            setattr(namespace, self.dest, "false")
            return
        word = "true" if values is None else str(values).strip().lower()
        if word not in ("true", "false"):
            parser.error(f"argument {option_string}: expected true or false, got {values!r}")
        setattr(namespace, self.dest, word)


def _group_order(field: dict) -> int:
    """TRL's own sections first, then transformers', then fields no docstring places (a stable sort keeps
    each section's order)."""
    if field["group"] == OTHER:
        return 2
    return 0 if field["group"].startswith("TRL") else 1


def add_to(parser: argparse.ArgumentParser, taken: set[str]) -> list[str]:
    """Add a flag for every GRPOConfig field not in ``taken`` (the project's flags and spellings) and not
    set by the run itself; returns the names added."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    added = []
    for field in sorted(grpo_config_fields(), key=_group_order):
        name = field["name"]
        if name in taken or name in SET_BY_THE_RUN:
            continue
        title = f"GRPOConfig, {field['group']}"
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        short = field["help"].split(". ")[0][:160]
        default = f" (TRL's default: {field['default']})" if field["default"] not in (None, "") else ""
        help_text = f"{short}{default}".replace("%", "%%") or "a GRPOConfig field"
        if field["bool"]:
            group.add_argument(
                f"--{name}", f"--no-{name}", dest=name, action=_Boolean, metavar="true|false", help=help_text
            )
        else:
            metavar = field["type"].upper()[:12]
            group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=metavar, help=help_text)
        added.append(name)
    return added


if __name__ == "__main__":
    for field in grpo_config_fields():
        print(f"{field['name']:40s} {field['type']:30s} {field['group']:40s} {field['default']!r}")
