"""Reading a recipe file as YAML, strictly: a key given twice is refused, aliases expand within a
bound, and each key's line is kept for the messages that name it.

    python -c "from trl_grpo.settings.yaml_files import read_yaml; print(read_yaml('recipes/cpu_quick.yaml')[1])"

PyYAML keeps the last of two equal keys without a word, and expands aliases without limit (a
"billion laughs" file of a few hundred bytes stands for 10^9 values, and exhausts memory the first
time anything walks it). Both are refused here, before any setting is read.
"""

from __future__ import annotations

import yaml

from trl_grpo.data.splits import DataError

# Values a recipe may stand for once its aliases are expanded: far above any real recipe (open-r1's
# largest has under 100), far below what exhausts memory.
MAX_EXPANDED_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, naming both lines."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *defaults": merged by SafeLoader itself
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (list, dict, set)):
            raise DataError(f"line {line}: a key must be a name, not a {type(key).__name__}.")
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise DataError(f"key {key!r} is given twice (lines {seen[key]} and {line}): keep one.")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def expanded_size(node, bound: int = MAX_EXPANDED_VALUES) -> int:
    """How many values ``node`` stands for with every alias expanded (counting stops past ``bound``)."""
    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = bound + 1  # a node reached again while counting it: a cycle, refused
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        sizes[id(n)] = min(total, bound + 1)
        return sizes[id(n)]

    return size(node) if node is not None else 0


def read_yaml(path: str) -> tuple[bytes, dict, dict]:
    """``(raw bytes, the mapping, key -> line)`` of a recipe file; lines of keys under ``trainer:``
    are ``trainer.KEY``. ``DataError`` naming the file for anything that is not one plain mapping."""
    where = f"--config {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: cannot be read ({' '.join(str(exc).split())}).") from None
    if not text.strip():
        return raw, {}, {}
    loader = None
    try:
        loader = _StrictLoader(text)
        node = loader.get_single_node()
        if expanded_size(node) > MAX_EXPANDED_VALUES:
            raise DataError(
                f"{where}: its aliases (&/*) expand to more than {MAX_EXPANDED_VALUES:,} values; a recipe "
                "needs far fewer. Write the values out, or use fewer nested aliases."
            )
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise DataError(f"{where}: cannot be read as YAML ({at}{what}).") from None
    except DataError as exc:
        raise DataError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    except RecursionError:
        raise DataError(f"{where}: nested too deeply to be a recipe (a mapping of settings).") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping of flag names to values, got {type(data).__name__}.")
    return raw, data, _key_lines(node)


def _key_lines(node) -> dict:
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[str(key.value)] = key.start_mark.line + 1
            if key.value == "trainer" and isinstance(value, yaml.MappingNode):
                lines |= {f"trainer.{k.value}": k.start_mark.line + 1 for k, _ in value.value}
    return lines
