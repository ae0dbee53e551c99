"""data_utils.py: the built-in dataset, every local layout, split logic, length filter, errors."""

import json
import os

import pytest
from datasets import Dataset, DatasetDict

import builtin_data
import data_utils
import splits
from data_utils import DataError, load_and_process_data
from reward import ANSWER_END, ANSWER_START, BOXED, THINK_END, THINK_START, accuracy_reward

NUMINA_ROWS = [
    {
        "problem": f"What is {i} + 1?",
        "solution": f"Add one: {i} + 1 = {i + 1}. So \\(\\boxed{{{i + 1}}}\\).",
        "messages": [],
    }
    for i in range(20)
]
GSM8K_ROWS = [
    {
        "question": f"Tom has {i} apples and gets 1,000 more. How many?",
        "answer": f"{i} + 1000 = {i + 1000}\n#### {i + 1000:,}",
    }
    for i in range(10)
]
DEEPMATH_ROWS = [{"question": f"Compute {i}^2.", "final_answer": str(i * i), "r1_solution_1": "..."} for i in range(10)]


# ---------------------------------------------------------------- built-in dataset
def test_builtin_sizes_levels_and_determinism():
    a = builtin_data.builtin_records()
    b = builtin_data.builtin_records()
    assert a == b  # same seed, same data, every run
    n_levels = len(builtin_data.BUILTIN_LEVELS)
    assert len(a["train"]) == n_levels * builtin_data.BUILTIN_TRAIN_PER_LEVEL
    assert len(a["test"]) == n_levels * builtin_data.BUILTIN_TEST_PER_LEVEL
    assert {r["level"] for r in a["test"]} == set(builtin_data.BUILTIN_LEVELS)
    assert builtin_data.builtin_records([1], seed=1) != builtin_data.builtin_records([1])


def test_builtin_splits_never_overlap():
    d = builtin_data.builtin_records()
    assert not {r["problem"] for r in d["train"]} & {r["problem"] for r in d["test"]}
    assert len({r["problem"] for r in d["train"]}) == len(d["train"])  # no duplicates either


def test_builtin_schema_matches_numinamath():
    row = builtin_data.builtin_records([3])["test"][0]
    assert set(row) >= {"problem", "solution", "messages"}
    assert row["messages"][0] == {"role": "user", "content": row["problem"]}
    assert row["solution"].rstrip(".").endswith(f"{BOXED}{{{row['answer']}}}")


def test_every_builtin_gold_scores_one():
    d = builtin_data.builtin_records()
    rows = d["train"] + d["test"]
    completions = [f"{THINK_START}w{THINK_END}{ANSWER_START}{BOXED}{{{r['answer']}}}{ANSWER_END}" for r in rows]
    # through the solution's box (answer column absent) and through the answer column
    assert accuracy_reward(completions, [r["solution"] for r in rows]) == [1.0] * len(rows)
    assert accuracy_reward(completions, [r["solution"] for r in rows], answer=[r["answer"] for r in rows]) == [
        1.0
    ] * len(rows)


@pytest.mark.parametrize(
    "dataset_id,levels",
    [
        ("builtin", [1, 2, 3, 4]),
        ("builtin:2", [2]),
        ("builtin:1-3", [1, 2, 3]),
        ("builtin:1,4", [1, 4]),
        ("builtin:1-2,3-4@0.25", [1, 2, 3, 4]),
    ],
)
def test_builtin_level_ids(dataset_id, levels):
    assert list(data_utils.parse_builtin_spec(dataset_id)) == levels


@pytest.mark.parametrize(
    "bad", ["builtin:9", "builtin:a", "builtin:0-1", "builtin:,", "builtin:3@0", "builtin:3@1.5", "builtin:3@x"]
)
def test_bad_builtin_ids(bad):
    with pytest.raises(ValueError, match="builtin:1-2.*'@SHARE' \\(0 < SHARE <= 1\\)"):
        data_utils.parse_builtin_spec(bad)


