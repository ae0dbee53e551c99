"""data_utils.py: the built-in dataset, every local layout, split logic, length filter, errors."""

import json
import os

import pytest
from datasets import Dataset, DatasetDict

from data_utils import load_and_process_data
from trl_grpo.answers.boxes import BOXED
from trl_grpo.answers.contract import ANSWER_END, ANSWER_START, THINK_END, THINK_START
from trl_grpo.answers.rewards import accuracy_reward
from trl_grpo.data import builtin, prepare, prompts, sources, splits
from trl_grpo.data.splits import DataError
from trl_grpo.settings import flags

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
    a = builtin.builtin_records()
    b = builtin.builtin_records()
    assert a == b  # same seed, same data, every run
    n_levels = len(builtin.BUILTIN_LEVELS)
    assert len(a["train"]) == n_levels * builtin.BUILTIN_TRAIN_PER_LEVEL
    assert len(a["test"]) == n_levels * builtin.BUILTIN_TEST_PER_LEVEL
    assert {r["level"] for r in a["test"]} == set(builtin.BUILTIN_LEVELS)
    assert builtin.builtin_records([1], seed=1) != builtin.builtin_records([1])


def test_builtin_splits_never_overlap():
    d = builtin.builtin_records()
    assert not {r["problem"] for r in d["train"]} & {r["problem"] for r in d["test"]}
    assert len({r["problem"] for r in d["train"]}) == len(d["train"])  # no duplicates either


def test_builtin_schema_matches_numinamath():
    row = builtin.builtin_records([3])["test"][0]
    assert set(row) >= {"problem", "solution", "messages"}
    assert row["messages"][0] == {"role": "user", "content": row["problem"]}
    assert row["solution"].rstrip(".").endswith(f"{BOXED}{{{row['answer']}}}")


def test_every_builtin_gold_scores_one():
    d = builtin.builtin_records()
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
    assert list(sources.parse_builtin_spec(dataset_id)) == levels


@pytest.mark.parametrize(
    "bad", ["builtin:9", "builtin:a", "builtin:0-1", "builtin:,", "builtin:3@0", "builtin:3@1.5", "builtin:3@x"]
)
def test_bad_builtin_ids(bad):
    with pytest.raises(ValueError, match="builtin:1-2.*'@SHARE' \\(0 < SHARE <= 1\\)"):
        sources.parse_builtin_spec(bad)


def test_a_share_thins_only_the_train_rows_of_its_levels():
    train = sources._load_all_splits("builtin:1,3@0.25")["train"]
    whole = builtin.builtin_records([1, 3])
    thinned = builtin.builtin_records([1, 3], shares=builtin.parse_builtin_spec("builtin:1,3@0.25"))
    assert thinned["test"] == whole["test"]  # the measured problems never change
    level3 = [r for r in whole["train"] if r["level"] == 3]
    assert [r for r in thinned["train"] if r["level"] == 1] == [r for r in whole["train"] if r["level"] == 1]
    assert [r for r in thinned["train"] if r["level"] == 3] == level3[:500]  # the first quarter drawn
    assert len(train) == 2500 and train[2000]["problem"] == level3[0]["problem"]


