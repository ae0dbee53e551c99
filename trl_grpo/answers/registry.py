"""The rewards ``--reward_funcs`` names: the built-in ones, and a user's own from a file or module.

    python main.py --reward_funcs format,accuracy,my_rewards.py:length_reward

The built-in names are ``rewards.REWARD_FUNCS``: a built-in reward is added in rewards.py alone.
A user's own is ``path/to/file.py:function`` or ``package.module:function``; every one is wrapped
in ``GuardedReward`` so one failing sample cannot end a run.
"""

from __future__ import annotations

import os
import re
import sys

from trl_grpo.answers.contract import THINK_START, completion_text
from trl_grpo.answers.open_r1 import PARAMETERS, open_r1_reward
from trl_grpo.answers.rewards import REWARD_FUNCS, GuardedReward, prefilled_flags


def get_reward_funcs(names, params: dict | None = None) -> list:
    """Reward functions for ``names`` (a list or a comma-separated string), in order, each guarded: the
    names of ``REWARD_FUNCS`` (or TRL's names for them, ``TRL_NAMES``), TRL's own rewards
    (``TRL_OWN``), ``path/to/file.py:function``, ``package.module:function`` or
    ``package.module.function`` (TRL's signature: completions plus every dataset column as keyword
    arguments, a list of floats or None).

    >>> [f.__name__ for f in get_reward_funcs("format,accuracy")]
    ['format_reward', 'accuracy_reward']
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No reward functions given. Expected one or more of {sorted(REWARD_FUNCS)}.")
    funcs = [GuardedReward(_reward(n, params)) for n in names]
    seen = [f.__name__ for f in funcs]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"--reward_funcs names {twice[0]!r} twice: TRL logs each reward by its function name.")
    return funcs


# TRL's names for this project's rewards (the same job under this contract), and TRL's own rewards by
# their names in trl.rewards (imported only when asked for).
TRL_NAMES = {"accuracy_reward": "accuracy", "format_reward": "format"}
TRL_OWN = ("think_format_reward", "reasoning_accuracy_reward", "soft_overlong_punishment")
OPEN_R1 = ("tag_count", "reasoning_steps", "cosine", "repetition_penalty", "length")  # answers/open_r1.py
REWARD_PARAMETERS = tuple(flag for flags in PARAMETERS.values() for flag in flags)  # their flags
REWARD_PARAMETERS += ("max_completion_length", "soft_punish_cache")  # soft_overlong_punishment's


class TrlReward:
    """A reward of trl.rewards called as TRL calls it on chat data: each completion as an assistant
    message, ``<think>`` put back in front where the prompt prefilled it (those rewards expect the
    tag at the start). Picklable: it holds only the reward's name."""

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = name

    def __call__(self, completions, prompts=None, **kwargs):
        import trl.rewards

        prefilled = prefilled_flags(prompts, len(completions), None)
        chats = [
            [{"role": "assistant", "content": (THINK_START if pre else "") + completion_text(c)}]
            for c, pre in zip(completions, prefilled, strict=True)
        ]
        return getattr(trl.rewards, self.name)(chats, prompts=prompts, **kwargs)


def parameters_of(settings: dict) -> dict:
    """The reward parameters among a run's settings (flag name -> value), for ``get_reward_funcs``."""
    return {k: settings[k] for k in REWARD_PARAMETERS if settings.get(k) is not None}


class SoftOverlongPunishment:
    """TRL's ``get_soft_overlong_punishment`` (DAPO's length penalty: 0 up to ``max_len - cache``
    tokens, then down to -1 at ``max_len``), called as the other rewards are: completions first, the
    token ids by keyword. ``max_len`` is the run's --max_completion_length; ``cache`` --soft_punish_cache."""

    __name__ = "soft_overlong_punishment_reward"

    def __init__(self, max_len: int, cache: int) -> None:
        self.max_len, self.cache = max_len, cache

    def __call__(self, completions, completion_ids=None, **kwargs):
        from trl.rewards import get_soft_overlong_punishment

        if completion_ids is None:
            raise ValueError("soft_overlong_punishment needs completion_ids (TRL and eval.py pass them).")
        return get_soft_overlong_punishment(self.max_len, self.cache)(completion_ids=completion_ids)


def _reward(spec: str, params: dict | None = None):
    """The function ``spec`` names: a built-in name, TRL's name for one, a reward of trl.rewards,
    open-r1's (with ``params``: flag name -> value), or a user's (``_user_reward``)."""
    found = open_r1_reward(spec, params)
    if found is not None:
        return found
    if spec in ("soft_overlong_punishment", "get_soft_overlong_punishment"):
        params = params or {}
        max_len = int(params.get("max_completion_length") or 1024)
        return SoftOverlongPunishment(max_len, int(params.get("soft_punish_cache") or max_len // 5))
    if spec in REWARD_FUNCS or spec in TRL_NAMES:
        return REWARD_FUNCS[TRL_NAMES.get(spec, spec)]
    if spec in TRL_OWN or spec.removeprefix("trl.rewards.") in TRL_OWN:
        return TrlReward(spec.removeprefix("trl.rewards."))
    if ":" not in spec and "." in spec and not spec.endswith(".py"):  # module.function, TRL's dotted form
        module, _, name = spec.rpartition(".")
        return _user_reward(f"{module}:{name}")
    return _user_reward(spec)


def _user_reward(spec: str):
    """The function ``spec`` names (``file.py:function`` or ``package.module:function``); ValueError if none."""
    import importlib
    import importlib.util

    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise ValueError(
            f"Unknown reward {spec!r}. Expected one or more of {sorted(REWARD_FUNCS)} (TRL's "
            f"{sorted(TRL_NAMES)} and {list(TRL_OWN)} too), open-r1's {list(OPEN_R1)}, path/to/file.py:function, "
            "package.module:function or package.module.function, e.g. --reward_funcs "
            "format,accuracy,my_rewards.py:length_reward."
        )
    if source.endswith(".py"):
        if not os.path.isfile(source):
            raise ValueError(f"--reward_funcs {spec}: no such file {source!r} (relative paths are read from here).")
        module_name = "user_reward_" + re.sub(r"\W", "_", os.path.abspath(source))
        loader = importlib.util.spec_from_file_location(module_name, source)
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module  # picklable: the function's module can be found again
        try:
            loader.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: any error is theirs to see, in one line
            raise ValueError(
                f"--reward_funcs {spec}: {source} failed to import ({type(exc).__name__}: {exc})."
            ) from None
    else:
        try:
            module = importlib.import_module(source)
        except Exception as exc:  # noqa: BLE001 - as above
            raise ValueError(
                f"--reward_funcs {spec}: cannot import {source!r} ({type(exc).__name__}: {exc})."
            ) from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ValueError(f"--reward_funcs {spec}: {source} has no function {name!r}.")
    return func


def reward_sources(names: str) -> list[dict]:
    """What each reward is, for run_config.json: its name, where it comes from, and a file's SHA-256."""
    import hashlib

    out = []
    for spec in (n.strip() for n in names.split(",") if n.strip()):
        builtin = REWARD_FUNCS.get(TRL_NAMES.get(spec, spec))
        entry = {"spec": spec, "name": builtin.__name__ if builtin else re.split(r"[:.]", spec.removesuffix(".py"))[-1]}
        path = spec.rpartition(":")[0]
        if path.endswith(".py") and os.path.isfile(path):
            with open(path, "rb") as f:
                entry.update(file=os.path.abspath(path), sha256=hashlib.sha256(f.read()).hexdigest()[:16])
        out.append(entry)
    return out
