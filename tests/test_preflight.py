"""preflight.py: the verdict's advice names only flags that are not already on."""

from types import SimpleNamespace

import pytest

import preflight


def _report(format_mean: float) -> dict:
    return {
        "zero_variance_group_fraction": 1.0,
        "format_reward_mean": format_mean,
        "truncated_fraction": 0.0,
        "unparseable_gold_fraction": 0.0,
        "dropped": {},
    }


@pytest.mark.parametrize(
    "template,prefill,advised,not_advised",
    [
        ("original", False, ["--prompt_template worked_example", "--prefill_think"], []),
        ("original", True, ["--prompt_template worked_example"], ["--prefill_think"]),
        ("worked_example", False, ["--prefill_think"], ["--prompt_template"]),
        ("worked_example", True, ["--temperature", "--num_generations"], ["--prompt_template", "--prefill_think"]),
    ],
)
def test_no_signal_advice_names_only_flags_not_already_on(template, prefill, advised, not_advised):
    args = SimpleNamespace(prompt_template=template, prefill_think=prefill, max_completion_length=48)
    verdict, problems = preflight.verdict(_report(0.0), args)
    assert verdict == "no_signal"
    assert all(a in problems[0] for a in advised) and not any(n in problems[0] for n in not_advised)


@pytest.mark.parametrize("sft_steps, advised", [(0, True), (30, False)])
def test_no_signal_advice_names_the_cold_start_unless_it_runs(sft_steps, advised):
    args = SimpleNamespace(prompt_template="worked_example", prefill_think=True, max_completion_length=48)
    args.sft_steps = sft_steps
    verdict, problems = preflight.verdict(_report(1.0), args)
    assert verdict == "no_signal" and ("--sft_steps" in problems[0]) == advised
    lines = preflight.summary_lines(
        {**_report(1.0), "verdict": verdict, "problems": problems, "prompts": 8, "completions": 32}
        | {"accuracy_mean": 0.0, "format_distribution": {}, "seconds_per_step": 1.0, "estimated_total_s": 60.0}
        | {"sampled_from": "the model after 30 cold-start steps"}
    )
    assert "4 completions from the model after 30 cold-start steps" in lines[0]
