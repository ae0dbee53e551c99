"""From a command line (and a recipe) to the settings a command runs with, and what start-up learned.

    python main.py --config recipes/cpu_quick.yaml --learning_rate 1e-4      # resolve.parse("train", argv)

``parse`` reads ``--config`` (trl_grpo/settings/recipe.py), sets the recipe's values as defaults so the command line
wins, folds ``trainer:`` and ``--trainer KEY=VALUE`` into one mapping of GRPOConfig fields, restores
a resumed run's settings (refusing a change to what it learns), settles the run length, and checks
every value (trl_grpo/settings/checks.py): all before anything heavy loads. What it learned along the way is
returned in ``Startup``, never stashed on the settings. eval.py's unset data flags take the
evaluated run's own values (``fill_eval_defaults``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from trl_grpo.data.splits import DataError
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.files import read_json
from trl_grpo.settings import checks, flags, recipe

# Settings that may change when a run is resumed: they do not change what is learned.
RESUME_SAFE = {
    "output_dir",
    "resume_from_checkpoint",
    "max_steps",
    "num_train_epochs",
    "logging_steps",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "eval_steps",
    "logging_dir",
    "report_to",
    "log_completions",
    "save_merged",
    "fast_paths",
    "verify_timeout",
    "reward_timeout",
    "attn_implementation",
    "trust_remote_code",
    "preflight",
    "preflight_only",
    "preflight_prompts",
    "completions_log_every",
    "completions_log_max",
    "config",
}
# GRPOConfig fields set through trainer: that may change on resume: logging, saving, evaluating, reporting.
RESUME_SAFE_TRAINER = ("logging_", "log_", "save_", "eval_", "report_to", "run_name", "push_to_hub", "hub_")
RESUME_SAFE_TRAINER += ("disable_tqdm", "num_completions_to_print", "dataloader_", "per_device_eval_batch_size")


@dataclass
class Startup:
    """What start-up learned: the settings given (command line and recipe), why the run is as long as it
    is, what changed on resume, and the recipe file (path and SHA-256)."""

    given: set = field(default_factory=set)
    run_length: str = "as given"
    changed_on_resume: dict = field(default_factory=dict)
    recipe: dict | None = None
    typed: set = field(default_factory=set)  # the settings typed on the command line (not the recipe's)


def parse(command: str, argv: list[str] | None = None) -> tuple[argparse.Namespace, Startup]:
    """The settings of ``command`` ('train' or 'eval') from ``argv``, checked, and what start-up learned.

    Raises ``UsageError`` (one ``error:`` line per problem, exit 2) for anything a user can fix.
    """
    parser = flags.build_parser(command)
    config = _config_path(argv)
    try:
        loaded = recipe.load(config, command) if config else None
    except DataError as exc:
        raise UsageError(str(exc)) from None
    if loaded:
        parser.set_defaults(**loaded.values)
        for note in loaded.notes:
            print(f"--config {config}: {note}.", flush=True)
        if loaded.skipped:
            print(f"--config {config}: eval.py skips its training settings: {', '.join(loaded.skipped)}.", flush=True)
    args = parser.parse_args(argv)
    fields = {name: getattr(args, name) for name in getattr(parser, "trl_fields", []) if hasattr(args, name)}
    for name in fields:  # GRPOConfig fields given as flags join --trainer's entries (below)
        delattr(args, name)
    cli_given = given_flags(command, argv) - set(fields)
    if any(v is not None for v in fields.values()):
        cli_given.add("trainer")  # a GRPOConfig field as a flag is a trainer entry: resume compares it too
    given = cli_given | (set(loaded.values) if loaded else set())
    startup = Startup(given=given, recipe={"path": config, "sha256": loaded.sha256} if loaded else None)
    startup.typed = set(cli_given)
    args.system_prompt = _prompt_text(args.system_prompt)
    args.chat_template = _prompt_text(args.chat_template, "--chat_template", strip=False)
    for name in ("dataset_config", "model_revision"):  # "" on the command line unsets a recipe's value
        if getattr(args, name, None) == "":
            setattr(args, name, None)  # a template's own spacing
    if command == "eval":
        fill_eval_defaults(args, cli_given)
        checks.check_eval(args)
        return args, startup
    try:
        args.trainer = _trainer(args, loaded, cli_given, given, {k: v for k, v in fields.items() if v is not None})
    except DataError as exc:
        raise UsageError(str(exc)) from None
    args.reward_funcs = ",".join(_absolute(spec.strip()) for spec in args.reward_funcs.split(",") if spec.strip())
    args.report_to = ",".join(reports(args.report_to)) or "none"
    if str(args.resume_from_checkpoint).strip().lower() in ("true", "false", "none", ""):  # the Trainer's words
        args.resume_from_checkpoint = "last" if str(args.resume_from_checkpoint).strip().lower() == "true" else None
    if args.resume_from_checkpoint:
        startup.changed_on_resume = restore_for_resume(args, given)
    startup.run_length = resolve_run_length(args, given)
    _full_fine_tuning_rate(args, given)
    checks.check_train(args)
    return args, startup


def _full_fine_tuning_rate(args, given: set[str]) -> None:
    """--no-use_peft without a learning rate takes full fine-tuning's own; a high one is warned about once."""
    if args.use_peft or args.resume_from_checkpoint:  # a resumed run keeps its recorded rate
        return
    if "learning_rate" not in given:
        args.learning_rate = flags.FULL_FINE_TUNING_LEARNING_RATE
        print(f"--no-use_peft: learning rate {args.learning_rate:g} (full fine-tuning's default).", flush=True)
    elif args.learning_rate > flags.FULL_FINE_TUNING_WARN_ABOVE:
        print(
            f"warning: --no-use_peft at learning rate {args.learning_rate:g}: the whole embedded model at 2e-4 "
            "collapsed to 0.000 held-out accuracy, at 1e-5 it reached 0.545 (bench/README.md). Consider "
            f"--learning_rate {flags.FULL_FINE_TUNING_LEARNING_RATE:g}.",
            flush=True,
        )


