"""bench/learning_levels.py end to end at toy scale: both configurations trained and measured per
level, each with its own prompt and length, the JSON line and the picture written."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_learning_levels_reports_each_level_for_both_configurations(tiny_model_dir, tmp_path):
    out = tmp_path / "levels"
    cmd = [sys.executable, "bench/learning_levels.py", "--model", str(tiny_model_dir), "--out", str(out)]
    cmd += ["--steps", "1", "--levels", "1,3", "--limit", "3", "--pass_k", "2", "--pass_limit", "2", "--"]
    cmd += ["--train_split", "train[:16]", "--per_device_train_batch_size", "4", "--num_generations", "2"]
    cmd += ["--max_completion_length", "8", "--no-preflight"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == json.loads((out / "learning_levels.json").read_text())
    assert (out / "learning_levels.png").stat().st_size > 10_000
    assert len(report["cpu_gflops_start_end"]) == 2 and min(report["cpu_gflops_start_end"]) > 0
    for result in (report, report["original_config"]):
        assert result["steps"] == 1 and set(result["levels"]) == {"1", "3"}
        for level in result["levels"].values():
            for which in ("base", "trained"):
                r = level[which]
                assert r["n"] == 3 and 0 <= r["accuracy"] <= 1 and len(r["accuracy_ci95"]) == 2
                assert 0 <= r["format_reward_mean"] <= 1 and 0 <= r["pass_at_2"] <= 1
    # Each configuration is measured with the prompt it trains with; the trained one loads its adapter.
    original = json.loads((out / "original-base-level3.json").read_text())
    recipe = json.loads((out / "recipe-trained-level3.json").read_text())
    assert original[0]["prompt"].count("A conversation between User and Assistant") == 1
    assert "Example:" in recipe[0]["prompt"] and "How many" in recipe[0]["prompt"]
    # pass@k samples at each configuration's training temperature (the original: TRL's 1.0).
    assert report["original_config"]["pass_temperature"] == 1.0
    for tag, result in (("recipe", report), ("original", report["original_config"])):
        sampled = json.loads((out / f"{tag}-trained-level1-pass2.summary.json").read_text())
        assert sampled["settings"]["temperature"] == result["pass_temperature"]
        assert sampled["settings"]["num_samples"] == 2 and sampled["n"] == 2
    assert os.path.isfile(out / "run-original" / "adapter_config.json")
    adapter = json.loads((out / "run-original" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    trained_lr = {
        tag: json.loads((out / f"run-{tag}" / "run_config.json").read_text())["args"]["learning_rate"]
        for tag in ("recipe", "original")
    }
    assert trained_lr == {"recipe": 3e-4, "original": 1e-5}

    # An unknown level is refused before anything runs, naming what is accepted.
    bad = subprocess.run([*cmd[:2], "--levels", "5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--levels '5'" in bad.stderr and "1,2,3,4" in bad.stderr
