"""The README documents every flag, and its quick start matches the Makefile and CI."""

import os

import evaluation as eval_mod
import main
from conftest import ROOT


def _read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_every_flag_is_documented():
    readme = _read("README.md")
    for parser in (main.build_parser(), eval_mod.build_parser()):
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in readme, f"{option} is missing from README.md"


def test_quick_start_commands_exist_and_ci_runs_the_test_command():
    readme, makefile, ci = _read("README.md"), _read("Makefile"), _read(".ci/run")
    assert "make train" in readme and "make test" in readme
    assert "\ntrain:" in makefile and "\ntest:" in makefile
    assert "make test" in ci
