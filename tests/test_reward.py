"""reward.py: the scoring rules, table-driven, plus the contract, time bound and real model output."""

import concurrent.futures
import json
import os
import pickle
import threading
import time

import pytest

from trl_grpo.answers import boxes, contract, equivalence, registry, rewards, selftest
from trl_grpo.answers.boxes import extract_boxed
from trl_grpo.answers.contract import extract_answer
from trl_grpo.answers.equivalence import answers_equal
from trl_grpo.answers.rewards import accuracy_reward, format_reward

# 50 real Qwen2.5-3B completions of the original project, on NuminaMath-TIR's test split (tests/data/README.md)
SEED_DATA = os.path.join(os.path.dirname(__file__), "data", "seed_eval_qwen2.5-3b_numinamath_test50.json")
OK = "<think>reasoning</think><answer>{}</answer>"


def _selftest_cases():
    with open(selftest.SELFTEST_FILE, encoding="utf-8") as f:
        cases = json.load(f)
    return [
        (section, kind, case)
        for section in ("original", "ours")
        for kind, rows in cases[section].items()
        for case in rows
    ]


@pytest.mark.parametrize("section,kind,case", _selftest_cases())
def test_every_self_test_case(section, kind, case):
    """The original's cases verbatim and ours: reward.py returns the recorded value, and every
    difference from the original's value has a stated reason."""
    assert selftest._SELFTEST_FUNCS[kind](case) == case["ours"]
    if section == "original" and case["ours"] != case["original"]:
        assert case.get("why"), f"{case['input'][:60]!r}: differs from the original without a reason"


def test_the_original_self_test_is_all_there():
    with open(os.path.join(os.path.dirname(__file__), "data", "original_selftest_cases.json"), encoding="utf-8") as f:
        reference = json.load(f)  # what the original's self-test prints (tests/data/README.md)
    with open(selftest.SELFTEST_FILE, encoding="utf-8") as f:
        ours = json.load(f)["original"]
    for kind, cases in reference.items():
        assert [{k: c[k] for k in ("input", "original", "solution") if k in c} for c in ours[kind]] == cases


def test_the_value_table_pins_units_and_hedges():
    """At least 40 labelled cases of what accuracy credits: units that must pass (1.0), hedges that must
    fail (0.0), each with its reason; the self-test and the parametrized test above run them."""
    with open(selftest.SELFTEST_FILE, encoding="utf-8") as f:
        cases = json.load(f)["ours"]["value"]
    assert len(cases) >= 40 and all(c["why"] for c in cases)
    by_label = {label: [c["ours"] for c in cases if c["label"] == label] for label in ("unit", "value", "hedge")}
    assert len(by_label["unit"]) >= 15 and len(by_label["hedge"]) >= 20
    assert set(by_label["unit"] + by_label["value"]) == {1.0} and set(by_label["hedge"]) == {0.0}


def test_the_self_test_fails_when_a_value_changes(tmp_path, monkeypatch):
    with open(selftest.SELFTEST_FILE, encoding="utf-8") as f:
        cases = json.load(f)
    cases["ours"]["format_reward"][0]["ours"] = 0.5  # a rule change would show like this
    changed = tmp_path / "selftest.json"
    changed.write_text(json.dumps(cases), encoding="utf-8")
    monkeypatch.setattr(selftest, "SELFTEST_FILE", str(changed))
    assert selftest.self_test() == 1


@pytest.mark.parametrize(
    "text,want",
    [
        ("\\boxed{\\left(1,\\frac12\\right)}", "\\left(1,\\frac12\\right)"),  # nested braces kept whole
        ("\\boxed{a}\\fbox{b}", "b"),  # the last box of either kind
        ("\\fbox{b} then \\boxed{a}", "a"),
        ("\\boxed{1} \\boxed{2", None),  # last box unbalanced: no answer rather than an earlier one
        ("", None),
        (None, None),
        ("\\boxed{\\}}", "\\}"),  # escaped closing brace does not close the box
    ],
)
def test_extract_boxed_edges(text, want):
    assert extract_boxed(text) == want


