"""Recipes that say one thing twice, or more than they can: refused in one line naming both places,
before anything loads; and eval.py taking the shipped training recipes."""

import os
import time

import pytest

from conftest import ROOT
from trl_grpo.settings import flags, resolve

RECIPES = sorted(f for f in os.listdir(os.path.join(ROOT, "recipes")) if f.endswith(".yaml"))


def _recipe(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _refused(command, argv):
    with pytest.raises(SystemExit) as err:
        resolve.parse(command, argv)
    assert len(str(err.value).splitlines()) == 1, str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    "text, named",
    [
        (
            "learning_rate: 1e-4\nmax_steps: 5\nlearning_rate: 0.5\n",
            ["'learning_rate' is given twice", "lines 1 and 3"],
        ),
        ("trainer:\n  adam_beta2: 0.9\n  adam_beta2: 0.99\n", ["'adam_beta2' is given twice", "lines 2 and 3"]),
        ("dataset_name: builtin:2\ndataset_id: builtin:1\n", ["'dataset_name' (line 1)", "'dataset_id' (line 2)"]),
        (
            "batch_size: 8\nper_device_train_batch_size: 16\n",
            ["'batch_size' (line 1)", "'per_device_train_batch_size' (line 2)"],
        ),
        (
            "learning_rate: 1e-4\ntrainer:\n  learning_rate: 0.5\n",
            ["'learning_rate' (line 1)", "learning_rate' (line 3)"],
        ),
        ("adam_beta2: 0.9\ntrainer:\n  adam_beta2: 0.99\n", ["at the top (line 1)", "under trainer: (line 3)"]),
        ("model_name_or_path: a\ntrainer:\n  max_steps: 3\nmax_steps: 4\n", ["'max_steps'", "line 4", "line 3"]),
    ],
)
def test_one_setting_said_twice_is_refused_naming_both_places(tmp_path, text, named):
    message = _refused("train", ["--config", _recipe(tmp_path, text)])
    assert all(part in message for part in named), message


def test_aliases_that_expand_without_end_are_refused_at_once(tmp_path):
    """A "billion laughs" file: nine levels of ten aliases each stand for 10^9 values."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    start = time.time()
    message = _refused("train", ["--config", _recipe(tmp_path, "\n".join(lines) + "\nlora_target_modules: *a9\n")])
    assert "aliases" in message and "100,000 values" in message and time.time() - start < 10


def test_a_few_aliases_are_fine(tmp_path):
    path = _recipe(tmp_path, "trainer:\n  adam_beta1: &b 0.9\n  adam_beta2: *b\n")
    args, _ = resolve.parse("train", ["--config", path])
    assert args.trainer == {"adam_beta1": 0.9, "adam_beta2": 0.9}


def test_config_given_twice_is_refused(tmp_path):
    one, two = _recipe(tmp_path, "max_steps: 3\n", "a.yaml"), _recipe(tmp_path, "learning_rate: 0.5\n", "b.yaml")
    message = _refused("train", ["--config", one, "--config", two])
    assert "--config is given 2 times" in message and "a.yaml" in message and "b.yaml" in message


@pytest.mark.parametrize(
    "text, named",
    [
        ("max_steps: .inf\n", "max_steps: expected int"),
        ("lora_r: 1e400\n", "lora_r: expected int"),
        ("learning_rate: 1e400\n", "learning_rate: expected float"),
        ("max_steps: .nan\n", "max_steps: expected int"),
        ("trainer:\n  adam_beta2: 1e400\n", "adam_beta2 takes float"),
    ],
)
def test_a_number_no_field_can_hold_is_one_line(tmp_path, text, named):
    assert named in _refused("train", ["--config", _recipe(tmp_path, text)])


@pytest.mark.parametrize("name", RECIPES)
def test_eval_takes_every_shipped_recipe(name, monkeypatch, capsys):
    """The keys eval.py shares with training apply; the training-only ones are named once and skipped."""
    import yaml

    monkeypatch.chdir(ROOT)
    args, _ = resolve.parse("eval", ["--config", f"recipes/{name}", "--model_dir", "embedded"])
    with open(os.path.join(ROOT, "recipes", name)) as f:
        recipe = yaml.safe_load(f)
    if "max_completion_length" in recipe:
        assert args.max_completion_length == recipe["max_completion_length"]
    if "prompt_template" in recipe:
        assert args.prompt_template == recipe["prompt_template"]
    printed = capsys.readouterr().out
    assert printed.count("eval.py skips its training settings") <= 1
    if "learning_rate" in recipe:
        assert "learning_rate" in printed


@pytest.mark.parametrize(
    "argv, recipe, want",
    [
        (["--report_to", "tensorboard,wandb"], "", ["tensorboard", "wandb"]),
        ([], "report_to: [tensorboard, wandb]\n", ["tensorboard", "wandb"]),  # open-r1 writes lists
        ([], "report_to: [none]\n", []),
        (["--report_to", "none"], "", []),
    ],
)
def test_report_to_takes_a_list(tmp_path, argv, recipe, want):
    from trl_grpo.settings.trl_configs import build_configs

    config = ["--config", _recipe(tmp_path, recipe)] if recipe else []
    args, _ = resolve.parse("train", [*config, *argv, "--output_dir", str(tmp_path / "run")])
    grpo, _ = build_configs(args, str(tmp_path / "run"), False, use_cpu=True)
    assert grpo.report_to == want


def test_an_unknown_or_missing_tracker_is_one_line(tmp_path):
    assert "--report_to 'mlflow'" in _refused("train", ["--report_to", "tensorboard,mlflow"])
    import importlib.util

    if importlib.util.find_spec("trackio") is None:
        assert "pip install trackio" in _refused("train", ["--report_to", "trackio"])


@pytest.mark.parametrize("word", ["true", "True", "last"])
def test_resume_from_checkpoint_true_means_the_newest(tmp_path, word):
    """The Trainer's convention (open-r1 recipes write resume_from_checkpoint: true)."""
    args, _ = resolve.parse("train", ["--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", word])
    assert args.resume_from_checkpoint == "last"
    args, _ = resolve.parse("train", ["--config", _recipe(tmp_path, "resume_from_checkpoint: false\n")])
    assert args.resume_from_checkpoint is None


def test_every_grpo_config_field_is_a_flag_and_arrives():
    """TRL's CLI takes every GRPOConfig field as a flag; so does main.py (generated from TRL's dataclass)."""
    import dataclasses

    from trl import GRPOConfig

    from trl_grpo.settings import flags
    from trl_grpo.settings.trl_configs import build_configs

    parser = flags.build_parser("train")
    options = {o for a in parser._actions for o in a.option_strings}
    fields = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    from trl_grpo.settings.trl_fields import SET_BY_THE_RUN

    missing = sorted(f for f in fields - SET_BY_THE_RUN if f"--{f}" not in options)
    assert not missing, f"GRPOConfig fields without a flag: {missing}"
    argv = ["--adam_beta2", "0.99", "--logging_first_step", "--no-log_on_each_node", "--torch_empty_cache_steps", "3"]
    args, _ = resolve.parse("train", [*argv, "--output_dir", "/tmp/x-never-written"])
    config, _ = build_configs(args, "/tmp/x-never-written", False, use_cpu=True)
    assert (config.adam_beta2, config.logging_first_step, config.log_on_each_node) == (0.99, True, False)
    assert config.torch_empty_cache_steps == 3


@pytest.mark.parametrize("spelled", [["--logging_first_step", "true"], ["--logging_first_step"]])
def test_a_boolean_field_takes_each_spelling(spelled, tmp_path):
    args, _ = resolve.parse("train", [*spelled, "--output_dir", str(tmp_path / "r")])
    assert args.trainer["logging_first_step"] is True
    args, _ = resolve.parse("train", ["--logging_first_step", "false", "--output_dir", str(tmp_path / "r")])
    assert args.trainer["logging_first_step"] is False


def test_a_field_given_as_a_flag_and_in_trainer_is_refused(tmp_path):
    message = _refused("train", ["--adam_beta2", "0.9", "--trainer", "adam_beta2=0.99"])
    assert "--adam_beta2 and --trainer adam_beta2" in message


def test_a_bad_field_value_is_one_line_before_loading(tmp_path):
    assert "adam_beta2 takes float" in _refused("train", ["--adam_beta2", "fast"])


def test_every_flag_named_like_a_grpo_config_field_reaches_it(tmp_path):
    """The mapping lives with each flag (to_trl=True): a flag named like a field either passes straight
    through (its value arrives in the GRPOConfig the trainer gets) or is one build_configs sets itself."""
    import dataclasses

    from trl import GRPOConfig

    from trl_grpo.settings import flags, trl_configs

    fields = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    named = {f.name for f in flags.flags_of("train")} & fields
    assert named == set(trl_configs.SAME_NAME) | (named & set(trl_configs.SET_HERE))
    changed = ["--learning_rate", "3e-4", "--epsilon", "0.3", "--top_k", "7", "--weight_decay", "0.01"]
    changed += ["--num_iterations", "2", "--save_total_limit", "3", "--lr_scheduler_type", "cosine"]
    args, _ = resolve.parse("train", [*changed, "--output_dir", str(tmp_path / "r")])
    config, _ = trl_configs.build_configs(args, str(tmp_path / "r"), False, use_cpu=True)
    for name in (n for n in trl_configs.SAME_NAME if getattr(args, n) is not None):  # None: TRL's default
        assert getattr(config, name) == getattr(args, name) or str(getattr(config, name)).endswith(
            str(getattr(args, name))
        ), name
    assert (config.learning_rate, config.top_k, config.num_iterations) == (3e-4, 7, 2)


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--save_merged"], True),
        (["--save_merged", "true"], True),
        (["--save_merged", "false"], False),
        (["--no-save_merged"], False),
        (["--no-preflight"], False),
        (["--preflight", "false"], False),
    ],
)
def test_every_boolean_flag_takes_x_no_x_and_true_false(argv, want, tmp_path):
    """So a recipe's `save_merged: true` can be turned off on the command line."""
    name = argv[0].removeprefix("--").removeprefix("no-")
    args, _ = resolve.parse("train", [*argv, "--output_dir", str(tmp_path / "r")])
    assert getattr(args, name) is want
    path = _recipe(tmp_path, f"{name}: true\n")
    args, _ = resolve.parse("train", ["--config", path, f"--no-{name}", "--output_dir", str(tmp_path / "r")])
    assert getattr(args, name) is False


def test_a_grpo_config_field_at_the_top_of_a_recipe_is_read(tmp_path):
    args, _ = resolve.parse("train", ["--config", _recipe(tmp_path, "adam_beta2: 0.9\n"), "--output_dir", "/tmp/x"])
    assert args.trainer == {"adam_beta2": 0.9}
    args, _ = resolve.parse("train", ["--config", _recipe(tmp_path, "adam_beta2: 0.9\n"), "--adam_beta2", "0.5"])
    assert args.trainer == {"adam_beta2": 0.5}  # the command line wins over the recipe


def test_a_text_field_is_taken_verbatim_and_a_mapping_as_json(tmp_path):
    argv = ["--run_name", "exp #2", "--lr_scheduler_kwargs", '{"min_lr": 1e-6}', "--output_dir", str(tmp_path)]
    args, _ = resolve.parse("train", argv)
    assert args.trainer == {"run_name": "exp #2", "lr_scheduler_kwargs": {"min_lr": 1e-6}}


def test_a_field_given_as_a_flag_is_compared_on_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text('{"args": {"trainer": {"adam_beta2": 0.95}}}')
    with pytest.raises(SystemExit) as err:  # the resume refusal: a heading line, then one line a setting
        resolve.parse("train", ["--output_dir", str(run), "--resume_from_checkpoint", "last", "--adam_beta2", "0.5"])
    assert "adam_beta2: the run was started with 0.95, not 0.5" in str(err.value)


@pytest.mark.parametrize(
    "flag, value", [("--cosine_max_len", "0"), ("--repetition_n_grams", "0"), ("--repetition_max_penalty", "1")]
)
def test_open_r1_reward_parameters_are_checked(flag, value):
    assert flag.removeprefix("--") in _refused("train", ["--reward_funcs", "cosine,repetition_penalty", flag, value])


def test_no_abbreviated_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        resolve.parse("train", ["--learning_ra", "1e-4"])
    assert "unrecognized arguments: --learning_ra" in capsys.readouterr().err


def test_a_broken_field_cache_is_read_again(tmp_path, monkeypatch):
    from trl_grpo.settings import trl_fields

    monkeypatch.setenv("TRL_GRPO_CACHE", str(tmp_path))
    fields = trl_fields.grpo_config_fields()  # written
    (cached,) = list(tmp_path.iterdir())
    for broken in ("[1, 2]", "null", '[{"name": "x"}]', "{}", "not json"):
        cached.write_text(broken)
        assert trl_fields.grpo_config_fields() == fields


def test_trls_fields_are_grouped_as_trl_and_transformers_document_them():
    """--help and docs/flags.md group the generated flags by the headings of GRPOConfig's and
    TrainingArguments' docstrings; a docstring layout TRL or transformers changes would drop them here."""
    from trl_grpo.settings import trl_fields

    fields = {f["name"]: f["group"] for f in trl_fields.grpo_config_fields()}
    placed = [n for n, g in fields.items() if g != trl_fields.OTHER]
    assert len(placed) >= 0.95 * len(fields), sorted(n for n in fields if n not in placed)
    assert (fields["temperature"], fields["beta"], fields["vllm_mode"]) == (
        "TRL: generation",
        "TRL: training",
        "TRL: generation acceleration powered by vLLM",
    )
    assert fields["adam_beta2"] == "transformers: Optimizer"
    titles = [g.title for g in flags.build_parser("train")._action_groups]
    assert titles.index("GRPOConfig, TRL: training") < titles.index("GRPOConfig, transformers: Optimizer")
