"""The cold start: ``--sft_steps`` supervised steps on worked solutions before GRPO, with TRL's
SFTTrainer, on the very LoRA adapter GRPO then trains.

    python main.py --sft_steps 30 ...     # train.py runs this phase first

What lands in the run folder:
    sft/checkpoint-N/        resumable checkpoints of the phase (COMPLETE marks a fully written one)
    sft/adapter_model.safetensors, tokenizer files   the adapter after the phase: what SFT alone
                             taught (eval.py --model_dir RUN/sft measures it)
    sft_log_history.json     the phase's loss per step (drawn beside the rewards in reward_curves.png)
    run_state.json "sft"     steps, wall time, rows, whether the phase finished

A run stopped during the phase resumes it (``--resume_from_checkpoint last``); a run stopped
during GRPO never repeats it: GRPO's checkpoints hold the adapter, and before the first of them
the phase's saved adapter is loaded.
"""

from __future__ import annotations

import gc
import logging
import os

from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START
from trl_grpo.data import sft_targets
from trl_grpo.data.splits import DataError
from trl_grpo.models import start
from trl_grpo.observe import plots, preflight
from trl_grpo.runs.control import CheckpointMarker, nothing_left, take_finished_checkpoint, train_with_signal_stop
from trl_grpo.runs.files import read_json, write_json_atomic
from trl_grpo.runs.folders import COMPLETE_MARKER, RUN_STATE, SFT_DIR, find_last_checkpoint, record_attempt

logger = logging.getLogger(__name__)

SFT_LOG = "sft_log_history.json"


def sft_dataset(train_ds, prefill_think: bool, tokenizer, context: int | None):
    """``(dataset, skipped)``: a prompt-completion dataset of the training rows' worked solutions in the
    output contract (data/sft_targets.py), rows the model's context cannot hold left out (never cut), and the
    count of rows left out by reason. ``DataError`` naming the column flags when none is left."""
    from datasets import Dataset

    try:
        columns = (train_ds["prompt"], train_ds["solution"], train_ds["answer"])
        rows, skipped = sft_targets.sft_rows(*columns, prefill_think)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    # A worked solution holding the chat template's own markers (<|im_end|><|im_start|>user) would teach
    # real special tokens inside the thinking: left out and counted.
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t and len(t) > 1]
    specials += [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special]
    specials = set(specials) - {THINK_START, THINK_END, ANSWER_START, ANSWER_END}  # the contract's own tags
    marked = [any(t in r["completion"] for t in specials) for r in rows]
    skipped["special_tokens"] = marked.count(True)
    rows = [r for r, bad in zip(rows, marked, strict=True) if not bad]
    if not rows:
        raise DataError(
            "Every worked solution holds the tokenizer's special tokens (such as <|im_end|>): nothing to teach "
            "with --sft_steps. Clean the solution column, or use --sft_steps 0."
        )
    skipped["too_long"] = 0
    if context:
        sizes = [len(tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in rows]
        fits = [n < context for n in sizes]
        skipped["too_long"] = fits.count(False)
        rows = [r for r, ok in zip(rows, fits, strict=True) if ok]
        if not rows:
            raise DataError(
                f"Every worked solution is longer than the model's context ({context} tokens) with its prompt: "
                "nothing to teach with --sft_steps. Use a model with a longer context, or --sft_steps 0."
            )
    if any(skipped.values()):
        logger.warning("Cold start: %d worked solutions; rows left out: %s", len(rows), skipped)
    return Dataset.from_list(rows), skipped


def sft_dir(output_dir: str) -> str:
    return os.path.join(output_dir, SFT_DIR)


def recorded(output_dir: str) -> dict:
    """The phase's record in run_state.json (empty when it never ran)."""
    path = os.path.join(output_dir, RUN_STATE)
    state = read_json(path, "run state") if os.path.isfile(path) else {}
    return state.get("sft") or {}


def finished(output_dir: str) -> bool:
    """Whether the phase finished and saved its adapter (``sft/COMPLETE`` is written last)."""
    folder = sft_dir(output_dir)
    return os.path.isfile(os.path.join(folder, COMPLETE_MARKER)) and start.saved_weights(folder) is not None


def _record(output_dir: str, record: dict) -> None:
    path = os.path.join(output_dir, RUN_STATE)
    state = read_json(path, "run state") if os.path.isfile(path) else {"attempts": []}
    state["sft"] = record
    write_json_atomic(path, state)


def load_finished(model, output_dir: str) -> None:
    """The model's adapter (or, full fine-tuning, its weights) becomes what the finished phase saved (GRPO
    starts from it)."""
    start.load_saved_weights(model, sft_dir(output_dir))
    logger.info("Cold start done before: GRPO starts from %s", sft_dir(output_dir))


_PATCHED = ("forward", "_original_forward", "_is_accelerate_prepared")


def _model_patches(model) -> list:
    """What a trainer patches onto the model's instances (its forward, accelerate's marks), to be put back."""
    owners = [model, model.get_base_model()] if hasattr(model, "get_base_model") else [model]
    return [(owner, {key: owner.__dict__.get(key) for key in _PATCHED}) for owner in owners]


def _restore_patches(saved: list) -> None:
    for owner, values in saved:
        for key, value in values.items():
            owner.__dict__.pop(key, None)
            if value is not None:
                owner.__dict__[key] = value


def run(grpo_trainer, args, dataset, output_dir: str, stopper, resuming: bool, is_main: bool) -> tuple[dict, list]:
    """Run (or, ``resuming``, continue) the phase on ``grpo_trainer.model``; returns its record (steps,
    wall time, rows, ``complete``, ``interrupted``) and its log history. The adapter is saved in
    ``sft/`` when the phase completes."""
    from trl import SFTTrainer

    from trl_grpo.fast.packed_sft import FastSFTTrainer
    from trl_grpo.settings.trl_configs import build_sft_config

    folder = sft_dir(output_dir)
    config = build_sft_config(args, folder, grpo_trainer.args)
    checkpoint = find_last_checkpoint(folder) if resuming else None
    model = grpo_trainer.model
    # SFTTrainer leaves its own patches on the model GRPO goes on training; each is put back as it was:
    # - it patches the base model's forward with a fused LM head at temperature 1 (replacing GRPO's, at
    #   --temperature): left in place, GRPO's loss would score its samples at the wrong temperature;
    # - its accelerator wraps the PeftModel's forward (autocast) and marks the model prepared, so GRPO's
    #   accelerator would not wrap it for its own precision.
    saved = _model_patches(model)
    # the GRPO loss's speed paths serve this loss too where the run has them (--fast_paths)
    trainer_class = FastSFTTrainer if getattr(grpo_trainer, "shared_prefix", False) else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=grpo_trainer.processing_class,
        callbacks=[CheckpointMarker(), stopper],
    )
    if checkpoint and nothing_left(checkpoint, args.sft_steps):
        wall = take_finished_checkpoint(trainer, checkpoint)
    else:
        if checkpoint:
            logger.info("Cold start: continuing from %s", checkpoint)
        wall = train_with_signal_stop(trainer, stopper, checkpoint)
    _restore_patches(saved)
    steps, history = trainer.state.global_step, list(trainer.state.log_history)
    interrupted = stopper.stop_requested and steps < args.sft_steps
    losses = [e["loss"] for e in history if "loss" in e]
    before = recorded(output_dir) if resuming else {}
    record = {
        "steps": steps,
        "train_wall_s": round(before.get("train_wall_s", 0.0) + wall, 1),
        "rows": len(dataset),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "complete": not interrupted,
        "resumed_from": checkpoint,
        "fast_paths": trainer.fast_report() if isinstance(trainer, FastSFTTrainer) else "off",
    }
    if not interrupted:
        trainer.save_model(folder)  # the adapter after the phase: eval.py --model_dir RUN/sft
    if is_main:
        write_json_atomic(os.path.join(output_dir, SFT_LOG), history)
        if not interrupted:
            grpo_trainer.processing_class.save_pretrained(folder)
            with open(os.path.join(folder, COMPLETE_MARKER), "w") as f:
                f.write(f"cold start: {steps} steps\n")
        _record(output_dir, record)
    del trainer
    gc.collect()  # the phase's optimizer and wrappers go before GRPO builds its own
    return {**record, "interrupted": interrupted}, history