@pytest.mark.parametrize(
    "text,want",
    [
        ("  \n<think>a</think>\n<answer>\\boxed{1}</answer>\n", 1.0),  # whitespace around blocks is fine
        ("Sure! <think>a</think><answer>\\boxed{1}</answer>", 0.0),  # no text before <think>
        ("<think>a</think> so <answer>\\boxed{1}</answer>", 0.0),  # no text between blocks
        ("<think>a</think><answer>\\boxed{1}</answer><|endoftext|>", 1.0),  # EOS marker after answer
        ("<think>a</think><answer>\\boxed{1}</answer></s> ", 1.0),
        ("<think>a</think><answer>\\boxed{1}</answer>\\boxed{2}", 0.0),  # trailing box after answer
        ("<think>a</think><think>b</think><answer>\\boxed{1}</answer>", 0.0),  # two think blocks
        ("<think>a<think>b</think></think><answer>\\boxed{1}</answer>", 0.0),  # nested tags
        ("<think>a</think><answer><answer>\\boxed{1}</answer></answer>", 0.0),
        ("<think> </think><answer>\\boxed{1}</answer>", 0.0),  # empty think: no reasoning, no pair
        ("<think>a</think><answer> </answer>", 0.0),  # empty answer
        ("<think>a</think><answer>\\boxed{}</answer>", 0.5),  # empty box counts as no box
        ("<think>a</think><answer>\\boxed 5</answer>", 0.5),  # \boxed without braces is not a box
        ("<think>a</think><answer>\\fbox{5}</answer>", 1.0),
        ("<think>a\r\nb</think>\r\n<answer>\\boxed{5}</answer>\r\n", 1.0),  # Windows newlines
        ("<think>\\boxed{5}</think><answer>5</answer>", 0.5),  # a box in think does not count
        ("", 0.0),
        ("   ", 0.0),
    ],
)
def test_format_hacking_cases(text, want):
    assert format_reward([text]) == [want]


@pytest.mark.parametrize(
    "completion,prompt,flag,want",
    [
        (
            "a</think><answer>\\boxed{1}</answer>",
            "...<|im_start|>assistant\n<think>",
            None,
            1.0,
        ),  # detected from prompt
        ("a</think><answer>\\boxed{1}</answer>", "...<|im_start|>assistant\n", None, 0.0),  # not prefilled
        ("a</think><answer>\\boxed{1}</answer>", None, True, 1.0),  # forced on
        ("<think>a</think><answer>\\boxed{1}</answer>", "x<think>", None, 0.0),  # prefilled, then a second <think>
        ("<think>a</think><answer>\\boxed{1}</answer>", "x<think>", False, 1.0),  # forced off
    ],
)
def test_format_prefilled_think(completion, prompt, flag, want):
    prompts = None if prompt is None else [prompt]
    assert format_reward([completion], prompts=prompts, think_prefilled=flag) == [want]


@pytest.mark.parametrize(
    "gold,pred,want",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac12", "0.5", True),
        ("\\dfrac12", "\\frac{1}{2}", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\{1,2\\}", "\\{2,1\\}", True),  # sets in any order
        ("(0,1)", "[0,1)", False),  # open vs half-open interval
        ("[0,1)", "[0,1)", True),
        ("\\text{red}", "red", True),
        ("\\text{red}", "Red", True),  # case-insensitive text
        ("\\text{yes}", "\\text{no}", False),
        ("12", "12\\text{ cm}", True),  # decided: a unit after the number is dropped (values.UNITS)
        ("12", "12\\text{ sides}", False),  # "sides" is no unit... unless the problem names it (self-test table)
        ("18", "18 yuan", True),
        ("2", "2x", False),  # but a variable is not a unit
        ("50\\%", "50", True),  # decided with math-verify: percent equals its number...
        ("50\\%", "0.5", True),  # ...and its fraction
        ("1000", "1,000", True),
        ("42", "43", False),
        ("-1", "-1", True),
        ("12345678901", "12345678902", False),  # big integers compared exactly
        ("x=3", "3", True),
        ("\\frac{-12}{5}", "-\\frac{12}{5}", True),
        ("\\lambda < 0", "\\lambda<0", True),
    ],
)
def test_equivalences(gold, pred, want):
    assert answers_equal(gold, pred) is want


@pytest.mark.parametrize(
    "completion,want",
    [
        ("<think>a</think><answer>\\boxed{5}</answer>", "5"),
        ("<think>a</think><answer>so 5</answer>", "so 5"),  # no box: the block's text
        ("<think>a</think><answer>\\boxed{4} then \\boxed{5}</answer>", "4, 5"),  # two boxes: one answer in two parts
        ("<think>a</think><answer>\\boxed{5} so \\boxed{5}</answer>", "5"),  # a repeated box counts once
        ("<think><answer>9</answer></think><answer>5</answer>", "5"),  # answers inside think ignored
        ("<think><answer>9</answer></think>no answer block", None),
        ("<think>a</think><answer>5</answer> </answer>", "5"),  # stray closing tag ignored
        ("<think>a</think><answer>4</answer><answer>5</answer>", "5"),  # last complete block
        ("<think>a</think><answer>5", None),  # unclosed
        ("\\boxed{5}", None),  # a box with no answer block earns nothing
    ],
)
def test_extract_answer(completion, want):
    assert extract_answer(completion) == want