def test_default_load_works_offline_with_the_schema():
    train, test = load_and_process_data()
    assert set(train.column_names) == {"answer", "problem", "prompt", "solution", "level"}  # level kept, messages not
    prompt = test[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[0]["content"] == prompts.PROMPT_TEMPLATES[flags.DEFAULT_PROMPT_TEMPLATE]


# ---------------------------------------------------------------- prompts
def test_system_prompt_is_built_from_the_reward_tags():
    for text in prompts.PROMPT_TEMPLATES.values():
        for tag in (THINK_START, THINK_END, ANSWER_START, ANSWER_END, BOXED):
            assert tag in text


def test_the_original_prompt_is_the_originals_byte_for_byte():
    with open(os.path.join(os.path.dirname(__file__), "data", "original_system_prompt.json"), encoding="utf-8") as f:
        reference = json.load(f)["system_prompt"]  # as the original evaluates it (tests/data/README.md)
    assert prompts.system_prompt("original") == reference == prompts.SYSTEM_PROMPT


class FakeTokenizer:
    """Chat template = concatenated contents; one token per whitespace-separated word."""

    def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in conversation) + (" ASSISTANT:" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_render_prompt_prefills_think():
    conv = [{"role": "user", "content": "hi"}]
    assert prompts.render_prompt(FakeTokenizer(), conv, True).endswith(f"ASSISTANT:{THINK_START}")
    assert prompts.render_prompt(FakeTokenizer(), conv, False).endswith("ASSISTANT:")


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
    _, test_a, record_a = sources.load_splits(first, None, "test")
    _, test_b, record_b = sources.load_splits(shuffled, None, "test")
    assert sorted(test_a["problem"]) == sorted(test_b["problem"]) and len(test_a) % 2 == 0
    assert record_a["problems_sha256"] == record_b["problems_sha256"] and record_a["source"] == "carved from train"
    assert record_a["rows"] == len(test_a) and record_a["rule"] and record_a["fraction"] == 0.1


def test_training_never_sees_the_carved_test_rows(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", NUMINA_ROWS)
    train, _, record = sources.load_splits(path, "train", "test", roles=("train",))
    _, test, _ = sources.load_splits(path, None, "test")
    assert not set(train["problem"]) & set(test["problem"]) and len(train) + len(test) == len(NUMINA_ROWS)
    assert record["problems_sha256"] == splits.problems_digest(test["problem"])
    # a slice of the training rows is a slice of what is left after the carve
    sliced, _, _ = sources.load_splits(path, "train[:5]", "test", roles=("train",))
    assert sliced["problem"] == train["problem"][:5]


def test_outside_a_run_the_train_split_is_every_row(tmp_path):
    """eval.py --split train of a one-file dataset, outside any run: all its rows (nothing is held out)."""
    path = _jsonl(tmp_path / "d.jsonl", NUMINA_ROWS)
    _, rows, record = sources.load_splits(path, None, "train")
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
            sources.load_splits(path, train_split, test_split)
    else:
        train, test, _ = sources.load_splits(path, train_split, test_split)
        assert not set(train["problem"]) & set(test["problem"])


def test_problems_seen_in_training_are_counted_and_left_out(tmp_path, tiny_model_dir):
    from trl_grpo.models import loading

    folder = tmp_path / "dd"
    DatasetDict(
        {"train": Dataset.from_list(NUMINA_ROWS[:12]), "test": Dataset.from_list(NUMINA_ROWS[8:])}
    ).save_to_disk(str(folder))  # 4 test problems also in train
    known = sources.training_problems(str(folder), "train", "test")
    rows, dropped, _ = prepare.prompt_rows(
        loading.load_tokenizer(tiny_model_dir), str(folder), "test", "eval", exclude=known, template="worked_example"
    )
    assert dropped["contaminated"] == 4 and len(rows) == 8
    assert not any(known.match(p) for p in rows["problem"])
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
    rows = [{"q": "1+1?", "gold": "2", "source": "decoy", "difficulty": 3}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "c"))
    train, _ = load_and_process_data(str(tmp_path / "c"), "train", None, problem_column="q", answer_column="gold")
    assert train[0]["prompt"][1]["content"] == "1+1?" and train[0]["answer"] == "2"
    # every other column is kept under its own name: TRL hands each to every reward
    assert (train[0]["source"], train[0]["difficulty"]) == ("decoy", 3) and "q" not in train.column_names


def test_a_column_named_like_the_schema_but_not_read_as_it_is_refused(tmp_path):
    Dataset.from_list([{"q": "1+1?", "gold": "2", "problem": "decoy"}]).save_to_disk(str(tmp_path / "c"))
    with pytest.raises(DataError, match="column 'problem' is not the one read as the problem"):
        load_and_process_data(str(tmp_path / "c"), "train", None, problem_column="q", answer_column="gold")


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
    kept, dropped = prepare.filter_by_prompt_length(ds, FakeTokenizer(), 10)
    assert len(kept) == 2 and dropped == 1
    assert "Dropped 1 of 3 prompts" in caplog.text
    assert len(prepare.filter_by_prompt_length(ds, FakeTokenizer(), 0)[0]) == 3  # 0 keeps all


def test_length_filter_fails_when_nothing_remains():
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": "a b c d e f"}]}])
    with pytest.raises(DataError, match="Raise --max_prompt_length"):
        prepare.filter_by_prompt_length(ds, FakeTokenizer(), 3)


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
