"""DAPO's dynamic sampling: groups whose completions all scored alike (every one right, or every one
wrong) teach GRPO nothing (their advantages are zero), so they are replaced by groups of further
prompts, sampled until the batch is full of groups with signal or ``--dynamic_sampling`` extra
rounds were spent.

    python main.py --dynamic_sampling 2 ...    # up to 2 extra sampling rounds per generation batch

Each extra round samples as many new prompts as the batch holds (one more generation batch: on CPU
and GPU a wider batch costs less per prompt than a narrow one), drawn from the training rows by a
generator seeded with --seed and the step, so a resumed run draws what the uninterrupted one would.
Groups still without signal after the last round stay (the step is never smaller than asked).
Telemetry per step (log_history.json, the report): ``dynamic_sampling/extra_prompts``,
``dynamic_sampling/frac_groups_with_signal`` (of the batch trained on) and TRL's own reward figures
over everything sampled. One process only (groups of several processes span them); bench/README.md,
"GRPO after the cold start", has what it buys.
"""

from __future__ import annotations

import random

import torch

LEFT_PADDED = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, completions on the right
# The per-row tensors of a text-only batch of TRL's _generate_and_score_completions that take_groups re-pads;
# a batch with any other key (images, tools) is trained on as sampled.
ROW_KEYS = {*LEFT_PADDED, "completion_ids", "completion_mask", "advantages", "old_per_token_logps"}
ROW_KEYS |= {"sampling_per_token_logps", "ref_per_token_logps", "importance_sampling_ratio", "num_items_in_batch"}
NO_SIGNAL = 1e-6  # |advantage| at or below this: rounding left over from a group whose rewards all agree
SEED_STRIDE = 1_000_003


def groups_with_signal(advantages, k: int) -> list[bool]:
    """Per group of ``k`` consecutive rows, whether any advantage is non-zero.

    >>> groups_with_signal(torch.tensor([0.0, 0.0, 1.0, -1.0]), 2)
    [False, True]
    """
    return (advantages.view(-1, k).abs() > NO_SIGNAL).any(dim=1).tolist()


def _pad(tensor, width: int, value, left: bool):
    missing = width - tensor.size(1)
    if missing <= 0:
        return tensor
    pad = tensor.new_full((tensor.size(0), missing, *tensor.shape[2:]), value)
    return torch.cat([pad, tensor] if left else [tensor, pad], dim=1)


def take_groups(batches: list[dict], picks: list[tuple[int, int]], k: int, pad_id: int) -> dict:
    """One batch of the groups ``picks`` ((batch, group) pairs, in order) from TRL's scored ``batches``:
    row tensors re-padded to the widest (prompts on the left, the rest on the right), and
    ``num_items_in_batch`` recounted from the completion masks."""
    out = {}
    for key in batches[0]:
        if key == "num_items_in_batch":
            continue
        parts = [batches[b][key][g * k : (g + 1) * k] for b, g in picks]
        if parts[0].dim() > 1:
            width = max(p.size(1) for p in parts)
            value = pad_id if key.endswith("_ids") else 0
            parts = [_pad(p, width, value, key in LEFT_PADDED) for p in parts]
        out[key] = torch.cat(parts)
    out["num_items_in_batch"] = out["completion_mask"].sum()
    return out


class DynamicSampling:
    """GRPOTrainer mixin: ``dynamic_sampling`` (extra rounds per generation batch; 0: off) set by
    train.py from --dynamic_sampling."""

    dynamic_sampling = 0

    def _extra_inputs(self, prompts: int, round_: int) -> list[dict]:
        """``prompts`` training rows, each ``num_generations`` times, as TRL's sampler lays them out."""
        # the micro-step too: with gradient accumulation several batches are sampled within one optimizer step
        micro = getattr(self, "_step", 0) % max(self.args.gradient_accumulation_steps, 1)
        rng = random.Random(((self.args.seed * SEED_STRIDE + self.state.global_step) * 131 + micro) * 31 + round_)
        rows = rng.sample(range(len(self.train_dataset)), min(prompts, len(self.train_dataset)))
        return [dict(self.train_dataset[i]) for i in rows for _ in range(self.num_generations)]

    def _generate_and_score_completions(self, inputs):
        scored = super()._generate_and_score_completions(inputs)
        if not self.dynamic_sampling or not self.model.training or set(scored) - ROW_KEYS:
            return scored
        k = self.num_generations
        batches, picks, spare = [scored], [], []
        for g, signal in enumerate(groups_with_signal(scored["advantages"], k)):
            picks.append((0, g) if signal else None)
        rounds = extra = 0
        while picks.count(None) > len(spare) and rounds < self.dynamic_sampling:
            rounds += 1
            more = self._extra_inputs(len(picks), rounds)
            extra += len(more) // k
            batches.append(super()._generate_and_score_completions(more))
            spare += [(rounds, g) for g, s in enumerate(groups_with_signal(batches[-1]["advantages"], k)) if s]
        for i, pick in enumerate(picks):
            if pick is None:
                picks[i] = spare.pop(0) if spare else (0, i)  # no signal found in time: the group stays
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/extra_prompts"].append(float(extra))
        metrics["dynamic_sampling/frac_groups_with_signal"].append(
            sum(groups_with_signal(batches[b]["advantages"][g * k : (g + 1) * k], k)[0] for b, g in picks) / len(picks)
        )
        if len(batches) == 1:
            return scored
        return take_groups(batches, picks, k, self.processing_class.pad_token_id or 0)