def test_accuracy_uses_answer_column_and_skips_bad_gold():
    comps = [OK.format("\\boxed{7}")] * 4
    sols = ["work \\boxed{7}", "no box at all", "", "work \\boxed{8}"]
    answers = ["", "", "", "7"]  # the answer column wins over the solution's box
    assert accuracy_reward(comps, sols, answer=answers) == [1.0, None, None, 1.0]


def test_unusable_gold_is_never_rewarded():
    assert accuracy_reward([OK.format("\\boxed{}")], ["\\boxed{}"]) == [None]
    assert accuracy_reward([OK.format("anything")], ["\\boxed{5"]) == [None]


# ---------------------------------------------------------------- TRL's reward contract
CONVERSATIONAL = [
    [{"role": "assistant", "content": OK.format("\\boxed{3}")}],
    [{"role": "assistant", "content": "junk"}],
]


@pytest.mark.parametrize("func", [format_reward, accuracy_reward])
def test_contract(func):
    out = func(
        CONVERSATIONAL,
        solution=["\\boxed{3}", "\\boxed{3}"],
        prompts=["p", "p"],
        trainer_state=None,
        log_extra=None,
        extra_column=[1, 2],
    )
    assert len(out) == 2
    assert all(v is None or isinstance(v, float) for v in out)
    assert out[1] == 0.0
    assert pickle.loads(pickle.dumps(func)) is func


def test_string_and_conversational_shapes_agree():
    text = OK.format("\\boxed{3}")
    assert (
        accuracy_reward([text], ["\\boxed{3}"])
        == accuracy_reward([[{"role": "assistant", "content": text}]], ["\\boxed{3}"])
        == [1.0]
    )


def test_none_and_empty_completions():
    assert format_reward([None, "", [{"role": "assistant", "content": None}]]) == [0.0, 0.0, 0.0]
    assert accuracy_reward([None, ""], ["\\boxed{1}"] * 2) == [0.0, 0.0]


def test_registry_and_guard():
    funcs = registry.get_reward_funcs("format,accuracy")
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward"]
    assert pickle.loads(pickle.dumps(funcs[0]))([OK.format("\\boxed{1}")]) == [1.0]
    with pytest.raises(ValueError, match="Unknown reward 'acc'.*accuracy"):
        registry.get_reward_funcs("format,acc")


def _explodes_on_b(completions, **kwargs):
    if any(c == "b" for c in completions):
        raise RuntimeError("boom")
    return [1.0] * len(completions)


def test_guard_isolates_a_raising_sample():
    guarded = rewards.GuardedReward(_explodes_on_b)
    assert guarded(["a", "b", "c"], solution=["x", "y", "z"]) == [1.0, None, 1.0]


# ---------------------------------------------------------------- the hard time bound
RUNAWAY = [
    "9^{9^{9^9}}",
    "\\dfrac{5^{(5^{(5^{(5^5)})}-4)}-5}{16}",
    "100000!",
    "9" * 10000,
]


@pytest.fixture()
def short_bound():
    old = equivalence._VERIFY_TIMEOUT_S
    equivalence.set_verify_timeout(2.0)
    yield 2.0
    equivalence.set_verify_timeout(old)


def _score_runaway(pred: str) -> tuple[float, float]:
    equivalence.set_verify_timeout(2.0)
    start = time.time()
    got = accuracy_reward([OK.format("\\boxed{" + pred + "}")], ["\\boxed{7^{7^{7}} + 1}"])[0]
    return got, time.time() - start


@pytest.mark.parametrize("pred", RUNAWAY)
def test_runaway_is_bounded_in_main_thread(pred, short_bound):
    got, took = _score_runaway(pred)
    assert got == 0.0
    assert took < short_bound + 3  # the bound plus a helper restart


def test_runaway_is_bounded_in_a_thread(short_bound):
    result = {}
    t = threading.Thread(target=lambda: result.update(zip(("got", "took"), _score_runaway(RUNAWAY[1]), strict=True)))
    t.start()
    t.join(60)
    assert result["got"] == 0.0 and result["took"] < short_bound + 3


