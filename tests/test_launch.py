"""Launching on several processes: configs that fix no process count, a GPU config refused on a
machine without GPUs, no more CPU processes than cores; all before anything loads."""

import os

import pytest
import yaml

from conftest import ROOT
from trl_grpo.settings.checks import check_launch

CONFIGS = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yaml"))


@pytest.mark.parametrize("name", CONFIGS)
def test_no_launch_config_fixes_a_process_count(name):
    """configs/ddp.yaml fixed 8: on a 2-core machine the README's command started 8 trainings."""
    with open(os.path.join(ROOT, "configs", name)) as f:
        text = f.read()
    config = yaml.safe_load(text)
    assert "num_processes" not in config and "--num_processes N" in text
    from accelerate.commands.config.config_args import ClusterConfig

    assert ClusterConfig.from_yaml_file(os.path.join(ROOT, "configs", name)).num_processes == -1  # asked for


def test_the_launch_configs_cover_ddp_deepspeed_and_fsdp():
    assert {"ddp.yaml", "zero2.yaml", "zero3.yaml", "fsdp.yaml"} <= set(CONFIGS)
    with open(os.path.join(ROOT, "configs", "fsdp.yaml")) as f:
        assert yaml.safe_load(f)["distributed_type"] == "FSDP"


@pytest.mark.parametrize(
    "env, cores, cuda, says",
    [
        ({}, 2, False, None),  # one process
        ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, 2, False, None),  # torchrun --nproc_per_node 2 on 2 cores
        ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, 2, False, "8 training processes on a CPU machine with 2 cores"),
        (
            {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "False"},
            16,
            False,
            "this launch config is for GPUs",
        ),
        ({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "ACCELERATE_USE_CPU": "False"}, 2, True, None),  # 8 GPUs
    ],
)
def test_a_launch_this_machine_cannot_hold_is_one_line(env, cores, cuda, says):
    problems = check_launch(env, cores, cuda)
    if says is None:
        assert problems == []
    else:
        assert len(problems) == 1 and says in problems[0] and len(problems[0].splitlines()) == 1


def test_main_refuses_it_before_loading(monkeypatch, tmp_path):
    import main

    monkeypatch.setenv("WORLD_SIZE", "64")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    monkeypatch.setattr("trl_grpo.models.loading.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(SystemExit, match="64 training processes on a CPU machine"):
        main.main(["--output_dir", str(tmp_path / "run")])


def test_a_hub_push_is_checked_before_the_model_loads(monkeypatch, tmp_path):
    """No network here: push_to_hub from --trainer (or a recipe) stops at once in one line."""
    import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("trl_grpo.models.loading.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(SystemExit) as err:
        main.main(["--output_dir", str(tmp_path / "run"), "--trainer", "push_to_hub=true"])
    message = str(err.value)
    assert message.startswith("push_to_hub: the hub cannot be used from here") and len(message.splitlines()) == 1
    assert "--trainer push_to_hub=false" in message


@pytest.mark.parametrize(
    "user, repo, ok",
    [
        ({"name": "ann", "orgs": []}, "ann/model", True),
        ({"name": "ann", "orgs": [{"name": "lab"}]}, "lab/model", True),
        ({"name": "ann", "orgs": []}, "bob/model", False),
        ({"name": "ann"}, None, True),
    ],
)
def test_a_push_to_a_namespace_the_user_cannot_write_is_refused(user, repo, ok):
    from trl_grpo.settings.checks import check_hub_push

    assert (check_hub_push(repo, whoami=lambda: user) == []) is ok
