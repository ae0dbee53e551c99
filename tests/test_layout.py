"""The layout stays one a newcomer can read and change: the original's commands at the root, one
package by concern behind them, imports pointing one way, files under 450 lines.

Each rule is a function of a tree's root, so the tests below also run it on a small tree made to
break it: a rule that could not fail would prove nothing."""

import ast
import os
import subprocess

import pytest

from conftest import ROOT

MAX_LINES = 450
PACKAGE = "trl_grpo"
# The user's commands and the original project's names; nothing else in Python at the root.
ROOT_FILES = {"main.py", "train.py", "data_utils.py", "reward.py", "eval.py", "report.py", "export.py"}
ROOT_MODULES = {name[:-3] for name in ROOT_FILES}
# The package's folders, lowest first: a folder imports only folders before it (and itself).
LAYERS = ("answers", "data", "models", "fast", "runs", "observe", "settings", "training", "evaluation", "export")
SKIP_DIRS = {".git", ".venv", "__pycache__", "ckpts", "results", ".gpu", ".whl", ".pytest_cache", ".cache"}


def python_files(root: str) -> list[str]:
    """Every Python file of the tree (relative paths), outside caches, environments and outputs."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(folder, f), root) for f in sorted(files) if f.endswith(".py")]
    return found


def root_python_files(root: str) -> set[str]:
    """The Python files at the root that git tracks (a scratch file of the user's is not the layout)."""
    try:
        out = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True, check=True)
        tracked = out.stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = os.listdir(root)
    return {p for p in tracked if "/" not in p and p.endswith(".py")}


def imports_of(path: str) -> set[str]:
    """Dotted names ``path`` imports, at its top or inside a function."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def package_graph(root: str) -> dict[str, set[str]]:
    """Each package module -> the package modules it imports."""
    modules = {}
    for rel in python_files(root):
        if rel.startswith(PACKAGE + os.sep):
            name = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
            modules[name] = os.path.join(root, rel)
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def long_files(root: str) -> dict[str, int]:
    out = {}
    for rel in python_files(root):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines >= MAX_LINES:
            out[rel] = lines
    return out


def root_imports_in_package(root: str) -> dict[str, list[str]]:
    out = {}
    for rel in python_files(root):
        if rel.startswith(PACKAGE + os.sep):
            bad = sorted({m.split(".")[0] for m in imports_of(os.path.join(root, rel))} & ROOT_MODULES)
            if bad:
                out[rel] = bad
    return out


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower folder to a higher one (LAYERS), or from a folder not in LAYERS."""

    def layer(module):
        parts = module.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None

    bad = []
    for module, deps in graph.items():
        for dep in deps:
            if len(module.split(".")) > 2 and layer(module) is None:
                bad.append(f"{module} (its folder is not in LAYERS)")
            elif layer(module) is not None and layer(dep) is not None and layer(dep) > layer(module):
                bad.append(f"{module} -> {dep}")
    return sorted(set(bad))


# ---------------------------------------------------------------- the rules, on this tree
def test_the_root_holds_only_the_commands_and_the_originals_names():
    extra = root_python_files(ROOT) - ROOT_FILES
    assert not extra, f"move these into {PACKAGE}/ (the root holds only {sorted(ROOT_FILES)}): {sorted(extra)}"
    assert root_python_files(ROOT) == ROOT_FILES


def test_every_source_file_is_under_the_line_limit():
    long = long_files(ROOT)
    assert not long, f"split these files (one job per file, under {MAX_LINES} lines): {long}"


def test_the_package_never_imports_a_root_file():
    assert root_imports_in_package(ROOT) == {}


def test_the_package_has_no_import_cycle():
    graph = package_graph(ROOT)
    assert len(graph) > 30 and a_cycle(graph) is None, f"import cycle: {' -> '.join(a_cycle(graph) or [])}"


def test_the_folders_import_one_way():
    graph = package_graph(ROOT)
    folders = {m.split(".")[1] for m in graph if m.count(".") >= 2}
    assert folders == set(LAYERS), f"LAYERS and the package's folders differ: {sorted(folders ^ set(LAYERS))}"
    assert upward_imports(graph) == []


def test_answer_and_data_modules_import_without_torch():
    code = (
        "import sys, importlib, pkgutil, trl_grpo.answers, trl_grpo.data\n"
        "for pkg in (trl_grpo.answers, trl_grpo.data):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "print(sorted(k for k in ('torch', 'transformers', 'trl') if k in sys.modules))\n"
    )
    out = subprocess.run([os.sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_graph_sees_imports_inside_functions():
    """The checks above would pass vacuously if the parser missed the lazy imports the tool uses."""
    graph = package_graph(ROOT)
    assert "trl_grpo.fast.decoding" in graph["trl_grpo.evaluation.pipeline"]
    assert "trl_grpo.models.sampling" in graph["trl_grpo.observe.preflight"]
    assert "train" in {m.split(".")[0] for m in imports_of(os.path.join(ROOT, "main.py"))}


# ---------------------------------------------------------------- each rule fails where it should
def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


GOOD = {f"{PACKAGE}/__init__.py": "", f"{PACKAGE}/answers/__init__.py": "", f"{PACKAGE}/answers/contract.py": ""}
GOOD |= {f"{PACKAGE}/data/__init__.py": "", f"{PACKAGE}/data/prompts.py": "from trl_grpo.answers import contract\n"}
GOOD |= {"main.py": "import train\n", "train.py": "from trl_grpo.data import prompts\n"}


def test_the_rules_pass_a_good_tree(tmp_path):
    root = _tree(tmp_path, GOOD)
    graph = package_graph(root)
    assert a_cycle(graph) is None and upward_imports(graph) == [] and root_imports_in_package(root) == {}
    assert root_python_files(root) == {"main.py", "train.py"} and long_files(root) == {}


@pytest.mark.parametrize(
    "change, broken",
    [
        ({"helpers.py": ""}, "root"),  # a new module at the root
        ({f"{PACKAGE}/data/prompts.py": "import reward\n"}, "root import"),  # the package imports a face
        ({f"{PACKAGE}/data/prompts.py": "def f():\n    from train import x\n"}, "root import"),  # lazily too
        ({f"{PACKAGE}/answers/contract.py": "from trl_grpo.data import prompts\n"}, "cycle"),  # answers <-> data
        ({f"{PACKAGE}/answers/boxes.py": "from trl_grpo.data.prompts import x\n"}, "upward"),  # answers -> data
        ({f"{PACKAGE}/misc/x.py": "from trl_grpo.answers import contract\n"}, "upward"),  # a folder not in LAYERS
        ({f"{PACKAGE}/data/big.py": "x = 1\n" * MAX_LINES}, "long"),  # a file over the limit
    ],
)
def test_each_rule_fails_on_a_tree_that_breaks_it(tmp_path, change, broken):
    root = _tree(tmp_path, {**GOOD, **change})
    graph = package_graph(root)
    found = {
        "root": root_python_files(root) - ROOT_FILES != set(),
        "root import": root_imports_in_package(root) != {},
        "cycle": a_cycle(graph) is not None,
        "upward": upward_imports(graph) != [],
        "long": long_files(root) != {},
    }
    assert found[broken], f"the {broken!r} rule missed {change}"