REPORTS = ("tensorboard", "wandb", "trackio", "none")


def reports(value) -> list[str]:
    """``--report_to``'s trackers as a list (``none`` alone: []); ``UsageError`` naming an unknown one.

    >>> reports("tensorboard, wandb"), reports("none"), reports(["trackio"])
    (['tensorboard', 'wandb'], [], ['trackio'])
    """
    items = value if isinstance(value, (list, tuple)) else str(value or "none").split(",")
    names = [str(n).strip().lower() for n in items if str(n).strip()]
    unknown = [n for n in names if n not in REPORTS]
    if unknown:
        raise UsageError(f"--report_to {unknown[0]!r}: expected one or more of {list(REPORTS)}, comma-separated.")
    return [n for n in dict.fromkeys(names) if n != "none"]


def _prompt_text(value: str | None, flag: str = "--system_prompt", strip: bool = True) -> str | None:
    """A text flag's text: as given, or read from the file after ``@`` (the run records the text)."""
    if not value or not value.startswith("@"):
        return value
    try:
        with open(value[1:], encoding="utf-8") as f:
            text = f.read()
            return text.strip() if strip else text
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{flag} {value}: cannot be read ({exc}). Give the text, or @ and a UTF-8 file.") from None


def _absolute(spec: str) -> str:
    """A reward from a file with its path made absolute, so an evaluation run from elsewhere finds it."""
    path, sep, name = spec.rpartition(":")
    return f"{os.path.abspath(path)}:{name}" if sep and path.endswith(".py") else spec


def _config_path(argv: list[str] | None) -> str | None:
    """The one ``--config`` given; two are refused (which would win is no rule a user should learn)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", action="append", default=None)
    paths = pre.parse_known_args(argv)[0].config or []
    if len(paths) > 1:
        raise UsageError(
            f"--config is given {len(paths)} times ({', '.join(paths)}): give one recipe, with the settings "
            "of the others copied into it or given as flags (flags win over the recipe)."
        )
    return paths[0] if paths else None


def given_flags(command: str, argv: list[str] | None) -> set[str]:
    """The settings (by name) written on the command line, defaults left out."""
    parser = flags.build_parser(command)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def _trainer(args, loaded, cli_given: set, given: set, fields: dict | None = None) -> dict:
    """One mapping of GRPOConfig fields from the recipe's ``trainer:``, then ``--trainer`` and the fields
    given as flags (``--adam_beta2 0.99``; both win over the recipe; one field both ways is refused). A
    field with its own flag is that flag, given (the flag on the command line still wins)."""
    entries = dict(loaded.trainer) if loaded else {}
    typed = recipe.parse_trainer_entries(args.trainer)
    flagged = {k: recipe.typed_text(k, v) for k, v in (fields or {}).items()}
    both = sorted(set(typed) & set(flagged))
    if both:
        raise DataError(f"--{both[0]} and --trainer {both[0]}=... set one field: give it once.")
    entries.update(typed)
    entries.update(flagged)
    own = {f.name for f in flags.flags_of("train")}
    for key in [k for k in entries if k in own]:
        value = entries.pop(key)
        if key not in cli_given:
            setattr(args, key, recipe.flag_value(flags.BY_NAME[key], value, f"trainer: {key}"))
            given.add(key)
    return recipe.trainer_values(entries) if entries else {}


def resolve_run_length(args, given: set[str]) -> str:
    """A length the user gave is never overridden by a default: --num_train_epochs alone means epochs.
    Returns why the run is as long as it is, for the line train.py prints at the start."""
    if "max_steps" in given:
        return "--max_steps given"
    if "num_train_epochs" in given:
        args.max_steps = -1
        return "--num_train_epochs given without --max_steps"
    if args.resume_from_checkpoint:
        return "as the run was started"
    return "the quick CPU recipe: neither --max_steps nor --num_train_epochs given"


# ---------------------------------------------------------------- resume
def restore_for_resume(args, given: set[str]) -> dict:
    """On resume, take every setting from the run's run_config.json; refuse a given one that would change
    what is learned (each named with its old and new value). Settings in ``RESUME_SAFE`` (and trainer:
    fields for logging and saving) may change; returns the changes, ``{name: [old, new]}``."""
    resume = args.resume_from_checkpoint
    # the checkpoint's own run decides, also when it is resumed into a new --output_dir
    run_dir = os.path.dirname(os.path.abspath(resume)) if resume and resume != "last" else args.output_dir
    path = os.path.join(run_dir or "", "run_config.json")
    if not run_dir or not os.path.isfile(path):
        return {}  # nothing recorded (a run of an older version): the flags as given
    recorded = read_json(path, "run record").get("args", {})
    changed, refused = {}, []
    for name, old in recorded.items():
        if not hasattr(args, name) or name in ("output_dir", "resume_from_checkpoint"):
            continue
        new = getattr(args, name)
        if name == "trainer":
            merged = _resume_trainer(old or {}, new or {}, name in given, changed, refused)
            setattr(args, name, merged)
        elif name not in given:
            setattr(args, name, old)
        elif new != old and name in RESUME_SAFE:
            changed[name] = [old, new]
        elif new != old:
            refused.append(f"--{name}: the run was started with {old!r}, not {new!r}")
    if refused:
        raise UsageError(
            "resuming would change what this run learns; drop these settings (every setting is restored from "
            f"{path}) or start a new run in a new --output_dir:\n" + "\n".join(refused)
        )
    return changed


def _resume_trainer(old: dict, new: dict, given: bool, changed: dict, refused: list) -> dict:
    """The trainer: fields of a resumed run: the recorded ones, with given logging/saving ones changed."""
    if not given:
        return old
    merged = dict(old)
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key, old.get(key))
        if before == after:
            continue
        if key.startswith(RESUME_SAFE_TRAINER):
            changed[f"trainer.{key}"] = [before, after]
            merged[key] = after
        else:
            refused.append(f"--trainer {key}: the run was started with {before!r}, not {after!r}")
    return merged


# ---------------------------------------------------------------- eval.py's defaults
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}
R1_SAMPLES = 4


def fill_eval_defaults(args, given: frozenset = frozenset()) -> None:
    """Unset data and prompt flags take the evaluated run's own training values (its run_config.json),
    else main.py's defaults, so an evaluation sees the prompts its model was trained on."""
    from trl_grpo.runs.context import run_settings

    trained = run_settings(args.model_dir)
    training = flags.defaults("train")
    keys = ("dataset_id", "prompt_template", "prefill_think", "max_completion_length")
    fallback = {k: training[k] for k in keys}
    fallback.update(problem_column=None, solution_column=None, answer_column=None, system_prompt=None)
    fallback.update(dataset_config=None, model_revision=None, model_init_kwargs=None, chat_template=None)
    fallback.update(chat_template_kwargs=None)
    other_data = args.dataset_id is not None and args.dataset_id != trained.get("dataset_id", args.dataset_id)
    for key, default in fallback.items():
        if getattr(args, key) is None:
            # the run's configuration and columns name its own dataset's, not another one's
            own = other_data and key in ("dataset_config", "problem_column", "solution_column", "answer_column")
            setattr(args, key, default if own else trained.get(key, default))
    args.reward_funcs = trained.get("reward_funcs", training["reward_funcs"])  # scored with the run's rewards
    if args.r1_sampling:  # DeepSeek-R1's report: T 0.6, top-p 0.95, pass@1 averaged over several samples
        clash = [f"--{k} {getattr(args, k)}" for k, v in R1_SAMPLING.items() if k in given and getattr(args, k) != v]
        if clash:
            raise UsageError(f"--r1_sampling sets temperature 0.6 and top-p 0.95; {', '.join(clash)} says otherwise.")
        for key, value in R1_SAMPLING.items():
            setattr(args, key, value)
    if args.num_samples is None:
        args.num_samples = R1_SAMPLES if args.r1_sampling else 1