def test_a_share_thins_only_the_train_rows_of_its_levels():
    train = data_utils._load_all_splits("builtin:1,3@0.25")["train"]
    whole = builtin_data.builtin_records([1, 3])
    thinned = builtin_data.builtin_records([1, 3], shares=builtin_data.parse_builtin_spec("builtin:1,3@0.25"))
    assert thinned["test"] == whole["test"]  # the measured problems never change
    level3 = [r for r in whole["train"] if r["level"] == 3]
    assert [r for r in thinned["train"] if r["level"] == 1] == [r for r in whole["train"] if r["level"] == 1]
    assert [r for r in thinned["train"] if r["level"] == 3] == level3[:500]  # the first quarter drawn
    assert len(train) == 2500 and train[2000]["problem"] == level3[0]["problem"]


def test_default_load_works_offline_with_the_schema():
    train, test = load_and_process_data()
    assert sorted(train.column_names) == ["answer", "problem", "prompt", "solution"]
    prompt = test[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[0]["content"] == data_utils.PROMPT_TEMPLATES[data_utils.DEFAULT_PROMPT_TEMPLATE]


# ---------------------------------------------------------------- prompts
def test_system_prompt_is_built_from_the_reward_tags():
    for text in data_utils.PROMPT_TEMPLATES.values():
        for tag in (THINK_START, THINK_END, ANSWER_START, ANSWER_END, BOXED):
            assert tag in text


def test_the_original_prompt_is_the_originals_byte_for_byte():
    with open(os.path.join(os.path.dirname(__file__), "data", "original_system_prompt.json"), encoding="utf-8") as f:
        reference = json.load(f)["system_prompt"]  # as the original evaluates it (tests/data/README.md)
    assert data_utils.system_prompt("original") == reference == data_utils.SYSTEM_PROMPT


class FakeTokenizer:
    """Chat template = concatenated contents; one token per whitespace-separated word."""

    def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in conversation) + (" ASSISTANT:" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_render_prompt_prefills_think():
    conv = [{"role": "user", "content": "hi"}]
    assert data_utils.render_prompt(FakeTokenizer(), conv, True).endswith(f"ASSISTANT:{THINK_START}")
    assert data_utils.render_prompt(FakeTokenizer(), conv, False).endswith("ASSISTANT:")


# ---------------------------------------------------------------- local layouts
def _numina_folder(root, fmt):
    folder = root / "NuminaMath-TIR"
    (folder / "data").mkdir(parents=True)
    for split, rows in (("train", NUMINA_ROWS[:16]), ("test", NUMINA_ROWS[16:])):
        ds = Dataset.from_list(rows)
        path = folder / "data" / f"{split}-00000-of-00001.{fmt}"
        {"parquet": ds.to_parquet, "jsonl": ds.to_json, "csv": ds.to_csv}[fmt](str(path))
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_numinamath_shaped_folder_with_the_originals_splits(tmp_path, fmt):
    folder = _numina_folder(tmp_path, fmt)
    train, test = load_and_process_data(str(folder), "train[:50%]", "test[:50%]")
    assert (len(train), len(test)) == (8, 2)
    assert train[0]["answer"] == "1"
    assert test[0]["prompt"][1]["content"] == "What is 16 + 1?"


def test_save_to_disk_folder(tmp_path):
    DatasetDict(
        {"train": Dataset.from_list(NUMINA_ROWS[:10]), "test": Dataset.from_list(NUMINA_ROWS[10:])}
    ).save_to_disk(str(tmp_path / "dd"))
    train, test = load_and_process_data(str(tmp_path / "dd"))
    assert (len(train), len(test)) == (10, 10)


def test_single_dataset_save_to_disk_carves_a_test_split(tmp_path):
    Dataset.from_list(NUMINA_ROWS).save_to_disk(str(tmp_path / "one"))
    train, test = load_and_process_data(str(tmp_path / "one"), test_fraction=0.25)
    assert len(train) + len(test) == 20 and 1 <= len(test) <= 10
    assert not set(train["problem"]) & set(test["problem"])  # disjoint
    again_train, again_test = load_and_process_data(str(tmp_path / "one"), test_fraction=0.25)
    assert again_test["solution"] == test["solution"]  # deterministic


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_the_carve_is_by_problem_text_not_position(tmp_path):
    """A shuffled copy with repeats holds out the same problems; a problem written twice lands on one side."""
    rows = NUMINA_ROWS * 2
    first = _jsonl(tmp_path / "a.jsonl", rows)
    shuffled = _jsonl(tmp_path / "b.jsonl", rows[::-1][3:] + rows[::-1][:3])
    _, test_a, record_a = data_utils.load_splits(first, None, "test")
    _, test_b, record_b = data_utils.load_splits(shuffled, None, "test")
    assert sorted(test_a["problem"]) == sorted(test_b["problem"]) and len(test_a) % 2 == 0
    assert record_a["problems_sha256"] == record_b["problems_sha256"] and record_a["source"] == "carved from train"
    assert record_a["rows"] == len(test_a) and record_a["rule"] and record_a["fraction"] == 0.1


def test_training_never_sees_the_carved_test_rows(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", NUMINA_ROWS)
    train, _, record = data_utils.load_splits(path, "train", "test", roles=("train",))
    _, test, _ = data_utils.load_splits(path, None, "test")
    assert not set(train["problem"]) & set(test["problem"]) and len(train) + len(test) == len(NUMINA_ROWS)
    assert record["problems_sha256"] == splits.problems_digest(test["problem"])
    # a slice of the training rows is a slice of what is left after the carve
    sliced, _, _ = data_utils.load_splits(path, "train[:5]", "test", roles=("train",))
    assert sliced["problem"] == train["problem"][:5]


def test_outside_a_run_the_train_split_is_every_row(tmp_path):
    """eval.py --split train of a one-file dataset, outside any run: all its rows (nothing is held out)."""
    path = _jsonl(tmp_path / "d.jsonl", NUMINA_ROWS)
    _, rows, record = data_utils.load_splits(path, None, "train")
    assert len(rows) == len(NUMINA_ROWS) and record["source"] == "the dataset's split"


@pytest.mark.parametrize(
    "train_split,test_split,refused",
    [
        ("train", "train[90%:]", True),  # every test row is a training row
        ("train[:60%]", "train[50%:]", True),  # slices that share rows
        ("train[:80%]", "train[80%:]", False),  # disjoint slices
        ("train", "test", False),  # carved: disjoint by construction
    ],
)
def test_a_test_split_overlapping_the_train_split_is_refused(tmp_path, train_split, test_split, refused):
    path = _jsonl(tmp_path / "d.jsonl", NUMINA_ROWS)
    if refused:
        with pytest.raises(DataError, match="overlaps --train_split"):
            data_utils.load_splits(path, train_split, test_split)
    else:
        train, test, _ = data_utils.load_splits(path, train_split, test_split)
        assert not set(train["problem"]) & set(test["problem"])


def test_problems_seen_in_training_are_counted_and_left_out(tmp_path, tiny_model_dir):
    import model_utils

    folder = tmp_path / "dd"
    DatasetDict(
        {"train": Dataset.from_list(NUMINA_ROWS[:12]), "test": Dataset.from_list(NUMINA_ROWS[8:])}
    ).save_to_disk(str(folder))  # 4 test problems also in train
    known = data_utils.training_problems(str(folder), "train", "test")
    rows, dropped, _ = data_utils.prompt_rows(
        model_utils.load_tokenizer(tiny_model_dir), str(folder), "test", "eval", exclude=known
    )
    assert dropped["contaminated"] == 4 and len(rows) == 8
    assert not {splits.normalise_problem(p) for p in rows["problem"]} & known
    assert rows["problem_id"] == list(range(4, 12))  # each row keeps its place in the split


def test_gsm8k_jsonl_file(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GSM8K_ROWS))
    train, test = load_and_process_data(str(path), "train", "test", test_fraction=0.2)
    row = (train.to_list() + test.to_list())[0]
    assert row["answer"].isdigit() and int(row["answer"]) >= 1000  # "#### 1,000" -> "1000"
    assert "####" not in row["solution"] and row["solution"].endswith(f"{BOXED}{{{row['answer']}}}")
    completion = f"{THINK_START}w{THINK_END}{ANSWER_START}{BOXED}{{{row['answer']}}}{ANSWER_END}"
    assert accuracy_reward([completion], [row["solution"]], answer=[row["answer"]]) == [1.0]


def test_deepmath_csv_file(tmp_path):
    path = tmp_path / "deepmath.csv"
    Dataset.from_list(DEEPMATH_ROWS).to_csv(str(path))
    train, _ = load_and_process_data(str(path), "train", None)
    assert train[3]["answer"] == "9" and train[3]["solution"].endswith(f"{BOXED}{{9}}")


def test_column_flags_override_detection(tmp_path):
    rows = [{"q": "1+1?", "gold": "2", "problem": "decoy"}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "c"))
    train, _ = load_and_process_data(str(tmp_path / "c"), "train", None, problem_column="q", answer_column="gold")
    assert train[0]["prompt"][1]["content"] == "1+1?" and train[0]["answer"] == "2"


