"""What a run's completions do with the output contract: the telemetry counted per batch.

    python -m pytest --doctest-modules trl_grpo/observe/telemetry.py

Each known way to game or break ``<think>...</think><answer>\\boxed{...}</answer>`` (repeated
blocks, a box outside the answer, an empty reasoning block, text after the answer, an answer
with no reasoning), and completions cut at the length limit. Training logs these as
``telemetry/<name>`` at every logging step (tensorboard, wandb, log_history.json, the reward
curves' telemetry panel); every evaluation summary has them under ``"telemetry"``.
"""

from __future__ import annotations

import logging
import os

from trl_grpo.answers.boxes import BOX_COMMANDS
from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, EOS_TAIL, THINK_END, THINK_START, completion_text
from trl_grpo.answers.rewards import prefilled_flags

logger = logging.getLogger(__name__)

SHORT_THINK_CHARS = 5  # a think block with fewer non-space characters ("ok", "...") is "trivially short"


def contract_telemetry(completions, prompts=None, truncated=None, lengths=None) -> dict[str, float]:
    """Over a batch of completions, the share showing each known way to game or break the output
    contract, plus the share cut at the length limit and the mean length (when given):
    ``several_blocks`` (more than one think or answer block), ``box_outside_answer`` (a box
    outside the answer block), ``short_think`` (a think block under ``SHORT_THINK_CHARS``),
    ``text_after_answer``, ``answer_without_reasoning`` (an answer block, no reasoning block),
    ``truncated``, ``mean_length``. Training logs them as ``telemetry/<name>``; eval summaries too.

    >>> batch = ["<think>ok</think><answer>\\boxed{1}</answer> more", "<answer>2</answer>"]
    >>> contract_telemetry(batch)["text_after_answer"], contract_telemetry(batch)["answer_without_reasoning"]
    (0.5, 0.5)
    """
    texts = [completion_text(c) for c in completions]
    flags = prefilled_flags(prompts, len(texts), None)
    counts = dict.fromkeys(("several_blocks", "box_outside_answer", "short_think", "text_after_answer"), 0)
    counts["answer_without_reasoning"] = 0
    for text, prefilled in zip(texts, flags, strict=True):
        text = THINK_START + text if prefilled else text
        counts["several_blocks"] += text.count(THINK_START) > 1 or text.count(ANSWER_START) > 1
        a0, a1 = text.rfind(ANSWER_START), text.rfind(ANSWER_END)
        has_answer = 0 <= a0 < a1
        outside = text[:a0] + text[a1 + len(ANSWER_END) :] if has_answer else text
        counts["box_outside_answer"] += any(cmd + "{" in outside for cmd in BOX_COMMANDS)
        t0, t1 = text.find(THINK_START), text.find(THINK_END)
        think = text[t0 + len(THINK_START) : t1] if 0 <= t0 < t1 else None
        counts["short_think"] += think is not None and len("".join(think.split())) < SHORT_THINK_CHARS
        counts["text_after_answer"] += has_answer and EOS_TAIL.fullmatch(text[a1 + len(ANSWER_END) :]) is None
        counts["answer_without_reasoning"] += has_answer and not (think and think.strip())
    n = max(len(texts), 1)
    out = {k: round(v / n, 4) for k, v in counts.items()}
    if truncated is not None:
        out["truncated"] = round(sum(map(bool, truncated)) / n, 4)
    if lengths is not None:
        out["mean_length"] = round(sum(lengths) / n, 2)
    return out


