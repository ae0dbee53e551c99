"""bench/learning_levels.py end to end at toy scale: every configuration (cold start + GRPO, the cold
start alone, GRPO alone, the original) trained and measured per level, each with its own prompt and
length, the untrained model measured once per prompt, the JSON line and the picture written."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_learning_levels_reports_each_level_for_every_configuration(tiny_model_dir, tmp_path):
    out = tmp_path / "levels"
    cmd = [sys.executable, "bench/learning_levels.py", "--model", str(tiny_model_dir), "--out", str(out)]
    cmd += ["--steps", "1", "--levels", "1,3", "--limit", "3", "--pass_k", "2", "--pass_limit", "2"]
    cmd += ["--sft_steps", "2", "--sft_batch_size", "4", "--"]
    cmd += ["--train_split", "train[:16]", "--per_device_train_batch_size", "4", "--num_generations", "2"]
    cmd += ["--max_completion_length", "8", "--no-preflight"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == json.loads((out / "learning_levels.json").read_text())
    assert (out / "learning_levels.png").stat().st_size > 10_000
    assert len(report["cpu_gflops_start_end"]) == 2 and min(report["cpu_gflops_start_end"]) > 0
    configs = (report, report["sft_only"], report["grpo_only"], report["original_config"])
    assert [r["steps"] for r in configs] == [1, 0, 1, 1] and [r["sft_steps"] for r in configs] == [2, 2, 0, 0]
    assert report["train_wall_s"] > report["sft_only"]["train_wall_s"] > 0
    assert set(report["mean_trained_accuracy"]) == {"levels", "sft_only", "grpo_only"}
    for result in configs:
        assert set(result["levels"]) == {"1", "3"}
        for level in result["levels"].values():
            for which in ("base", "trained"):
                r = level[which]
                assert r["n"] == 3 and 0 <= r["accuracy"] <= 1 and len(r["accuracy_ci95"]) == 2
                assert 0 <= r["format_reward_mean"] <= 1 and 0 <= r["pass_at_2"] <= 1
    # Each configuration is measured with the prompt it trains with; the trained one loads its adapter.
    original = json.loads((out / "original-base-level3.json").read_text())
    recipe = json.loads((out / "levels-trained-level3.json").read_text())
    # the three recipe configurations share one measure of the untrained model; sft_only is the run's sft/
    assert report["grpo_only"]["levels"] == {
        lv: {**r, "base": report["levels"][lv]["base"]} for lv, r in report["grpo_only"]["levels"].items()
    }
    assert not list(out.glob("grpo_only-base-*")) and not list(out.glob("sft_only-base-*"))
    sft_results = json.loads((out / "sft_only-trained-level1.summary.json").read_text())
    assert sft_results["model"].endswith(os.path.join("run-levels", "sft"))
    assert original[0]["prompt"].count("A conversation between User and Assistant") == 1
    assert "Example:" in recipe[0]["prompt"] and "How many" in recipe[0]["prompt"]
    # pass@k samples at each configuration's training temperature (the original: TRL's 1.0).
    assert report["original_config"]["pass_temperature"] == 1.0
    for tag, result in (("levels", report), ("original", report["original_config"])):
        sampled = json.loads((out / f"{tag}-trained-level1-pass2.summary.json").read_text())
        assert sampled["settings"]["temperature"] == result["pass_temperature"]
        assert sampled["settings"]["num_samples"] == 2 and sampled["n"] == 2
    assert os.path.isfile(out / "run-original" / "adapter_config.json")
    adapter = json.loads((out / "run-original" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    trained_lr = {
        tag: json.loads((out / f"run-{tag}" / "run_config.json").read_text())["args"]["learning_rate"]
        for tag in ("levels", "grpo_only", "original")
    }
    assert trained_lr == {"levels": 3e-5, "grpo_only": 3e-4, "original": 1e-5}

    # An unknown level is refused before anything runs, naming what is accepted.
    bad = subprocess.run([*cmd[:2], "--levels", "5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--levels '5'" in bad.stderr and "1,2,3,4" in bad.stderr
