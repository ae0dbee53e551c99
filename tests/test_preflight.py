"""trl_grpo/observe/preflight.py: the verdict's advice names only flags that are not already on."""

import pytest

from trl_grpo.models.sampling import Sampling
from trl_grpo.observe import preflight


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
    plan = preflight.Plan(Sampling(48, 1.0, samples=4), 8, 2, 40, prompt_template=template, prefill_think=prefill)
    verdict, problems = preflight.verdict(_report(0.0), plan)
    assert verdict == "no_signal"
    assert all(a in problems[0] for a in advised) and not any(n in problems[0] for n in not_advised)


@pytest.mark.parametrize(
    "format_mean, advised", [(0.02, "--prompt_template worked_example"), (0.5, "--num_generations")]
)
def test_groups_mostly_without_signal_advise_the_prompt_when_the_format_is_rare(format_mean, advised):
    """One lucky completion in 32 turns no_signal into warn; the advice still names the prompt while the
    format is almost never written."""
    plan = preflight.Plan(Sampling(48, 1.0, samples=4), 8, 2, 40, prompt_template="original")
    verdict, problems = preflight.verdict({**_report(format_mean), "zero_variance_group_fraction": 0.875}, plan)
    assert verdict == "warn" and advised in problems[0]


@pytest.mark.parametrize("sft_steps, advised", [(0, True), (30, False)])
def test_no_signal_advice_names_the_cold_start_unless_it_runs(sft_steps, advised):
    plan = preflight.Plan(Sampling(48, 1.0, samples=4), 8, 2, 40, sft_steps=sft_steps, prompt_template="worked_example")
    verdict, problems = preflight.verdict(_report(1.0), plan)
    assert verdict == "no_signal" and ("--sft_steps" in problems[0]) == advised
    lines = preflight.summary_lines(
        {**_report(1.0), "verdict": verdict, "problems": problems, "prompts": 8, "completions": 32}
        | {"accuracy_mean": 0.0, "format_distribution": {}, "seconds_per_step": 1.0, "estimated_total_s": 60.0}
        | {"sampled_from": "the model after 30 cold-start steps"}
    )
    assert "4 completions from the model after 30 cold-start steps" in lines[0]


def test_the_preflight_samples_as_the_run_samples(tiny_model_dir):
    """Its plan carries every sampling knob the run uses, the group size, the seed and the run's length."""
    import train
    from trl_grpo.settings import resolve

    argv = ["--model_id", tiny_model_dir, "--top_p", "0.9", "--min_p", "0.05", "--num_generations", "4"]
    args, _ = resolve.parse("train", [*argv, "--max_steps", "7", "--temperature", "0.7", "--seed", "3"])
    plan = train.preflight_plan(args, train_rows=100, processes=1)
    want = Sampling(args.max_completion_length, 0.7, top_p=0.9, min_p=0.05, samples=4, seed=3)
    assert plan.sampling == want and plan.steps == 7 and plan.prompts == args.preflight_prompts
    assert plan.prompts_per_step == args.per_device_train_batch_size // 4


@pytest.mark.parametrize(
    "rounds, zero, advised",
    [
        (0, 0.62, "--dynamic_sampling 2"),
        (0, 0.8, "--dynamic_sampling 3"),
        (1, 0.8, "--dynamic_sampling 4"),
        (2, 0.6, None),
    ],
)
def test_groups_without_signal_advise_dynamic_sampling_and_enough_rounds(rounds, zero, advised):
    """62% without signal (the model after the cold start): 2 extra batches of prompts replace them."""
    plan = preflight.Plan(
        Sampling(48, 1.0, samples=4), 8, 4, 40, prompt_template="worked_example", dynamic_sampling=rounds
    )
    report = {**_report(1.0), "zero_variance_group_fraction": zero}
    if rounds:
        report["dynamic_sampling"] = preflight.dynamic_sampling_plan(zero, rounds)
    verdict, problems = preflight.verdict(report, plan)
    assert verdict == "warn" and "--num_generations" in problems[0]
    if advised:
        assert advised in problems[0]
    else:
        assert "--dynamic_sampling" not in problems[0] and report["dynamic_sampling"] == {
            "rounds": 2,
            "with_signal_after": 1.0,
        }
    if rounds:
        lines = preflight.summary_lines(
            {**report, "verdict": verdict, "problems": problems, "prompts": 8, "completions": 32}
            | {"accuracy_mean": 0.5, "format_distribution": {}, "seconds_per_step": 1.0, "estimated_total_s": 60.0}
        )
        assert any(line.startswith("  dynamic sampling: about") for line in lines)
