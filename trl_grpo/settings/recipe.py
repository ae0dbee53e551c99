"""Recipe files and GRPOConfig fields set by name: ``--config PATH.yaml``, its ``trainer:`` mapping and
``--trainer KEY=VALUE``, read as TRL's ``TrlParser`` and open-r1's recipes read them.

    python main.py --config recipes/cpu_quick.yaml --learning_rate 1e-4

Precedence: built-in defaults < the recipe < the command line. A recipe's keys are flag names
(open-r1's spellings too: ``model_name_or_path``, ``dataset_name``, ...), any ``GRPOConfig`` field
(the same as under ``trainer:``), and ``env:`` (environment variables, as TRL sets them). Values
are converted to the flag's or field's type (YAML 1.1 reads ``1e-5`` as a string: it is a number
here); an unknown key, or a value of the wrong type, is an error that names it and the closest
names, before anything loads. TRL is imported only when a key is not a flag (to read GRPOConfig).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import types
import typing
from dataclasses import dataclass, field

from trl_grpo.data.splits import DataError
from trl_grpo.settings import flags, older_keys
from trl_grpo.settings.yaml_files import read_yaml


class RecipeError(DataError):
    """A recipe key, value or ``--trainer`` entry that cannot be used; the message names it and the fix."""


@dataclass
class Recipe:
    """What a recipe file sets: ``values`` per flag name, ``trainer`` (GRPOConfig fields without a flag),
    and the file's path and SHA-256 (recorded in run_config.json)."""

    path: str
    sha256: str
    values: dict
    trainer: dict
    skipped: list = field(default_factory=list)  # training keys an evaluation does not use
    notes: list = field(default_factory=list)  # keys skipped here, each with what to do instead


# Keys of open-r1's recipes (and older TRL) this tool reads under another name.
_RENAMED = {"dataset_prompt_column": "problem_column"}
# Keys that belong elsewhere: skipped, each said once with what to do instead. (Older releases' keys:
# older_keys.py.)
_ELSEWHERE = {
    "num_processes": "the launcher's setting: accelerate launch --num_processes N",
    "overwrite_output_dir": "this tool never overwrites a run folder: a new --output_dir, or resume it",
}


def load(path: str, command: str) -> Recipe:
    """Read a recipe for ``command`` ('train' or 'eval'); sets its ``env:`` variables.

    A setting said twice is refused naming both places: a key twice in one mapping, two spellings
    of one setting (``dataset_name`` and ``dataset_id``), a key at the top and again under
    ``trainer:``. eval.py takes a training recipe: the keys it shares with training, the others
    named once and skipped (``Recipe.skipped``)."""
    try:
        raw, data, lines = read_yaml(path)
    except DataError as exc:
        raise RecipeError(str(exc)) from None
    env = data.pop("env", {}) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"--config {path}: env: must map variable names to values.")
    trainer = data.pop("trainer", {}) or {}
    if not isinstance(trainer, dict):
        raise RecipeError(f"--config {path}: trainer: must map GRPOConfig fields to values.")
    notes = []
    trainer = _today(trainer, notes, path, lines, "trainer.")
    data = _today(data, notes, path, lines)
    skipped = sorted(f"trainer: {k}" for k in trainer) if command != "train" else []
    trainer = trainer if command == "train" else {}
    nested = set(trainer)  # the keys written under trainer: (top-level GRPOConfig keys join them below)
    names, spellings = {f.name for f in flags.flags_of(command)}, flags.aliases(command)
    training = {f.name for f in flags.flags_of("train")} | set(flags.aliases("train"))
    values, where = {}, {}  # where: setting -> the key and line that set it
    for key, value in data.items():
        key = str(key)
        if key in _ELSEWHERE:
            notes.append(f"{key} skipped ({_ELSEWHERE[key]})")
            continue
        if key == "dataset_configs":  # open-r1's list of one configuration
            if not isinstance(value, list) or len(value) != 1:
                raise RecipeError(f"--config {path}: dataset_configs: one configuration here, got {value!r}.")
            key, value = "dataset_config", value[0]
        key = _RENAMED.get(key, key)
        name = spellings.get(key, key)
        here = f"{key!r} (line {lines.get(key, '?')})"
        if name in where:
            raise RecipeError(f"--config {path}: {where[name]} and {here} set one setting ({name}): keep one.")
        where[name] = here
        if name in names and name != "config":
            values[name] = flag_value(flags.BY_NAME[name], value, f"--config {path}: {key}")
        elif command == "train" and key in grpo_fields():
            if key in trainer:
                raise RecipeError(
                    f"--config {path}: {key!r} is set at the top (line {lines.get(key, '?')}) and "
                    f"under trainer: (line {lines.get('trainer.' + key, '?')}): keep one."
                )
            trainer[key] = value
        elif command != "train" and (key in training or key in grpo_fields()):
            skipped.append(key)  # a training setting: eval.py has no use for it
        else:
            raise RecipeError(f"--config {path}: unknown key {key!r}.{_closest(key, command)}")
    for key in nested:
        top = where.get(flags.aliases("train").get(key, key))
        if top:
            raise RecipeError(
                f"--config {path}: {top} and trainer: {key!r} (line {lines.get('trainer.' + key, '?')}) "
                "set one setting: keep one."
            )
    for key, value in env.items():
        os.environ[str(key)] = str(value)
    return Recipe(path, hashlib.sha256(raw).hexdigest()[:16], values, dict(trainer), skipped, notes)


