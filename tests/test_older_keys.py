"""Older TRL and transformers keys: a recipe's are read under today's name (or skipped) with one line each;
typed on the command line they stop with their replacement."""

import dataclasses

import pytest
from trl import GRPOConfig

from trl_grpo.runs.cli import UsageError
from trl_grpo.settings import flags, older_keys, resolve


def test_the_table_matches_the_installed_releases():
    """An older key is gone from today's GRPOConfig and flags; its replacement is there. A TRL upgrade that
    brings one back, or renames a replacement again, fails here."""
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    names = {f.name for f in flags.flags_of("train")} | set(flags.aliases("train")) | fields
    for key, old in older_keys.OLDER.items():
        assert key not in names, key
        assert old.now is None or old.now in names, (key, old.now)


def _recipe(tmp_path, text):
    path = tmp_path / "old.yaml"
    path.write_text(text)
    return str(path)


def test_a_recipe_with_older_keys_is_read_under_todays_names(tmp_path, capsys):
    path = _recipe(
        tmp_path,
        "use_liger_loss: false\nvllm_device: auto\ntoken_entropy_percentile_threshold: 0.8\n"
        "evaluation_strategy: 'no'\nper_gpu_train_batch_size: 4\ntrainer:\n  wandb_log_unique_prompts: true\n",
    )
    args, _ = resolve.parse("train", ["--config", path])
    printed = capsys.readouterr().out
    assert "use_liger_loss read as use_liger_kernel (TRL 0.28 renamed it)" in printed
    assert "vllm_device skipped (TRL 0.18 removed it" in printed
    assert "token_entropy_percentile_threshold read as top_entropy_quantile 0.2" in printed
    assert "trainer: wandb_log_unique_prompts read as log_unique_prompts" in printed
    assert args.trainer["use_liger_kernel"] is False and args.per_device_train_batch_size == 4
    assert args.top_entropy_quantile == pytest.approx(0.2)
    assert args.trainer["eval_strategy"] == "no" and args.trainer["log_unique_prompts"] is True
    assert "vllm_device" not in args.trainer and not hasattr(args, "vllm_device")


def test_an_older_key_beside_its_new_name_is_one_setting_said_twice(tmp_path):
    path = _recipe(tmp_path, "use_liger_loss: false\nuse_liger_kernel: true\n")
    with pytest.raises(UsageError, match="'use_liger_loss' and 'use_liger_kernel' set one setting"):
        resolve.parse("train", ["--config", path])


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--use_liger_loss", "true"], "error: --use_liger_loss is an older release's name: TRL 0.28 renamed it"),
        (["--vllm_device=cuda:1"], "error: --vllm_device is an older release's setting: TRL 0.18 removed it"),
        (["--token_entropy_percentile_threshold", "0.8"], "give --top_entropy_quantile (note the new scale)."),
        (["--no_cuda"], "transformers 5 removed it; the device is picked here: CUDA_VISIBLE_DEVICES= hides GPUs."),
    ],
)
def test_an_older_flag_stops_with_its_replacement(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        resolve.parse("train", argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_an_older_trainer_entry_stops_with_its_replacement():
    with pytest.raises(UsageError, match="--use_liger_loss is an older release's name.*give --use_liger_kernel"):
        resolve.parse("train", ["--trainer", "use_liger_loss=true"])


def test_older_flags_stay_out_of_help_and_the_run_record():
    parser = flags.build_parser("train")
    assert "use_liger_loss" not in parser.format_help()
    assert not any(hasattr(parser.parse_args([]), k) for k in older_keys.OLDER)


def test_an_older_key_left_null_is_skipped_and_a_bad_value_is_one_line(tmp_path, capsys):
    path = _recipe(tmp_path, "evaluation_strategy: null\neval_strategy: 'no'\nper_gpu_train_batch_size: null\n")
    args, _ = resolve.parse("train", ["--config", path])
    assert args.trainer["eval_strategy"] == "no" and args.per_device_train_batch_size == 16
    assert "evaluation_strategy skipped (null;" in capsys.readouterr().out
    for bad in ("80", "high", "[0.8]"):
        with pytest.raises(UsageError, match="token_entropy_percentile_threshold: .*threshold in \\[0, 1\\]|float"):
            resolve.parse("train", ["--config", _recipe(tmp_path, f"token_entropy_percentile_threshold: {bad}\n")])


def test_no_cuda_is_skipped_not_turned_into_use_cpu(tmp_path, capsys):
    args, _ = resolve.parse("train", ["--config", _recipe(tmp_path, "no_cuda: true\n")])
    assert "use_cpu" not in (args.trainer or {}) and "no_cuda skipped" in capsys.readouterr().out
