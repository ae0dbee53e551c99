"""The README stays a newcomer's page, its quick start matches the Makefile and CI, and the flag
reference is generated from the parsers and current."""

import os
import re
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "docs"))
import write_flags as flag_docs


def _read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_the_flag_reference_is_current():
    assert _read("docs/flags.md") == flag_docs.render(), "docs/flags.md is stale: run make docs"


def test_every_flag_is_in_the_reference():
    from trl_grpo.evaluation import pipeline
    from trl_grpo.settings import flags

    reference = _read("docs/flags.md")
    for parser in (flags.build_parser("train"), pipeline.build_parser()):
        for action in parser._actions:
            for option in action.option_strings:
                assert option in ("-h", "--help") or f"`{option}`" in reference, option


def test_readme_is_a_newcomers_page():
    readme = _read("README.md")
    assert len(readme.encode()) < 12_000  # detail goes to docs/ and bench/README.md
    assert "docs/flags.md" in readme and "Python 3." in readme
    heads = [line for line in readme.splitlines() if line.startswith("## ")]
    order = ["Quick start", "Your own data", "Recipes and flags", "output contract", "Layout", "Tests"]
    at = [next((i for i, h in enumerate(heads) if word in h), -1) for word in order]
    assert -1 not in at and at == sorted(at), f"README sections out of a newcomer's order: {heads}"
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name in sorted(os.listdir(ROOT)):  # the layout tree names every source file
        if name.endswith(".py"):
            assert name in layout.split(), f"{name} is missing from README.md's Layout"


def test_quick_start_commands_exist_and_ci_runs_the_test_command():
    readme, makefile, ci = _read("README.md"), _read("Makefile"), _read(".ci/run")
    assert "make train" in readme and "make test" in readme
    assert "\ntrain:" in makefile and "\ntest:" in makefile and "\ndocs:" in makefile
    assert "make test" in ci


DOCS = ["README.md", "bench/README.md", "tests/data/README.md"] + [
    f"docs/{n}" for n in sorted(os.listdir(os.path.join(ROOT, "docs"))) if n.endswith(".md")
]
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # [text](path#anchor): the path part
_PATH = re.compile(r"(?<![\w./-])((?:trl_grpo|bench|docs|tests|recipes|configs)/[\w./-]*\w)")
_FILE_NAME = re.compile(r"(?<![\w/.-])([A-Za-z_][\w-]*\.(?:py|sh|yaml))\b")


def _placeholder(path: str) -> bool:
    """``recipes/X.yaml``, ``PATH.yaml``, ``ckpts/RUN``: a name written in capitals stands for the user's own."""
    return any(part.split(".")[0].isupper() for part in path.split("/"))


def _tree_files() -> set[str]:
    """Every file of the checkout (relative paths), outside environments, caches and outputs."""
    out = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in {".git", ".venv", "__pycache__", "ckpts", "results", ".gpu", ".whl"}]
        out |= {os.path.relpath(os.path.join(folder, f), ROOT) for f in files}
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_a_page_names_exists(doc):
    """Links resolve from the page's folder; repository paths (trl_grpo/..., bench/...) from the
    root; a bare file name (``train_speed.py``) names a file somewhere in the tree. A module that
    moved or was renamed leaves no stale name behind in README, docs or bench/README."""
    text = _read(doc)
    here = os.path.dirname(doc)
    files = _tree_files()
    names = {os.path.basename(f) for f in files} | {"my_rewards.py", "setup.py"}  # examples of the user's own
    folders = {os.path.dirname(f) for f in files}
    missing = [p for p in _LINK.findall(text) if "://" not in p and not os.path.exists(os.path.join(ROOT, here, p))]
    missing += [p for p in _PATH.findall(text) if p.rstrip("/") not in files | folders and "*" not in p]
    missing += [n for n in _FILE_NAME.findall(text) if n not in names]
    missing = [p for p in missing if not _placeholder(p)]
    assert not missing, f"{doc} names paths that do not exist: {sorted(set(missing))}"


def test_the_layout_names_every_package_folder():
    layout = _read("README.md").split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = os.path.join(ROOT, "trl_grpo")
    for name in sorted(os.listdir(package)):
        if os.path.isdir(os.path.join(package, name)) and not name.startswith("__"):
            assert f"{name}/" in layout.split(), f"trl_grpo/{name}/ is missing from README.md's Layout"


def test_the_levels_table_is_the_committed_runs(monkeypatch):
    """The README's per-level table is what bench/learning_levels.py --table prints of the committed report."""
    import importlib.util
    import json

    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    spec = importlib.util.spec_from_file_location("learning_levels", os.path.join(ROOT, "bench", "learning_levels.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = json.loads(_read(os.path.join("bench", "learning_levels.json")))
    assert bench.markdown_table(report) in _read("README.md")