# ---------------------------------------------------------------- split expressions
@pytest.mark.parametrize(
    "expr,n",
    [("train", 20), ("train[:5]", 5), ("train[:25%]", 5), ("train[10:]", 10), ("train[-4:]", 4), ("train[5:7]", 2)],
)
def test_split_expressions(tmp_path, expr, n):
    Dataset.from_list(NUMINA_ROWS).save_to_disk(str(tmp_path / "s"))
    train, _ = load_and_process_data(str(tmp_path / "s"), expr, None)
    assert len(train) == n


# ---------------------------------------------------------------- length filter
def test_length_filter_drops_and_counts(caplog):
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": " ".join(["w"] * n)}]} for n in (2, 5, 50)])
    kept, dropped = data_utils.filter_by_prompt_length(ds, FakeTokenizer(), 10)
    assert len(kept) == 2 and dropped == 1
    assert "Dropped 1 of 3 prompts" in caplog.text
    assert len(data_utils.filter_by_prompt_length(ds, FakeTokenizer(), 0)[0]) == 3  # 0 keeps all


def test_length_filter_fails_when_nothing_remains():
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": "a b c d e f"}]}])
    with pytest.raises(DataError, match="Raise --max_prompt_length"):
        data_utils.filter_by_prompt_length(ds, FakeTokenizer(), 3)