def test_runaway_is_bounded_in_a_process_pool_worker():
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        got, took = pool.submit(_score_runaway, RUNAWAY[0]).result(timeout=120)
    assert got == 0.0 and took < 2.0 + 10  # includes the worker's first helper start


def test_helper_recovers_after_a_kill(short_bound):
    _score_runaway(RUNAWAY[0])
    assert accuracy_reward([OK.format("\\boxed{\\frac{1}{2}}")], ["\\boxed{0.5}"]) == [1.0]


def test_megabyte_completion_scores_zero_fast():
    huge = "<think>" + "x" * 1_000_000 + "</think><answer>" + "1+" * 300_000 + "1</answer>"
    start = time.time()
    assert accuracy_reward([huge], ["\\boxed{2}"]) == [0.0]
    assert format_reward([huge]) == [0.5]
    assert time.time() - start < 5


@pytest.mark.parametrize(
    "answer",
    [
        "".join(f"\\boxed{{{i}}}" for i in range(100_000)),  # 100,000 distinct boxes (~1 MB): was ~100 s
        "\\boxed{1}" * 100_000,  # the same box 100,000 times
        "\\boxed{1} " + "\\fbox{" * 50_000,  # boxes that never close
    ],
)
def test_an_answer_of_many_boxes_is_read_in_linear_time(answer):
    """Box scanning and part joining are linear, so the time bound is not spent before a check starts."""
    start = time.time()
    got = accuracy_reward([OK.format(answer)], ["\\boxed{2}"])
    assert got == [0.0] and time.time() - start < 10


def test_a_batch_of_runaway_items_costs_about_one_call_bound(short_bound):
    """Checks run on parallel helpers and the call stops waiting after CALL_BOUNDS bounds:
    8 runaway items once took 8 x (bound + restart), ~19 s at a 2 s bound."""
    comps = [OK.format("\\boxed{9^{9^{9^{" + str(9 + i) + "}}}}") for i in range(8)]
    start = time.time()
    assert accuracy_reward(comps, ["\\boxed{\\frac{3}{7}}"] * 8) == [0.0] * 8
    assert time.time() - start < equivalence.CALL_BOUNDS * short_bound + 6  # plus helper start-ups


def test_a_timed_out_check_is_not_cached_as_a_verdict():
    pair = ("\\frac{3}{7}", "\\frac{6}{14}")
    equivalence._CACHE.pop(pair, None)
    assert equivalence.answers_equal(*pair, timeout_s=1e-4) is False  # no verdict in time: 0.0 now
    assert pair not in equivalence._CACHE
    assert equivalence.answers_equal(*pair) is True  # the default bound decides it


def test_unclosed_answer_tags_are_linear():
    huge = "<think>x</think>" + "<answer>1" * 120_000  # ~1 MB, no </answer>: was quadratic (22-32 s)
    start = time.time()
    assert contract.extract_answer(huge) is None and accuracy_reward([huge], ["\\boxed{1}"]) == [0.0]
    assert contract.extract_answer("<answer>1</answer>" + "<answer>2" * 100_000) == "1"
    assert time.time() - start < 5


@pytest.mark.parametrize(
    "gold",
    [
        "N/A",
        "none",
        "\\boxed{N/A}",
        "\\boxed{ none }",
        "See solution above.",
        "\\text{see the solution}",
        "",
        "The answer is given in the worked solution",
    ],
)
def test_placeholder_golds_are_skipped_even_when_copied(gold):
    copied = OK.format("\\boxed{" + (boxes.extract_boxed(gold) or gold) + "}")
    assert accuracy_reward([copied], [gold]) == [None]
    assert accuracy_reward([copied], [""], answer=[gold]) == [None]


@pytest.mark.parametrize(
    "gold,pred",
    [("\\text{odd}", "odd"), ("red", "\\text{Red}"), ("E", "E"), ("\\text{No solution}", "\\text{no solution}")],
)
def test_short_text_golds_still_compare(gold, pred):
    assert accuracy_reward([OK.format("\\boxed{" + pred + "}")], ["\\boxed{" + gold + "}"]) == [1.0]


@pytest.mark.parametrize("completions", [None, 5, "not a list"])
def test_the_guarded_reward_never_raises(completions):
    for func in registry.get_reward_funcs("format,accuracy"):
        assert isinstance(func(completions, solution=None, prompts=None), list)
