"""Keys that older TRL and transformers releases took, which recipes, notebooks and tutorials still carry.

A recipe (or its ``trainer:`` mapping) that writes one is read under today's name where the
meaning carried over (``use_liger_loss`` -> ``use_liger_kernel``), or skipped where the setting
moved out of the trainer (``vllm_device``: vLLM is a server or colocated now); either way one line
says so. On the command line, where the user types today, such a key is an error naming its
replacement. Each entry was read off the release that removed it (TRL's and transformers' sources).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Older:
    now: str | None  # today's key with the same meaning; None where nothing in the trainer replaced it
    why: str  # which release changed it, and what to do instead
    convert: Callable | None = None  # the old value as today's key reads it, where the scale changed


def _complement(value):
    """``token_entropy_percentile_threshold`` masked tokens *below* a percentile; ``top_entropy_quantile``
    keeps the quantile *above* it.

    >>> _complement(0.8), _complement(0.0)
    (0.2, 1.0)
    """
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a threshold in [0, 1] (0.8 masks the lowest 80%), got {value}")
    return round(1.0 - value, 12)


OLDER = {
    # TRL's GRPOConfig
    "use_liger_loss": Older("use_liger_kernel", "TRL 0.28 renamed it"),
    "vllm_guided_decoding_regex": Older("vllm_structured_outputs_regex", "TRL 0.28 renamed it"),
    "wandb_log_unique_prompts": Older("log_unique_prompts", "TRL 0.27 renamed it"),
    "vllm_max_model_len": Older("vllm_max_model_length", "TRL 0.18 removed it, 0.26 brought it back renamed"),
    "token_entropy_percentile_threshold": Older(
        "top_entropy_quantile", "TRL 0.20 replaced it by the quantile kept, 1 - the threshold", _complement
    ),
    "vllm_device": Older(None, "TRL 0.18 removed it: vLLM runs as a server (trl vllm-serve) or vllm_mode: colocate"),
    "vllm_dtype": Older(None, "TRL 0.18 removed it: trl vllm-serve --dtype sets it"),
    "vllm_enable_prefix_caching": Older(None, "TRL 0.18 removed it: trl vllm-serve --enable_prefix_caching"),
    # transformers' TrainingArguments
    "evaluation_strategy": Older("eval_strategy", "transformers 4.46 renamed it"),
    "no_cuda": Older(None, "transformers 5 removed it; the device is picked here: CUDA_VISIBLE_DEVICES= hides GPUs"),
    "per_gpu_train_batch_size": Older("per_device_train_batch_size", "transformers 5 removed it"),
    "per_gpu_eval_batch_size": Older("per_device_eval_batch_size", "transformers 5 removed it"),
    "push_to_hub_token": Older("hub_token", "transformers 5 removed it"),
    "push_to_hub_model_id": Older(None, "transformers 5 removed it: write hub_model_id: OWNER/NAME"),
    "push_to_hub_organization": Older(None, "transformers 5 removed it: write hub_model_id: OWNER/NAME"),
}


def in_recipe(key: str, value) -> tuple[str | None, object, str]:
    """``key`` and ``value`` as today's release reads them (key None: skip it), and the line that says so.

    >>> in_recipe("use_liger_loss", True)
    ('use_liger_kernel', True, 'use_liger_loss read as use_liger_kernel (TRL 0.28 renamed it)')
    >>> in_recipe("vllm_device", "auto")[0] is None
    True
    """
    old = OLDER[key]
    if old.now is None:
        return None, value, f"{key} skipped ({old.why})"
    if value is None:  # an older release's dump of its defaults: nothing set
        return None, value, f"{key} skipped (null; {old.why}: {old.now})"
    if old.convert:
        try:
            value = old.convert(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{key}: {exc} ({old.why}: {old.now})") from None
    shown = f" {value!r}" if old.convert else ""
    return old.now, value, f"{key} read as {old.now}{shown} ({old.why})"


def on_command_line(key: str) -> str:
    """The error for an older key typed as a flag or a ``--trainer`` entry: what to write instead."""
    old = OLDER[key]
    if old.now is None:
        return f"--{key} is an older release's setting: {old.why}."
    scale = " (note the new scale)" if old.convert else ""
    return f"--{key} is an older release's name: {old.why}; give --{old.now}{scale}."


class _Refuse(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(2, f"error: {on_command_line(self.dest)}\n")


def add_to(parser: argparse.ArgumentParser, taken: set[str]) -> None:
    """Hidden flags for the older keys not otherwise taken, each stopping with its replacement."""
    for key in OLDER:
        if key not in taken:
            parser.add_argument(
                f"--{key}", dest=key, nargs="?", action=_Refuse, default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )
