"""trl_grpo/settings/ (flags, resolve, recipe, checks): recipe files, every GRPO knob, reward files, resume policy."""

import json
import os

import pytest

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.evaluation import pipeline
from trl_grpo.settings import flags, recipe, resolve


def _recipe(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- precedence: defaults < recipe < command line
def test_a_recipe_sets_defaults_and_the_command_line_wins(tmp_path):
    path = _recipe(
        tmp_path,
        "learning_rate: 1e-5\n"  # YAML 1.1 reads this as a string: a number here
        "epsilon_high: 0.28\nscale_rewards: none\nlr_scheduler_type: cosine\nreward_funcs: [format, accuracy]\n"
        "model_name_or_path: embedded\ndataset_name: builtin:2\n",
    )
    args, startup = resolve.parse("train", ["--config", path, "--learning_rate", "3e-4"])
    assert args.learning_rate == 3e-4 and args.epsilon_high == 0.28 and args.scale_rewards == "none"
    assert args.lr_scheduler_type == "cosine" and args.reward_funcs == "format,accuracy"
    assert args.model_id == "embedded" and args.dataset_id == "builtin:2"  # open-r1 spellings
    assert startup.recipe["path"] == path and len(startup.recipe["sha256"]) == 16
    assert {"epsilon_high", "learning_rate"} <= startup.given


def test_values_from_the_recipe_count_as_given(tmp_path):
    """num_train_epochs in a recipe means epochs, as when typed: the quick 40-step default does not apply."""
    args, startup = resolve.parse("train", ["--config", _recipe(tmp_path, "num_train_epochs: 2\n")])
    assert args.max_steps == -1 and "num_train_epochs given" in startup.run_length
    args, startup = resolve.parse("train", [])
    assert args.max_steps == flags.QUICK_RECIPE_STEPS


@pytest.mark.parametrize(
    "text,message",
    [
        ("epsilon_hgh: 0.3\n", "unknown key 'epsilon_hgh'. Did you mean 'epsilon_high'"),
        ("learning_rate: fast\n", "learning_rate: expected float, got 'fast'"),
        ("scale_rewards: sometimes\n", "'sometimes' is not one of ['group', 'batch', 'none']"),
        ("mask_truncated_completions: 1\n", "expected true or false"),
        (
            "trainer:\n  adam_beta3: 0.9\n",
            "GRPOConfig has no field 'adam_beta3'. Did you mean 'adam_beta2'",
        ),
        ("trainer:\n  adam_beta2: [1, 2]\n", "adam_beta2 takes float"),
        ("- a list\n", "expected a mapping"),
        ("a: [unclosed\n", "cannot be read as YAML"),
        ("torch_dtype: float8\n", "torch_dtype: 'float8' is not one of ['auto', 'bfloat16', 'float16', 'float32']"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_key(tmp_path, text, message):
    with pytest.raises(SystemExit) as err:
        resolve.parse("train", ["--config", _recipe(tmp_path, text)])
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_trainer_fields_are_converted_and_a_field_with_its_own_flag_is_that_flag(tmp_path):
    path = _recipe(tmp_path, "trainer:\n  max_grad_norm: 0.5\n  adam_beta2: '0.99'\n  logging_first_step: true\n")
    args, startup = resolve.parse("train", ["--config", path, "--trainer", "adam_epsilon=1e-6"])
    assert args.max_grad_norm == 0.5 and "max_grad_norm" in startup.given
    assert args.trainer == {"adam_beta2": 0.99, "logging_first_step": True, "adam_epsilon": 1e-6}
    args, _ = resolve.parse("train", ["--config", path, "--max_grad_norm", "2.0"])
    assert args.max_grad_norm == 2.0  # the command line still wins over trainer:
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        resolve.parse("train", ["--trainer", "adam_beta2"])


def test_a_trainer_value_grpoconfig_refuses_stops_before_any_load(tmp_path):
    with pytest.raises(
        SystemExit,
        match="GRPOConfig refuses this run's settings: .*generation_batch_size.*"
        r"\(trainer: fields given: generation_batch_size\)",
    ):
        resolve.parse("train", ["--trainer", "generation_batch_size=7"])  # not divisible by num_generations


def test_eval_reads_a_recipe_too(tmp_path, capsys):
    args, _ = resolve.parse("eval", ["--config", _recipe(tmp_path, "limit: 5\ntemperature: 0.7\nnum_samples: 2\n")])
    assert (args.limit, args.temperature, args.num_samples) == (5, 0.7, 2)
    resolve.parse("eval", ["--config", _recipe(tmp_path, "trainer:\n  adam_beta2: 0.9\nlearning_rate: 1\n", "e.yaml")])
    assert "skips its training settings: trainer: adam_beta2, learning_rate" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown key 'adam_beta3'"):  # a key training lacks too: still refused
        resolve.parse("eval", ["--config", _recipe(tmp_path, "adam_beta3: 0.9\n", "f.yaml")])


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--epsilon_high", "0.1", "must be a number >= --epsilon 0.2"),
        ("--top_p", "0", "must be in (0, 1]"),
        ("--top_k", "-1", "must be >= 0"),
        ("--min_p", "2", "must be in [0, 1]"),
        ("--top_entropy_quantile", "0", "must be in (0, 1]"),
        ("--num_iterations", "0", "must be 1 or more"),
        ("--delta", "0.5", "must be a number > 1"),
        ("--lr_scheduler_type", "sometimes", "expected one of"),
        ("--repetition_penalty", "0", "must be a positive number"),
    ],
)
def test_the_knobs_are_checked_before_loading(flag, value, message):
    with pytest.raises(SystemExit) as err:
        resolve.parse("train", [flag, value])
    assert message in str(err.value)


def test_our_knob_defaults_are_the_installed_grpoconfigs():
    """A knob left alone means TRL's own default: the table's defaults are the installed GRPOConfig's."""
    import dataclasses

    from trl import GRPOConfig

    trl_defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    knobs = ("epsilon", "epsilon_high", "delta", "scale_rewards", "importance_sampling_level", "top_entropy_quantile")
    knobs += ("mask_truncated_completions", "num_iterations", "weight_decay", "max_grad_norm", "top_p", "top_k")
    knobs += ("min_p", "repetition_penalty", "lr_scheduler_type", "beta", "loss_type")
    ours = flags.defaults("train")
    assert {k: ours[k] for k in knobs} == {k: trl_defaults[k] for k in knobs}


def test_every_grpoconfig_field_is_reachable():
    """A flag, or a trainer: entry: every field of the installed GRPOConfig can be set."""
    fields = recipe.grpo_fields()
    assert len(fields) >= 150
    converted = recipe.trainer_values({"adam_beta2": "0.99", "gradient_checkpointing_kwargs": {"use_reentrant": False}})
    assert converted == {"adam_beta2": 0.99, "gradient_checkpointing_kwargs": {"use_reentrant": False}}


# ---------------------------------------------------------------- rewards from a file
REWARD_FILE = '''
def short_reward(completions, **kwargs):
    """Shorter completions score higher (a toy reward, in TRL's signature)."""
    return [1.0 / (1 + len(c if isinstance(c, str) else c[0]["content"])) for c in completions]


def broken_reward(completions, **kwargs):
    raise RuntimeError("boom")
'''


@pytest.mark.parametrize(
    "spec,message",
    [
        ("missing.py:short_reward", "no such file"),
        ("{file}:nothing_here", "has no function 'nothing_here'"),
        ("no_such_package_xyz.mod:fn", "cannot import 'no_such_package_xyz.mod'"),
        ("{file}:broken_reward", "reward broken_reward raised on a first batch"),
    ],
)
def test_a_bad_reward_is_one_line_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, spec, message):
    from trl_grpo.models import loading

    (tmp_path / "my_rewards.py").write_text(REWARD_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    argv = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--output_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as err:
        main.main([*argv, "--reward_funcs", "format," + spec.format(file="my_rewards.py")])
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.fixture(scope="module")
def recipe_run(tiny_model_dir, tmp_path_factory):
    """A 2-step run from a recipe of one's own, with a reward from a file, and the command line overriding it."""
    folder = tmp_path_factory.mktemp("recipe")
    (folder / "my_rewards.py").write_text(REWARD_FILE)
    path = _recipe(
        folder,
        "epsilon_high: 0.28\nscale_rewards: none\nlr_scheduler_type: cosine\nlearning_rate: 1e-5\n"
        f"reward_funcs: [format, accuracy, '{folder / 'my_rewards.py'}:short_reward']\n"
        "trainer:\n  max_grad_norm: 0.5\n  adam_beta2: 0.99\n",
    )
    out = str(folder / "run")
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS, "--config", path]
    assert main.main([*argv, "--learning_rate", "3e-3", "--no-preflight"]) == 0
    return out, path


def test_a_recipe_lands_in_the_runs_grpo_config(recipe_run):
    out, path = recipe_run
    with open(os.path.join(out, "run_config.json")) as f:
        config = json.load(f)
    grpo = config["grpo_config"]
    assert grpo["epsilon_high"] == 0.28 and grpo["scale_rewards"] == "none" and grpo["lr_scheduler_type"] == "cosine"
    assert grpo["max_grad_norm"] == 0.5 and grpo["adam_beta2"] == 0.99 and grpo["learning_rate"] == 3e-3
    assert config["recipe"]["path"] == path and config["args"]["trainer"] == {"adam_beta2": 0.99}
    sources = {r["name"]: r for r in config["rewards"]}
    assert sources["short_reward"]["sha256"] and sources["short_reward"]["file"].endswith("my_rewards.py")


def test_a_reward_from_a_file_is_logged_and_evaluated(recipe_run, tmp_path):
    out, _ = recipe_run
    with open(os.path.join(out, "log_history.json")) as f:
        history = json.load(f)
    assert any("rewards/short_reward/mean" in e for e in history)
    result = str(tmp_path / "e.json")
    assert (
        pipeline.main(["--model_dir", out, "--limit", "3", "--max_completion_length", "4", "--output_file", result])
        == 0
    )
    with open(result[:-5] + ".summary.json") as f:
        means = json.load(f)["reward_means"]
    assert set(means) == {"format_reward", "accuracy_reward", "short_reward"} and 0 < means["short_reward"] <= 1


def test_resume_allows_logging_fields_and_refuses_learning_ones(recipe_run):
    out, _ = recipe_run
    ckpt = os.path.join(out, "checkpoint-1")
    with pytest.raises(SystemExit) as err:
        resolve.parse("train", ["--output_dir", out, "--resume_from_checkpoint", ckpt, "--trainer", "adam_beta2=0.9"])
    assert "--trainer adam_beta2: the run was started with 0.99, not 0.9" in str(err.value)
    args, startup = resolve.parse(
        "train", ["--output_dir", out, "--resume_from_checkpoint", ckpt, "--trainer", "logging_first_step=true"]
    )
    assert startup.changed_on_resume == {"trainer.logging_first_step": [None, True]}
    assert args.trainer == {"adam_beta2": 0.99, "logging_first_step": True} and args.epsilon_high == 0.28


# ---------------------------------------------------------------- data and prompt options
def test_a_local_folder_laid_out_by_configuration(tmp_path):
    import data_utils
    from trl_grpo.data import splits

    for config, n in (("main", 3), ("socratic", 5)):
        (tmp_path / "gsm" / config).mkdir(parents=True)
        rows = [{"question": f"{config} {i}?", "answer": f"w\n#### {i}"} for i in range(n)]
        (tmp_path / "gsm" / config / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(splits.DataError, match="several configurations \\(main, socratic\\).*--dataset_config"):
        data_utils.load_and_process_data(str(tmp_path / "gsm"), "train", None)
    train, _ = data_utils.load_and_process_data(str(tmp_path / "gsm"), "train", None, dataset_config="socratic")
    assert len(train) == 5 and train[0]["problem"].startswith("socratic")


def test_a_system_prompt_of_ones_own(tmp_path):
    import data_utils

    (tmp_path / "p.txt").write_text("Answer in a box.\n")
    args, _ = resolve.parse("train", ["--system_prompt", f"@{tmp_path / 'p.txt'}"])
    assert args.system_prompt == "Answer in a box."  # the run records the text, not the file
    train, _ = data_utils.load_and_process_data("builtin:1", "train[:2]", None, system=args.system_prompt)
    assert train[0]["prompt"][0] == {"role": "system", "content": "Answer in a box."}
    with pytest.raises(SystemExit, match="cannot be read"):
        resolve.parse("train", ["--system_prompt", "@/no/such/file.txt"])


# ---------------------------------------------------------------- recipes/
RECIPES = sorted(f for f in os.listdir(os.path.join(os.path.dirname(__file__), "..", "recipes")) if f.endswith(".yaml"))
CPU_RECIPES = {"cpu_quick.yaml": {}, "dr_grpo.yaml": {"loss_type": "dr_grpo", "scale_rewards": "none"}}
CPU_RECIPES["dapo.yaml"] = {"epsilon_high": 0.28, "mask_truncated_completions": True}
CPU_RECIPES["gspo.yaml"] = {"importance_sampling_level": "sequence", "epsilon": 3e-4, "steps_per_generation": 4}
CPU_RECIPES["cold_start.yaml"] = {"learning_rate": 3e-5, "temperature": 0.7}


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_reads_and_checks(name, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    args, startup = resolve.parse("train", ["--config", f"recipes/{name}"])
    assert startup.recipe["sha256"] and args.model_id
    assert set(RECIPES) >= {"cpu_quick.yaml", "original.yaml", "qwen2.5-0.5b_numina.yaml", "qwen2.5-3b_numina.yaml"}
    assert set(RECIPES) >= set(CPU_RECIPES)


@pytest.mark.parametrize("name", sorted(CPU_RECIPES))
def test_the_cpu_recipes_train_two_steps(name, tiny_model_dir, tmp_path, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    out = str(tmp_path / "run")
    small = ["--model_id", tiny_model_dir, "--train_split", "train[:16]", "--max_steps", "2", "--output_dir", out]
    small += ["--max_completion_length", "8", "--report_to", "none", "--save_strategy", "no", "--no-preflight"]
    if name == "cold_start.yaml":  # its 60 supervised steps are the recipe's; 2 show the phase runs (115 s -> ~6 s)
        small += ["--sft_steps", "2"]
    assert main.main(["--config", f"recipes/{name}", *small]) == 0
    with open(os.path.join(out, "run_config.json")) as f:
        grpo = json.load(f)["grpo_config"]
    assert {k: grpo[k] for k in CPU_RECIPES[name]} == CPU_RECIPES[name] and grpo["max_steps"] == 2


def test_make_train_runs_the_best_measured_recipe_that_fits_ten_minutes():
    """The cold start then GRPO when the committed make learn-levels run has it above GRPO alone (the quick
    recipe's way) in mean accuracy over the four levels within 600 s of training; else the quick recipe."""
    from conftest import ROOT

    with open(os.path.join(ROOT, "bench", "learning_levels.json")) as f:
        report = json.load(f)
    means = report["mean_trained_accuracy"]
    best = means["levels"] > means["grpo_only"] and report["train_wall_s"] <= 600
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert f"main.py --config recipes/{'cold_start' if best else 'cpu_quick'}.yaml" in f.read()


def test_the_quick_recipe_is_main_pys_defaults():
    from conftest import ROOT

    defaults = flags.defaults("train")
    args, _ = resolve.parse("train", ["--config", os.path.join(ROOT, "recipes", "cpu_quick.yaml")])
    assert all(getattr(args, k) == v for k, v in defaults.items() if k not in ("config", "trainer"))  # the defaults


def test_the_cold_start_recipe_is_what_learn_levels_measures(monkeypatch):
    import importlib.util

    from conftest import ROOT

    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    spec = importlib.util.spec_from_file_location("learning_levels", os.path.join(ROOT, "bench", "learning_levels.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    measured = bench.trains_with([*bench.COLD_START_RECIPE, *(f"--{k}={v}" for k, v in bench.SFT.items())])
    recipe, _ = resolve.parse("train", ["--config", os.path.join(ROOT, "recipes", "cold_start.yaml")])
    assert vars(recipe) | {"config": None, "trainer": None} == vars(measured) | {"trainer": None}
