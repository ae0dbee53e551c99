"""eval.py --benchmark: each preset reads a local copy laid out as the hub lays it out (jsonl by split, a
configuration's folder, the hub's parquet shards), scores it, and one table follows; bad input is one line."""

import json

import datasets
import pytest

from trl_grpo.evaluation import benchmarks, pipeline
from trl_grpo.runs.cli import UsageError


def _copies(root):
    """Local copies as the hub lays these datasets out (the presets' columns, a few rows each)."""
    (root / "math500").mkdir()
    rows = [
        {"problem": f"What is {i} + {i}?", "solution": f"\\boxed{{{2 * i}}}", "answer": str(2 * i)} for i in range(4)
    ]
    (root / "math500" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "gsm8k" / "main").mkdir(parents=True)
    rows = [
        {"question": f"Tom has {i} pens and buys {i}. How many?", "answer": f"{i}+{i}\n#### {2 * i}"} for i in range(4)
    ]
    (root / "gsm8k" / "main" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "aime24" / "data").mkdir(parents=True)
    shard = str(root / "aime24" / "data" / "train-00000-of-00001.parquet")
    datasets.Dataset.from_list(
        [{"problem": f"Find {i} * 3.", "solution": "s", "answer": 3 * i} for i in range(4)]
    ).to_parquet(shard)
    (root / "aime25" / "data").mkdir(parents=True)
    rows = [{"problem": f"Find {i} + 7.", "answer": str(i + 7)} for i in range(4)]  # no solution column
    datasets.Dataset.from_list(rows).to_parquet(str(root / "aime25" / "data" / "train-00000-of-00001.parquet"))
    (root / "amc23").mkdir()
    rows = [{"id": i, "question": f"What is {i} - 1?", "answer": float(i - 1)} for i in range(1, 5)]
    (root / "amc23" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_each_preset_reads_a_local_copy_and_one_table_follows(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _copies(tmp_path)
    argv = ["--model_dir", tiny_run, "--limit", "2", "--max_completion_length", "4"]
    for name in benchmarks.PRESETS:  # every preset
        argv += ["--benchmark", f"{name}={tmp_path / name}"]
    assert pipeline.main(argv) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("benchmark  n") :]
    summaries = {}
    for name in benchmarks.PRESETS:
        line = next(row for row in table.splitlines() if row.startswith(name))
        summaries[name] = json.loads((tmp_path / line.split()[-1]).read_text())
        assert summaries[name]["n"] == 2 and summaries[name]["settings"]["max_completion_length"] == 4, name
        assert "math_verify_accuracy" in summaries[name]
    assert all(row.split()[-1].endswith(f"-{row.split()[0]}.summary.json") for row in table.splitlines()[1:] if row)
    gsm8k = summaries["gsm8k"]
    assert gsm8k["settings"]["dataset_id"].endswith("gsm8k") and gsm8k["split"] == "test"


def test_a_preset_says_where_the_hub_keeps_it():
    name, argv = benchmarks.argv_for("math500", ["--model_dir", "m", "--benchmark", "math500"], set(), many=False)
    assert name == "math500" and argv[:2] == ["--model_dir", "m"] and "--benchmark" not in argv
    assert argv[argv.index("--dataset_id") + 1] == "HuggingFaceH4/MATH-500"
    assert argv[argv.index("--max_completion_length") + 1] == "4096" and argv[argv.index("--split") + 1] == "test"
    _, argv = benchmarks.argv_for("gsm8k", [], {"max_completion_length"}, many=False)
    assert "--max_completion_length" not in argv and argv[argv.index("--dataset_config") + 1] == "main"


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--benchmark", "mmlu"], "--benchmark 'mmlu': expected one of math500, gsm8k, aime24, aime25, amc23"),
        (
            ["--benchmark", "gsm8k", "--dataset_id", "x"],
            "--benchmark sets the dataset and its columns; drop --dataset_id",
        ),
        (["--benchmark", "gsm8k", "--benchmark", "math500", "--output_file", "r.json"], "--output_file names one file"),
    ],
)
def test_bad_benchmark_input_is_one_line(argv, says):
    with pytest.raises(UsageError) as refused:
        pipeline._main(["--model_dir", "embedded", *argv])
    assert says in str(refused.value) and "\n" not in str(refused.value)
