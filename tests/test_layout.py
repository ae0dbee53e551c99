"""The layout stays one a newcomer can change: files under 450 lines, no import cycle between the
tool's modules, nothing imports the entry points."""

import ast
import os

from conftest import ROOT

MAX_LINES = 450
ENTRY_POINTS = {"main", "eval"}  # commands: they import the tool, never the other way round


def _sources():
    for folder in ("", "bench", "docs"):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def _imports(path: str, modules: set[str]) -> set[str]:
    """The tool's modules ``path`` imports, at its top or inside a function."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found & modules


def _graph() -> dict[str, set[str]]:
    names = [p for p in _sources() if os.sep not in p]
    modules = {p[:-3] for p in names}
    return {p[:-3]: _imports(p, modules) - {p[:-3]} for p in names}


def test_every_source_file_is_under_the_line_limit():
    long = {}
    for path in _sources():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines >= MAX_LINES:
            long[path] = lines
    assert not long, f"split these files (one job per file, under {MAX_LINES} lines): {long}"


def test_no_module_imports_an_entry_point():
    """Neither the tool's modules nor the benchmarks: a bench runs a command through what it calls."""
    graph = _graph()
    offenders = {m: sorted(deps & ENTRY_POINTS) for m, deps in graph.items() if deps & ENTRY_POINTS}
    for path in _sources():
        if os.sep in path and _imports(path, ENTRY_POINTS):
            offenders[path] = sorted(_imports(path, ENTRY_POINTS))
    assert not offenders, offenders


def test_the_import_graph_has_no_cycle():
    graph, state, path = _graph(), {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_the_graph_sees_imports_inside_functions():
    """The checks above would pass vacuously if the parser missed the lazy imports the tool uses."""
    graph = _graph()
    assert "train" in graph["main"] and "decoding" in graph["evaluation"] and "sampling" in graph["preflight"]
