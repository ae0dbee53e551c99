"""Command-line plumbing of every command: a bad flag or input is one ``error:`` line and exit code 2.

    python main.py --no_such_flag          # error: unrecognized arguments: ... (exit 2)

``UsageError`` carries the message, ``user_errors`` turns the data and model errors of the layers
below into one, ``cli`` prints it without a traceback, and ``Parser`` is the commands'
argument parser.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


class UsageError(SystemExit):
    """A bad flag, input file or output place: the message says what and how to fix it.

    Raised before heavy work where possible; ``cli`` prints it as one ``error: ...`` line per
    problem and exits with code 2 (no traceback). Code calling ``main()`` directly, such as tests,
    sees the message as ``str(err)``.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def user_errors():
    """Inside, a problem with the user's data, model or reward (``DataError``, ``ModelError``,
    ``RewardError``) becomes a ``UsageError``: the one path by which every user error reaches ``cli``
    (one line, exit 2)."""
    from trl_grpo.answers.rewards import RewardError
    from trl_grpo.data.splits import DataError
    from trl_grpo.models.locate import ModelError

    try:
        yield
    except (DataError, ModelError, RewardError) as exc:
        raise UsageError(str(exc)) from None


def cli(main) -> int:
    """Run an entry point's ``main()``; a user error becomes ``error: ...`` lines and exit code 2."""
    import logging

    # bitsandbytes, when installed, warns at import (PEFT imports it) that an optional faster CPU kernel
    # package is absent: noise on every command, and it would precede a refusal's one line.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        with user_errors():
            return main()
    except UsageError as err:
        print("\n".join(f"error: {line}" for line in err.message.splitlines()), file=sys.stderr)
        return 2


class Parser(argparse.ArgumentParser):
    """The commands' argument parser: the whole first paragraph of a docstring as the description,
    each default shown once, and a bad flag as one ``error:`` line (exit code 2) that names it and
    where the flags are listed, rather than the whole usage first."""

    def __init__(self, doc: str, **kwargs):
        first = doc.strip().split("\n\n")[0]
        # No abbreviations: TRL's generated fields make most prefixes ambiguous, and each upgrade would move them.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(description=" ".join(first.split()), formatter_class=_DefaultsOnce, **kwargs)

    def error(self, message: str):
        import difflib

        hint = ""
        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            words = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
            near = [m for w in words for m in difflib.get_close_matches(w, known, n=1, cutoff=0.75)]
            hint = f" Did you mean {', '.join(near)}?" if near else ""
        self.exit(2, f"error: {message}.{hint} {self.prog} --help lists the flags.\n")


class _DefaultsOnce(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` only where the help text does not already speak of a default, and there
    is one to show (not None)."""

    def _get_help_string(self, action):
        if "default" in (action.help or "").lower() or action.default is None:
            return action.help
        return super()._get_help_string(action)