def cold_start(trainer, args, output_dir: str, stopper, attempt: dict, dropped: dict, plan=None) -> bool:
    """The phase before GRPO as a run needs it: run, continued (resuming), or taken as done (its adapter
    loaded); recorded in the attempt; given a preflight ``plan`` (--preflight), a preflight of the model
    after it (preflight_after_sft.json). Returns whether a stop came during it (GRPO is then not started)."""
    is_main = trainer.accelerator.is_main_process
    resuming = bool(args.resume_from_checkpoint)
    if resuming and finished(output_dir):
        load_finished(trainer.model, output_dir)
        attempt["sft"] = "finished before"
        return False
    record, _ = run(trainer, args, trainer.sft_dataset, output_dir, stopper, resuming, is_main)
    attempt["sft"] = record
    if is_main:
        record_attempt(output_dir, attempt)
        plots.draw_run(output_dir, [], f"cold start, {record['steps']} steps")
    if stopper.stop_requested:  # also in its last step: the phase is saved, and GRPO is not started
        logger.warning(
            "Stopped in the cold start (%d of %d steps). Resume with: python main.py --output_dir %s "
            "--resume_from_checkpoint last",
            record["steps"],
            args.sft_steps,
            output_dir,
        )
        attempt["interrupted"] = True
        if is_main:
            record_attempt(output_dir, attempt)
        return True
    # GRPO starts from the seed, as a run started from the phase's adapter (--model_id RUN/sft) starts: the
    # phase's draws (its batches and dropout) do not shift GRPO's sampling, so both ways end alike.
    # (per process, as TRL seeds: processes sharing a prompt's group must not sample alike)
    from accelerate.utils import set_seed

    set_seed(args.seed, device_specific=True)
    if plan is not None:
        report = preflight.run_preflight(trainer, plan, trainer.train_dataset, dropped)
        report["sampled_from"] = f"the model after {record['steps']} cold-start steps"
        if is_main:
            write_json_atomic(os.path.join(output_dir, "preflight_after_sft.json"), report)
            print("\n".join(preflight.summary_lines(report)), flush=True)
    return False