def _today(mapping: dict, notes: list, path: str, lines: dict, under: str = "") -> dict:
    """``mapping`` with older releases' keys under today's names (or dropped), a note for each; an older
    key beside its new name (both set) is one setting said twice."""
    out = {k: v for k, v in mapping.items() if str(k) not in older_keys.OLDER}
    for key, value in mapping.items():
        if str(key) not in older_keys.OLDER:
            continue
        try:
            now, value, note = older_keys.in_recipe(str(key), value)
        except ValueError as exc:
            raise RecipeError(f"--config {path}: {exc}") from None
        notes.append(under.replace(".", ": ") + note)
        if now is None:
            continue
        if out.get(now) is not None:
            raise RecipeError(f"--config {path}: {key!r} and {now!r} set one setting ({now}): keep {now!r}.")
        out[now] = value
        lines[under + now] = lines.get(under + str(key), "?")
    return out


def _closest(key: str, command: str) -> str:
    """`` Did you mean ...?`` with the nearest flag names (and GRPOConfig fields for training)."""
    pool = [f.name for f in flags.flags_of(command)] + list(flags.aliases(command))
    if command == "train":
        pool += list(grpo_fields())
    near = difflib.get_close_matches(key, pool, n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else " See docs/flags.md for the names."


def flag_value(flag: flags.Flag, value, where: str):
    """A recipe value converted to what ``flag`` takes, or ``RecipeError`` naming the key and the type."""
    kw = flag.kwargs
    if value is None:
        if kw.get("default") is None or kw.get("action") == "append":
            return None
        raise RecipeError(f"{where}: null is not a value for --{flag.name}.")
    if kw.get("action") is flags.OnOff:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}.")
        return value
    if kw.get("action") == "append":  # --trainer given as a list of KEY=VALUE strings
        raise RecipeError(f"{where}: write GRPOConfig fields under trainer: as a mapping.")
    kind = kw.get("type", str)
    if kind is flags.mapping:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping (key: value lines), got {value!r}.")
        return value
    if flag.name == "resume_from_checkpoint" and isinstance(value, bool):  # the Trainer's true / false
        return "last" if value else None
    if isinstance(value, list):
        if flag.name == "report_to" and not value:
            value = "none"
        elif kind is str:
            value = ",".join(str(v) for v in value)
        else:
            raise RecipeError(f"{where}: expected one {kind.__name__}, got a list.")
    try:
        converted = _convert(kind, value)
    except (TypeError, ValueError, OverflowError):
        raise RecipeError(f"{where}: expected {kind.__name__}, got {value!r}.") from None
    if kw.get("choices") and converted not in kw["choices"]:
        raise RecipeError(f"{where}: {converted!r} is not one of {list(kw['choices'])}.")
    return converted