# ---------------------------------------------------------------- bad input
def test_missing_column_names_the_columns_and_the_flag(tmp_path):
    Dataset.from_list([{"text": "x", "label": 1}] * 5).save_to_disk(str(tmp_path / "m"))
    with pytest.raises(DataError, match=r"columns are \['text', 'label'\].*--problem_column"):
        load_and_process_data(str(tmp_path / "m"))


def test_wrong_column_flag(tmp_path):
    Dataset.from_list(NUMINA_ROWS).save_to_disk(str(tmp_path / "w"))
    with pytest.raises(DataError, match="'question' given by --problem_column"):
        load_and_process_data(str(tmp_path / "w"), problem_column="question")


@pytest.mark.parametrize("expr", ["train[:5%", "train[abc]", "", "train[1:2:3]"])
def test_bad_split_expression(expr):
    with pytest.raises(DataError, match="split expression"):
        load_and_process_data("builtin:1", expr, None)


def test_split_the_dataset_lacks():
    with pytest.raises(DataError, match=r"Split 'validation'.*splits are \['test', 'train'\]"):
        load_and_process_data("builtin:1", "train", "validation")


def test_empty_selection():
    with pytest.raises(DataError, match="empty"):
        load_and_process_data("builtin:1", "train[5:5]", None)


@pytest.mark.parametrize("path", ["./no/such/folder", "/no/such/file.parquet"])
def test_path_that_does_not_exist(path):
    with pytest.raises(DataError, match="does not exist"):
        load_and_process_data(path)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="holds no dataset"):
        load_and_process_data(str(tmp_path))


def test_hub_id_without_hub(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    # read once, at import: without these the loader retries an unreachable hub for ~20 s first
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError, match="--dataset_id builtin"):
        load_and_process_data("AI-MO/NuminaMath-TIR", "train[:5%]", "test[:5%]")


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
    kept, counts = data_utils.drop_unusable_rows(train)
    assert len(kept) == 2 and counts == {"empty_problem": 2, "unusable_gold": 1}


# The held-out problems every learning figure is measured on: extending the built-in data must
# never change them (sha256 of each level's test rows, first 16 hex digits).
TEST_SPLIT_HASHES = {1: "a768474ab95eb20b", 2: "cf534b746b23929e", 3: "5abfc0ede008b84d", 4: "1f09b6c8053a3ac8"}


@pytest.mark.parametrize("level", sorted(TEST_SPLIT_HASHES))
def test_each_levels_test_split_is_pinned(level):
    import hashlib

    for levels in ([level], [1, 2, 3, 4]):  # the same rows whichever levels are loaded with it
        rows = [r for r in builtin_data.builtin_records(levels)["test"] if r["level"] == level]
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
