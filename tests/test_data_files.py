"""Local dataset files: text never executed, bad files named with the fix, JSON columns, exact golds, pinned splits."""

import json

import pytest
from datasets import Dataset

from data_utils import load_and_process_data
from trl_grpo.answers.boxes import BOXED
from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START
from trl_grpo.answers.rewards import accuracy_reward
from trl_grpo.data import builtin, prepare
from trl_grpo.data.splits import DataError


def test_dataset_text_is_never_executed(tmp_path):
    rows = [
        {
            "problem": "__import__('os').system('touch PWNED')",
            "solution": "```python\nopen('PWNED2','w')\n```\\boxed{1}",
        }
    ]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "x"))
    train, _ = load_and_process_data(str(tmp_path / "x"), "train", None)
    assert train[0]["answer"] == "1"
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


# ---------------------------------------------------------------- bad files: named, with the fix
@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.jsonl", b"", "is empty"),
        ("header-only.csv", b"problem,solution\n", "has no rows"),
        ("empty-list.json", b"[]", "has no rows"),
        ("bad-line.jsonl", b'{"problem": "1+1", "answer": "2"}\n{"problem": oops}\n', "line 2: not valid JSON"),
        ("latin1.csv", "problem,answer\ncafé 1+1,2\n".encode("latin-1"), "is not UTF-8 (byte 0xe9 on line 2)"),
    ],
)
def test_bad_dataset_files_name_the_file_and_the_fix(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_and_process_data(str(path), "train", "test")
    assert message in str(err.value) and str(path) in str(err.value)


def test_rows_without_a_problem_are_dropped_and_unusable_golds_counted(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [
        {"problem": "1+1?", "answer": "2"},
        {"problem": None, "answer": "3"},
        {"problem": "  ", "answer": "4"},
        {"problem": "2+2?", "answer": "N/A"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    train, _ = load_and_process_data(str(path), "train", None)
    kept, counts = prepare.drop_unusable_rows(train)
    assert len(kept) == 2 and counts == {"empty_problem": 2, "unusable_gold": 1}


# The held-out problems every learning figure is measured on: extending the built-in data must
# never change them (sha256 of each level's test rows, first 16 hex digits).
TEST_SPLIT_HASHES = {1: "a768474ab95eb20b", 2: "cf534b746b23929e", 3: "5abfc0ede008b84d", 4: "1f09b6c8053a3ac8"}


@pytest.mark.parametrize("level", sorted(TEST_SPLIT_HASHES))
def test_each_levels_test_split_is_pinned(level):
    import hashlib

    for levels in ([level], [1, 2, 3, 4]):  # the same rows whichever levels are loaded with it
        rows = [r for r in builtin.builtin_records(levels)["test"] if r["level"] == level]
        digest = hashlib.sha256(json.dumps([(r["problem"], r["solution"], r["answer"]) for r in rows]).encode())
        assert len(rows) == 200 and digest.hexdigest()[:16] == TEST_SPLIT_HASHES[level]


# ---------------------------------------------------------------- data read as written
@pytest.mark.parametrize(
    "content",
    [
        {"problem": {"0": "1+1?", "1": "2+2?"}, "answer": {"0": 2, "1": 4}},  # pandas' default to_json()
        {"problem": ["1+1?", "2+2?"], "answer": [2, 4]},  # a dict of lists
    ],
)
def test_a_json_file_of_columns_is_read_as_its_rows(tmp_path, content):
    path = tmp_path / "cols.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    train, _ = load_and_process_data(str(path), "train", None)
    assert train["problem"] == ["1+1?", "2+2?"] and train["answer"] == ["2", "4"]


def test_a_json_file_of_columns_inside_a_folder_is_refused_by_name(tmp_path):
    (tmp_path / "ds").mkdir()
    path = tmp_path / "ds" / "train.json"
    path.write_text(json.dumps({"problem": ["1+1?"], "answer": [2]}), encoding="utf-8")
    with pytest.raises(DataError, match="train.json.*holds columns, not rows"):
        load_and_process_data(str(tmp_path / "ds"), "train", None)


@pytest.mark.parametrize(
    "gold,gold_text,right,wrong",
    [
        (1e-05, "0.00001", "0.00001", "0.0001"),  # JSON's 1e-05: written exactly, not "1e-05"
        (1e20, "100000000000000000000", "10^{20}", "10^{19}"),
        (2.5, "2.5", "\\frac{5}{2}", "2"),
        ([-1, 1], "-1, 1", "1, -1", "[-1, 1]"),  # a list is the parts of one answer, not an interval
        ([[1, 2], [3, 4]], "(1, 2), (3, 4)", "(3, 4), (1, 2)", "(1, 2)"),  # a list of tuples
    ],
)
def test_numeric_and_list_golds_are_read_exactly(tmp_path, gold, gold_text, right, wrong):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"problem": "p?", "answer": gold}) + "\n", encoding="utf-8")
    train, _ = load_and_process_data(str(path), "train", None)
    assert train[0]["answer"] == gold_text
    completions = [f"{THINK_START}w{THINK_END}{ANSWER_START}{BOXED}{{{a}}}{ANSWER_END}" for a in (right, wrong)]
    assert accuracy_reward(completions, [train[0]["solution"]] * 2, answer=[train[0]["answer"]] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("tail,want", [("#### 1,000", "1000"), ("#### (1, 2)", "(1, 2)"), ("#### 1,2", "1,2")])
def test_gsm8k_answers_keep_their_commas_except_thousands(tmp_path, tail, want):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q?", "answer": f"work\n{tail}"}) + "\n", encoding="utf-8")
    train, _ = load_and_process_data(str(path), "train", None)
    assert train[0]["answer"] == want