def _convert(kind, value):
    if isinstance(value, bool) and kind is not bool:
        raise TypeError("a boolean")
    if kind is int:
        number = float(value)
        if not math.isfinite(number) or number != int(number):
            raise ValueError("not a whole number")
        return int(number)
    if kind is float:
        number = float(value)  # YAML 1.1 reads 1e-5 as a string
        if not math.isfinite(number):
            raise ValueError("not a finite number")  # 1e400 overflows to inf: refused, not used as inf
        return number
    if isinstance(value, (dict, list)):
        raise TypeError("a mapping or list")
    return str(value)


# ---------------------------------------------------------------- GRPOConfig fields by name
def grpo_fields() -> dict:
    """Every field of the installed ``GRPOConfig``: name -> its type (imports TRL, once)."""
    global _FIELDS
    if _FIELDS is None:
        import dataclasses

        from trl import GRPOConfig

        hints = typing.get_type_hints(GRPOConfig)
        _FIELDS = {f.name: hints.get(f.name, str) for f in dataclasses.fields(GRPOConfig) if f.init}
    return _FIELDS


_FIELDS: dict | None = None


def parse_trainer_entries(entries: list[str] | None) -> dict:
    """``--trainer KEY=VALUE`` entries as a mapping (VALUE read as YAML: numbers, true/false, lists)."""
    import yaml

    out = {}
    for entry in entries or []:
        key, sep, raw = entry.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--trainer {entry!r}: expected KEY=VALUE, e.g. --trainer adam_beta2=0.99.")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def typed_text(field: str, text: str):
    """A GRPOConfig field's value as typed on the command line: a text field's text verbatim (``#`` and
    ``yes`` included), anything else JSON (as TRL's parser reads it: ``{"min_lr": 1e-6}`` holds a
    number), else YAML (``true``, ``0.99``, ``[a, b]``)."""
    import json

    import yaml

    kind = grpo_fields().get(field, str)
    arms = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if str in arms and not any(
        a in (bool, int, float, dict, list) or typing.get_origin(a) in (dict, list) for a in arms
    ):
        return text
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def trainer_values(entries: dict, where: str = "trainer: (or --trainer)") -> dict:
    """``entries`` (GRPOConfig field -> value) converted to each field's type; ``RecipeError`` for a field
    that does not exist (with the closest names) or a value its type cannot hold."""
    fields = grpo_fields()
    out = {}
    for key, value in entries.items():
        if key in older_keys.OLDER:
            raise RecipeError(f"{where}: {older_keys.on_command_line(key)}")
        if key not in fields:
            raise RecipeError(f"{where}: GRPOConfig has no field {key!r}.{_closest(key, 'train')}")
        try:
            out[key] = field_value(fields[key], value)
        except (TypeError, ValueError, OverflowError):
            raise RecipeError(f"{where}: {key} takes {_type_name(fields[key])}, got {value!r}.") from None
    return out


def field_value(kind, value):
    """``value`` as a dataclass field of type ``kind`` holds it (unions tried arm by arm).

    >>> field_value(float, "1e-5"), field_value(int | None, None), field_value(list[str] | None, "a,b")
    (1e-05, None, ['a', 'b'])
    """
    union = isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union
    arms = typing.get_args(kind) if union else (kind,)
    if value is None:
        if type(None) in arms:
            return None
        raise ValueError("null")
    for arm in (a for a in arms if a is not type(None)):
        origin = typing.get_origin(arm) or arm
        try:
            if origin is bool:
                if isinstance(value, bool):
                    return value
                continue
            if origin in (int, float):
                return _convert(origin, value)
            if origin is list:
                return list(value) if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",")]
            if origin is dict:
                if isinstance(value, dict):
                    return value
                continue
            if origin is str or isinstance(origin, type) and issubclass(origin, str):
                if not isinstance(value, (dict, list, bool)):
                    return str(value)
                continue
            if typing.get_origin(arm) is typing.Literal and value in typing.get_args(arm):
                return value
        except (TypeError, ValueError, OverflowError):
            continue
    raise ValueError(f"no arm of {kind} holds {value!r}")


def _type_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
