"""Evaluation samples as training does (--top_p, --top_k, --min_p, --repetition_penalty), and --r1_sampling
is DeepSeek-R1's protocol in one switch: temperature 0.6, top-p 0.95, pass@1 over several samples."""

import json

import pytest

from trl_grpo.evaluation import pipeline
from trl_grpo.runs.cli import UsageError
from trl_grpo.settings import resolve


def test_r1_sampling_sets_the_protocol_and_a_contradiction_is_one_line():
    args, _ = resolve.parse("eval", ["--r1_sampling"])
    assert (args.temperature, args.top_p, args.num_samples) == (0.6, 0.95, 4)
    args, _ = resolve.parse("eval", ["--r1_sampling", "--num_samples", "8"])
    assert args.num_samples == 8
    assert resolve.parse("eval", [])[0].num_samples == 1
    with pytest.raises(UsageError, match="--r1_sampling sets temperature 0.6 and top-p 0.95; --temperature 0.7"):
        resolve.parse("eval", ["--r1_sampling", "--temperature", "0.7"])


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--top_p", "0"], "--top_p 0.0: must be in (0, 1]"),
        (["--top_k", "-1"], "--top_k -1: must be >= 0"),
        (["--min_p", "2"], "--min_p 2.0: must be in [0, 1]"),
        (["--repetition_penalty", "nan"], "--repetition_penalty nan: must be a positive number"),
    ],
)
def test_bad_sampling_values_are_one_line(argv, says):
    with pytest.raises(UsageError) as refused:
        resolve.parse("eval", argv)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.slow
def test_an_r1_evaluation_records_its_sampling_and_pass_at_1(tiny_run, tmp_path):
    result = tmp_path / "r1.json"
    argv = ["--model_dir", tiny_run, "--r1_sampling", "--limit", "3", "--max_completion_length", "4"]
    assert pipeline.main([*argv, "--top_k", "20", "--output_file", str(result)]) == 0
    summary = json.loads((tmp_path / "r1.summary.json").read_text())
    settings = summary["settings"]
    assert (settings["temperature"], settings["top_p"], settings["top_k"], settings["r1_sampling"]) == (
        0.6,
        0.95,
        20,
        True,
    )
    assert summary["num_samples"] == 4 and summary["pass@1"] == summary["accuracy"]
    assert "math_verify_accuracy" in summary and "math_verify_differs" in summary
    records = json.loads(result.read_text())
    assert all(len(r["rewards"]) == 4 for r in records)


def test_the_plain_math_verify_score_sits_beside_ours():
    """math-verify alone (lighteval's way) credits what this project's rules refuse ('12 is wrong')."""
    from trl_grpo.answers import equivalence
    from trl_grpo.observe import metrics

    assert equivalence.plain_math_verify("42", "<answer>\\boxed{42}</answer>") is True
    assert equivalence.plain_math_verify("12", "<answer>\\boxed{12 \\text{ is wrong}}</answer>") is True
    assert equivalence.answers_equal("12", "12 is wrong") is False
    row = {"problem": "What is 6 + 6?", "solution": "12", "answer": "12"}
    hedged = "<think>6+6</think><answer>\\boxed{12 \\text{ is wrong}}</answer>"
    outs = [hedged, "<think>x</think><answer>\\boxed{12}</answer>"]
    record = metrics.score("p", row, outs, [[1], [1]], [False, False])
    assert record["math_verify_rewards"] == [1.0, 1.0] and record["rewards"] == [0.0, 1.0]
    summary = metrics.summarize([record], 2)
    assert summary["math_verify_accuracy"] == 1.0 and summary["accuracy"] == 0.5 and summary["math_verify_differs"] == 1


def test_a_latex_gold_is_read_as_latex_by_the_plain_score():
    from trl_grpo.answers import equivalence

    assert equivalence.plain_math_verify("10\\sqrt{2}", "\\boxed{10}") is False
    assert equivalence.plain_math_verify("10\\sqrt{2}", "\\boxed{10\\sqrt{2}}") is True
    assert equivalence.plain_math_verify("\\dfrac{1}{2}", "so \\boxed{0.5}") is True


def test_a_recipes_temperature_yields_to_r1_sampling_typed_on_the_command_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("temperature: 0.7\ntop_p: 0.9\n")
    args, _ = resolve.parse("eval", ["--config", str(recipe), "--r1_sampling"])
    assert (args.temperature, args.top_p) == (0.6, 0.95)


def test_another_datasets_columns_are_not_the_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    trained = {"dataset_id": "org/a", "dataset_config": "main", "problem_column": "q", "answer_column": "gold"}
    (run / "run_config.json").write_text(json.dumps({"args": trained}))
    args, _ = resolve.parse("eval", ["--model_dir", str(run), "--dataset_id", "org/b"])
    assert (args.dataset_config, args.problem_column, args.answer_column) == (None, None, None)
    args, _ = resolve.parse("eval", ["--model_dir", str(run)])
    assert (args.dataset_id, args.dataset_config, args.problem_column) == ("org/a", "main", "q")
