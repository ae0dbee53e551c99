"""The README stays a newcomer's page, its quick start matches the Makefile and CI, and the flag
reference is generated from the parsers and current."""

import os
import sys

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