# ---------------------------------------------------------------- during training
class CompletionLog:
    """``<run>/completions.jsonl``: one line per completion of the logged steps (every
    ``every``-th step, at most ``cap`` lines; what is left out is counted and said, never silent).
    A prompt's text is written the first time its ``prompt_index`` appears, later lines refer to it."""

    def __init__(self, path: str, every: int = 1, cap: int = 20000, resume_step: int | None = None):
        self.path, self.every, self.cap = path, max(1, every), cap
        self.written, self.skipped, self.seen = 0, 0, set()
        if resume_step is not None:
            self._keep_until(resume_step)

    def _keep_until(self, step: int) -> None:
        """On resume from the checkpoint of ``step``: drop the lines of later steps (they are done again),
        and count what is kept toward the cap, so no step is logged twice and the cap holds across attempts."""
        import json

        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by the interruption
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                kept.append(line)
                self.seen.add(row.get("prompt_index"))
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        self.written = len(kept)
        if len(kept) < len(lines):
            logger.info(
                "completions.jsonl: %d lines after step %d dropped (done again on resume)", len(lines) - len(kept), step
            )

    def write(self, step: int, rows: list[dict]) -> None:
        import json

        if (step - 1) % self.every:
            return
        room = max(0, self.cap - self.written)
        if len(rows) > room:
            if not self.skipped:
                logger.warning(
                    "completions.jsonl reached its cap of %d lines at step %d; later ones are counted only",
                    self.cap,
                    step,
                )
            self.skipped += len(rows) - room
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows[:room]:
                line = {"step": step, **row}
                if row["prompt_index"] in self.seen:
                    line.pop("prompt", None)
                self.seen.add(row["prompt_index"])
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.written += min(room, len(rows))

    def stats(self) -> dict:
        return {"lines": self.written, "skipped_over_cap": self.skipped, "every_n_steps": self.every, "cap": self.cap}


class TelemetryMixin:
    """For a TRL GRPOTrainer: after each generation batch is scored, log the contract telemetry as
    ``telemetry/<name>`` metrics and append the batch to the completion log. A failure here is
    logged once and never stops training."""

    completion_log: CompletionLog | None = None
    eos_ids: tuple = ()
    _telemetry_failed = False
    _non_finite_seen = 0

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self._telemetry_failed:
            try:
                self._observe(inputs, output)
            except Exception as err:  # noqa: BLE001 - observing must never stop a run
                self._telemetry_failed = True
                logger.warning("telemetry and completion log off for this run (%s: %s)", type(err).__name__, err)
        return output

    def _observe(self, inputs, output) -> None:
        """Telemetry and completion-log rows of one generation batch, over every process's rows: TRL's
        logs hold the gathered prompts, completions, rewards and advantages in process order, so this
        process's lengths, cut flags and problem ids are gathered the same way to sit beside them."""
        n, world = len(inputs), self.accelerator.num_processes
        total = n * world
        prompts, completions = list(self._logs["prompt"])[-total:], list(self._logs["completion"])[-total:]
        rewards = {name: list(values)[-total:] for name, values in self._logs["rewards"].items()}
        advantages = list(self._logs["advantages"])[-total:]
        mask, ids = output["completion_mask"], output["completion_ids"]
        lengths = mask.sum(1).tolist()
        limit = self.args.max_completion_length
        truncated = [
            n_tok >= limit and row[n_tok - 1] not in self.eos_ids
            for n_tok, row in zip(lengths, ids.tolist(), strict=True)
        ]
        g = self.num_generations
        offset = self.accelerator.process_index * n
        problem_ids = [inputs[i].get("problem_id", (offset + i) // g) for i in range(n)]
        if world > 1:  # every process takes part in the gather, whatever it logs after
            from accelerate.utils import gather_object

            lengths, truncated, problem_ids = (gather_object(x) for x in (lengths, truncated, problem_ids))
        mode = "train" if self.model.training else "eval"
        for key, value in contract_telemetry(
            completions, prompts=prompts, truncated=truncated, lengths=lengths
        ).items():
            self._metrics[mode][f"telemetry/{key}"].append(value)
        # NaN or infinite reward values scored as None (answers/rewards.py GuardedReward), this batch
        non_finite = sum(getattr(f, "non_finite", 0) for f in self.reward_funcs)
        self._metrics[mode]["telemetry/reward_non_finite"].append(non_finite - self._non_finite_seen)
        self._non_finite_seen = non_finite
        if mode == "train" and self.completion_log is not None and self.accelerator.is_main_process:
            rows = [
                {
                    "prompt_index": problem_ids[i],
                    "group": i // g,
                    "prompt": completion_text(prompts[i]),
                    "completion": completion_text(completions[i]),
                    "rewards": {name: values[i] for name, values in rewards.items()},
                    "advantage": advantages[i] if i < len(advantages) else None,
                    "length": lengths[i],
                    "truncated": truncated[i],
                }
                for i in range(len(completions))
            ]
            self.completion_log.write(self.state.global_step + 1, rows)
