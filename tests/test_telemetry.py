"""trl_grpo/observe/telemetry.py and preflight.py: contract telemetry, the completion log's bounds, the verdict."""

import json

import pytest

from trl_grpo.models.sampling import Sampling
from trl_grpo.observe import preflight
from trl_grpo.observe.telemetry import CompletionLog, contract_telemetry


@pytest.mark.parametrize(
    "completion,key",
    [
        ("<think>a long enough thought</think><answer>1</answer><answer>2</answer>", "several_blocks"),
        ("<think>so \\boxed{3} it is</think><answer>3</answer>", "box_outside_answer"),
        ("<think>ok</think><answer>\\boxed{3}</answer>", "short_think"),
        ("<think>a long enough thought</think><answer>\\boxed{3}</answer> and more", "text_after_answer"),
        ("<answer>\\boxed{3}</answer>", "answer_without_reasoning"),
    ],
)
def test_each_way_to_game_the_contract_is_counted(completion, key):
    clean = "<think>a long enough thought</think><answer>\\boxed{3}</answer>"
    got = contract_telemetry([completion, clean])
    assert got[key] == 0.5 and contract_telemetry([clean])[key] == 0.0


def test_a_prefilled_think_counts_and_lengths_are_reported():
    got = contract_telemetry(
        ["reasoning here</think><answer>1</answer>"], prompts=["...<think>"], truncated=[True], lengths=[48]
    )
    assert got["answer_without_reasoning"] == 0.0 and got["truncated"] == 1.0 and got["mean_length"] == 48


def test_the_completion_log_is_bounded_and_says_so(tmp_path, caplog):
    log = CompletionLog(str(tmp_path / "c.jsonl"), every=2, cap=5)
    rows = [{"prompt_index": i // 2, "prompt": f"p{i // 2}", "completion": "c", "rewards": {}} for i in range(4)]
    for step in (1, 2, 3):
        log.write(step, rows)
    lines = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 1, 1, 1, 3]  # step 2 skipped by every=2, step 3 cut by the cap
    assert [("prompt" in r) for r in lines] == [True, False, True, False, False]  # a prompt's text once
    assert log.stats() == {"lines": 5, "skipped_over_cap": 3, "every_n_steps": 2, "cap": 5}
    assert "reached its cap of 5 lines" in caplog.text


def _report(**over):
    base = {"zero_variance_group_fraction": 0.1, "truncated_fraction": 0.0, "unparseable_gold_fraction": 0.0}
    return base | {"format_reward_mean": 0.5, "dropped": {"prompt_too_long": 0}} | over


@pytest.mark.parametrize(
    "report,verdict,message",
    [
        (_report(), "ok", None),
        (
            _report(zero_variance_group_fraction=1.0, format_reward_mean=0.0),
            "no_signal",
            "--prompt_template worked_example",
        ),
        (_report(zero_variance_group_fraction=0.95), "no_signal", "raise --temperature"),
        (_report(zero_variance_group_fraction=0.6), "warn", "raise --num_generations"),
        (
            _report(truncated_fraction=0.92),
            "warn",
            "92% of completions hit the 64 token limit: raise --max_completion_length",
        ),
        (_report(unparseable_gold_fraction=0.5), "warn", "--solution_column"),
        (_report(dropped={"prompt_too_long": 3}), "warn", "raise it to keep them"),
    ],
)
def test_the_preflight_verdict_and_its_fixes(report, verdict, message):
    plan = preflight.Plan(Sampling(64, 1.0, samples=4), 8, 2, 40, max_prompt_length=512)
    got, problems = preflight.verdict(report, plan)
    assert got == verdict and (message is None) == (not problems)
    assert message is None or any(message in p for p in problems)
