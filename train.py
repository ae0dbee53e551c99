"""Wire data, rewards and a LoRA model into TRL's GRPOTrainer, and leave a readable run folder.

    python main.py [flags]          # this module is driven by main.py's flags

A run folder (``--output_dir``, default ``ckpts/<model>-<dataset>-<time>``) ends up holding:
    adapter_model.safetensors, adapter_config.json, tokenizer files   the trained LoRA adapter
    run_config.json     how the run started (never rewritten): every resolved setting, versions,
                        device, data sizes and dropped rows
    run_state.json      what happened since: each attempt (start, resume, flags changed on
                        resume, steps, wall time, which fast paths ran), and whether it finished
    log_history.json    the trainer's logged metrics per step
    reward_curves.png   format / accuracy / total reward means over steps (and the cold start's loss)
    sft/, sft_log_history.json   with --sft_steps: the cold start's adapter, checkpoints and loss
                                 (trl_grpo/training/cold_start.py)
    checkpoint-N/       resumable checkpoints (COMPLETE marks a fully written one)
    runs/               tensorboard logs
    merged/             with --save_merged: a standalone merged model
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import pathlib
import shutil

from trl_grpo.answers import equivalence, registry
from trl_grpo.answers.rewards import GuardedReward
from trl_grpo.data import prepare
from trl_grpo.data.seen import SeenProblems
from trl_grpo.fast.kv_cache import pick_attention
from trl_grpo.fast.packed_logps import FastLogpsTrainer
from trl_grpo.models import hardware, loading, locate, start
from trl_grpo.models.sampling import Sampling, end_ids
from trl_grpo.observe import plots, preflight, report
from trl_grpo.observe.telemetry import CompletionLog, TelemetryMixin
from trl_grpo.runs.cli import UsageError, user_errors
from trl_grpo.runs.control import (
    CheckpointMarker,
    ReplanOnExtend,
    RewardHackingWatch,
    StopOnSignal,
    nothing_left,
    resume_notes,
    take_finished_checkpoint,
    train_with_signal_stop,
)
from trl_grpo.runs.files import release, write_json_atomic
from trl_grpo.runs.folders import RUN_LOCK, checkpoint_step, prepare_output_dir, record_attempt
from trl_grpo.settings import adapting
from trl_grpo.settings.trl_configs import build_configs, planned_steps, prompts_per_step
from trl_grpo.training import cold_start, record
from trl_grpo.training.dynamic_sampling import DynamicSampling

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- the run
def prepare_datasets(args, tokenizer, context: int | None = None):
    """Training (and, with --eval_steps, evaluation) rows from data_utils' one prompt pipeline,
    rendered to the very text eval.py renders, the rows left out by reason, and what the test
    rows are (carved from train by problem text when the dataset has no test split; training
    never sees them, and evaluation leaves out any test problem that also occurs in training)."""
    common = {
        "template": args.prompt_template,
        "system": args.system_prompt,
        "dataset_config": args.dataset_config,
        "prefill_think": args.prefill_think,
        "max_prompt_length": args.max_prompt_length,
        "columns": (args.problem_column, args.solution_column, args.answer_column),
        "context": context,
    }
    train_ds, dropped, held_out = prepare.prompt_rows(
        tokenizer, args.dataset_id, args.train_split, "train", held_out=args.test_split, **common
    )
    counts, eval_ds = {"train": dropped}, None
    if args.eval_steps:
        known = SeenProblems.of(train_ds["problem"])
        eval_ds, counts["eval"], held_out = prepare.prompt_rows(
            tokenizer, args.dataset_id, args.test_split, "eval", exclude=known, **common
        )
    return train_ds, eval_ds, counts, held_out


class RunTrainer(ReplanOnExtend, DynamicSampling, TelemetryMixin, FastLogpsTrainer):
    """The trainer of a run: TRL's GRPOTrainer with the fast log-probs (trl_grpo/fast/packed_logps.py), dynamic
    sampling (trl_grpo/training/dynamic_sampling.py; before the telemetry, which sees each round sampled), and the
    telemetry and completion log (trl_grpo/observe/telemetry.py)."""

    sft_dataset = (
        None  # the cold start's worked solutions (--sft_steps; trl_grpo/training/cold_start.py), set by build_trainer
    )


def _resolve(args, state, given=frozenset()) -> dict:
    """Where the model comes from, its tokenizer, and the hardware choices: device, precision,
    attention, fast paths (models/hardware.py decides each)."""
    with state.main_process_first():  # convert the embedded model once, not once per process
        resolved = locate.resolve_model(args.model_id)
    if resolved["adapter"]:  # training goes on from it (models/start.py): its own shape wins
        start.check_adapter_flags(resolved["adapter"], args, given)
    if not os.path.isdir(resolved["base"]):
        locate.check_hub_model(resolved["base"])  # a clear error before any heavy work
    device = hardware.pick_device()
    use_bf16, dtype = hardware.training_precision(device, args.bf16)
    dtype = hardware.weights_dtype(args.dtype, dtype, resolved["base"])
    fast = hardware.fast_paths_enabled(args.fast_paths, device, "train")
    attention = args.attn_implementation or (pick_attention(device, use_bf16) if fast else None)
    tokenizer = loading.load_tokenizer(
        resolved["base"], args.trust_remote_code, args.model_revision, args.chat_template, args.chat_template_kwargs
    )
    return {
        "resolved": resolved,
        "device": device,
        "use_bf16": use_bf16,
        "dtype": dtype,
        "fast": fast,
        "attention": attention,
        "tokenizer": tokenizer,
    }


def build_trainer(args, output_dir: str, resume_ckpt: str | None = None, startup=None):
    """The configured ``GRPOTrainer``, its signal-stop callback and the resolved run configuration."""
    from accelerate import PartialState

    equivalence.set_verify_timeout(args.verify_timeout)
    GuardedReward.time_bound_s = args.reward_timeout
    # cpu=True on a CPU machine: under torchrun, a bare PartialState() starts as one process each, and
    # only TRL's TrainingArguments joined the processes later (each printed its own plan, and the
    # embedded model's one-time conversion was not shared).
    state = PartialState(cpu=hardware.pick_device() == "cpu")
    hw = _resolve(args, state, startup.given if startup else set())
    if args.dynamic_sampling and state.num_processes > 1:  # a prompt's group spans processes there
        raise UsageError(
            f"--dynamic_sampling {args.dynamic_sampling} runs in one process; this launch has {state.num_processes}. "
            "Launch one process, or leave --dynamic_sampling at 0."
        )
    context = locate.context_length(hw["resolved"]["base"])
    train_ds, eval_ds, dropped, held_out = prepare_datasets(
        args, hw["tokenizer"], context
    )  # data errors before the model loads
    sft_ds, sft_skipped = (
        cold_start.sft_dataset(train_ds, args.prefill_think, hw["tokenizer"], context) if args.sft_steps else (None, {})
    )
    rewards = registry.get_reward_funcs(args.reward_funcs, registry.parameters_of(vars(args)))
    try:
        preflight.check_rewards(rewards, train_ds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    why = startup.run_length if startup else "as given"
    if state.is_main_process:
        print(run_length_line(args, len(train_ds), state.num_processes, why), flush=True)
    if sft_ds is not None:
        print(f"Cold start first: {args.sft_steps} supervised steps on {len(sft_ds)} worked solutions.", flush=True)
    compute = "bfloat16" if hw["use_bf16"] else "float32"
    model = loading.load_model(
        hw["resolved"],
        hw["dtype"],
        device=hw["device"] if args.load_in_4bit or args.load_in_8bit else None,
        trust_remote_code=args.trust_remote_code,
        merge=not args.use_peft,  # from an adapter: trained on (LoRA), or merged into the weights that train
        attn_implementation=hw["attention"],
        revision=args.model_revision,
        init_kwargs=args.model_init_kwargs,
        quantization=adapting.quantization_config(args, getattr(__import__("torch"), compute)),
        trainable=args.use_peft,
    )
    if not hw["resolved"]["adapter"]:
        start.check_targets(model, args)
    logger.info(
        "Model: %s | device %s | dtype %s | processes %d",
        hw["resolved"]["source"],
        hw["device"],
        hw["dtype"],
        state.num_processes,
    )
    grpo_config, lora_config = build_configs(args, output_dir, hw["use_bf16"], use_cpu=hw["device"] == "cpu")
    if hw["resolved"]["adapter"]:
        lora_config = None  # the model already holds the adapter it goes on training (or it was merged in)
    trackers = args.report_to.split(",")
    if args.logging_dir or "tensorboard" in trackers:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", args.logging_dir or os.path.join(output_dir, "runs"))
    if "wandb" in trackers:
        _wandb_offline_unless_logged_in(output_dir)
    if "trackio" in trackers:  # trackio keeps its runs locally; here, in the run folder
        os.environ.setdefault("TRACKIO_DIR", os.path.join(output_dir, "trackio"))
    marker, stopper, watch = CheckpointMarker(), StopOnSignal(), RewardHackingWatch()
    trainer = RunTrainer(
        model=model,
        reward_funcs=rewards,
        args=grpo_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=hw["tokenizer"],
        peft_config=lora_config,
        callbacks=[marker, stopper, watch],
    )
    trainer.sft_dataset = sft_ds
    if hw["fast"] and not args.use_vllm:  # sampling under bf16 autocast where training autocasts
        trainer.install_fast_generate(bf16_autocast=hw["use_bf16"])
    trainer.shared_prefix = hw["fast"]
    trainer.dynamic_sampling = args.dynamic_sampling
    trainer.eos_ids = end_ids(trainer.model, hw["tokenizer"])
    if args.completions_log_max > 0 and state.is_main_process:
        path = os.path.join(output_dir, "completions.jsonl")
        # resumed with no GRPO checkpoint (stopped in or just after the cold start): no GRPO step is kept
        resumed_at = checkpoint_step(resume_ckpt) if resume_ckpt else 0 if args.resume_from_checkpoint else None
        trainer.completion_log = CompletionLog(path, args.completions_log_every, args.completions_log_max, resumed_at)
    if state.is_main_process:
        start.print_trainable(trainer.model)  # as the original printed it
    data = {"train": train_ds, "eval": eval_ds, "dropped": dropped, "held_out": held_out}
    data |= {"sft": sft_ds, "sft_left_out": sft_skipped}
    run_config = record.run_config(args, startup, output_dir, resume_ckpt, hw, state, trainer, data)
    run_config |= {
        "grpo_config": {k: v for k, v in grpo_config.to_dict().items() if not k.startswith("_")},
        "lora_config": start.lora_record(trainer.model),
        "started_from": start.started_from(hw["resolved"], args.use_peft),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    return trainer, stopper, run_config


def _wandb_offline_unless_logged_in(output_dir: str) -> None:
    """wandb writes inside the run folder, and offline unless an account is set up (WANDB_API_KEY or
    ``wandb login``), or WANDB_MODE is chosen: a run never fails or hangs for want of a network or login.
    Sync an offline run later with ``wandb sync <run folder>/wandb/offline-run-*``."""
    os.environ.setdefault("WANDB_DIR", os.path.abspath(output_dir))
    os.environ.setdefault("WANDB_PROJECT", "trl_grpo")
    netrc = pathlib.Path("~/.netrc").expanduser()
    logged_in = os.environ.get("WANDB_API_KEY") or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    if "WANDB_MODE" not in os.environ and not logged_in:
        os.environ["WANDB_MODE"] = "offline"
        logger.info("wandb: offline, into %s/wandb (no WANDB_API_KEY); sync later with wandb sync", output_dir)


def run_length_line(args, train_rows: int, processes: int, why: str = "as given") -> str:
    """One line: how long the run is and why (resolve.resolve_run_length says why)."""
    per_step = prompts_per_step(args, processes)
    over = f" over {processes} processes" if processes > 1 else ""
    shape = f"{per_step} prompts x {args.num_generations} completions per step{over}"
    if args.max_steps == 0:
        return "Run length: no GRPO steps (--max_steps 0): the cold start alone."
    if args.max_steps > 0:
        return f"Run length: {args.max_steps} steps ({why}); {shape}."
    steps = planned_steps(args, train_rows, processes)
    return (
        f"Run length: {args.num_train_epochs:g} epoch(s) of {train_rows} prompts, about {steps} steps ({why}); {shape}."
    )


def preflight_plan(args, train_rows: int, processes: int) -> preflight.Plan:
    """What the preflight samples (as the run samples) and knows of the run, from the settings."""
    sampling = Sampling(
        args.max_completion_length,
        args.temperature,
        args.top_p,
        args.top_k,
        args.min_p,
        args.repetition_penalty,
        samples=args.num_generations,
        seed=args.seed,
    )
    return preflight.Plan(
        sampling,
        args.preflight_prompts,
        prompts_per_step(args, processes),
        planned_steps(args, train_rows, processes),
        args.max_prompt_length,
        args.sft_steps,
        args.prompt_template,
        args.prefill_think,
        args.dynamic_sampling,
    )


def train(args, startup=None, callbacks=()) -> int:
    """Run GRPO training as ``args`` say (resolve.parse: checked, a resumed run's settings restored).
    Returns a process exit code.

    ``startup``: what resolve.parse learned (``resolve.Startup``: run length, changes on resume, the
    recipe file); ``callbacks``: extra ``TrainerCallback`` objects (benchmarks time steps with one).
    """
    from trl_grpo.settings.resolve import Startup

    startup = startup or Startup()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    output_dir, resume_ckpt, created = prepare_output_dir(args)
    lock = os.path.join(output_dir, RUN_LOCK)
    try:
        return _run(args, startup, output_dir, resume_ckpt, callbacks)
    finally:
        release(lock)
        if created and os.path.isdir(output_dir) and os.listdir(output_dir) == [RUN_LOCK]:
            shutil.rmtree(output_dir, ignore_errors=True)  # failed before writing anything: leave no empty folder


def _write_report(output_dir: str) -> None:
    try:
        report.write_report(output_dir)
    except Exception as err:  # noqa: BLE001 - the page is a view; it must never fail a run
        logger.warning(
            "report.html not written (%s: %s); python report.py %s retries", type(err).__name__, err, output_dir
        )


def _save_tokenizer_and_merged(trainer, tokenizer, output_dir: str, args) -> None:
    tokenizer.save_pretrained(output_dir)
    if not args.save_merged:
        return
    if not hasattr(trainer.model, "merge_and_unload"):
        logger.info(
            "--save_merged: the run trained the whole model; %s holds it already (nothing to merge)", output_dir
        )
        return
    model = trainer.model
    if args.load_in_4bit or args.load_in_8bit:  # merged into a full-precision copy of the base, not the quantized one
        resolved = {"base": locate.resolve_model(args.model_id)["base"], "adapter": output_dir}
        model = loading.load_model(
            resolved,
            "auto",
            trust_remote_code=args.trust_remote_code,
            merge=False,
            revision=args.model_revision,
            init_kwargs=args.model_init_kwargs,
        )
    merged = model.merge_and_unload()
    merged.save_pretrained(os.path.join(output_dir, "merged"), safe_serialization=True)
    tokenizer.save_pretrained(os.path.join(output_dir, "merged"))


def _run(args, startup, output_dir: str, resume_ckpt: str | None, callbacks) -> int:
    with user_errors():
        trainer, stopper, run_config = build_trainer(args, output_dir, resume_ckpt, startup)
    from accelerate import PartialState

    state = PartialState()
    tokenizer = trainer.processing_class
    for callback in callbacks:
        trainer.add_callback(callback)
    if args.preflight or args.preflight_only:
        plan = preflight_plan(args, len(trainer.train_dataset), state.num_processes)
        report = preflight.run_preflight(trainer, plan, trainer.train_dataset, run_config["dropped"]["train"])
        if state.is_main_process:
            write_json_atomic(os.path.join(output_dir, "preflight.json"), report)
            print("\n".join(preflight.summary_lines(report)), flush=True)
        if args.preflight_only:
            return 3 if report["verdict"] == "no_signal" else 0
    attempt = {
        "started": run_config["started"],
        "resumed_from": resume_ckpt,
        "changed_flags": startup.changed_on_resume,
        "complete": False,
    }
    if state.is_main_process:
        if not os.path.isfile(os.path.join(output_dir, "run_config.json")):  # the run's identity: written once,
            # at its start (or the first time a checkpoint is resumed into this folder)
            write_json_atomic(os.path.join(output_dir, "run_config.json"), run_config)
            logger.info("Resolved configuration written to %s/run_config.json", output_dir)
        record_attempt(output_dir, attempt)

    # the cold start first, unless resuming a GRPO checkpoint (which holds the adapter the cold start left)
    cold = args.sft_steps and not resume_ckpt
    after = preflight_plan(args, len(trainer.train_dataset), state.num_processes) if args.preflight else None
    dropped = run_config["dropped"]["train"]
    if cold and cold_start.cold_start(trainer, args, output_dir, stopper, attempt, dropped, after):
        if state.is_main_process:
            _write_report(output_dir)
        return 130  # stopped in the cold start: resume goes on from there
    if args.max_steps == 0:  # the cold start alone: its adapter is the run's
        wall = 0.0
    elif resume_ckpt and nothing_left(resume_ckpt, args.max_steps):
        wall = take_finished_checkpoint(trainer, resume_ckpt)
    else:
        if resume_ckpt:
            trainer.replan_from, notes = resume_notes(resume_ckpt, args.max_steps)
            for note in notes if state.is_main_process else ():
                print(note, flush=True)
        wall = train_with_signal_stop(trainer, stopper, resume_ckpt)
    steps = trainer.state.global_step
    history = trainer.state.log_history
    # a stop asked for during the last step changes nothing: the run is finished and saved as such
    interrupted = stopper.stop_requested and steps < trainer.state.max_steps
    attempt.update(
        {
            "completions_log": trainer.completion_log.stats() if trainer.completion_log else None,
            "train_wall_s": round(wall, 1),
            "steps": steps,
            "interrupted": interrupted,
            "fast_paths": run_config["fast_paths"]
            | (trainer.fast_paths_report() if run_config["fast_paths"]["enabled"] else {}),
        }
    )
    if state.is_main_process:
        write_json_atomic(os.path.join(output_dir, "log_history.json"), history)
        plots.draw_run(output_dir, history, f"{steps} steps, {wall / 60:.1f} min")
        record_attempt(output_dir, attempt)
        _write_report(output_dir)
    if interrupted:
        logger.warning(
            "Stopped at step %d. Resume with: python main.py --output_dir %s --resume_from_checkpoint last",
            steps,
            output_dir,
        )
        return 130
    trainer.save_model(output_dir)  # the adapter only (PEFT), or the whole model (--no-use_peft)
    if state.is_main_process:
        _save_tokenizer_and_merged(trainer, tokenizer, output_dir, args)
        attempt.update({"finished": _dt.datetime.now().isoformat(timespec="seconds"), "complete": True})
        record_attempt(output_dir, attempt)
        cold = attempt.get("sft") if isinstance(attempt.get("sft"), dict) else None
        logger.info(
            "Done: %s%d GRPO steps in %.1f min. %s, run_config.json, run_state.json, log_history.json and "
            "reward_curves.png in %s",
            f"{cold['steps']} cold-start steps in {cold['train_wall_s'] / 60:.1f} min, then " if cold else "",
            steps,
            wall / 60,
            "Adapter" if args.use_peft else "Model weights",
            output_dir,
        )
        print(f"Run folder: {output_dir}")
    return 0
