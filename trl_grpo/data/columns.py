"""Which column of a dataset is the problem, the solution and the answer; rows in one schema.

    python data_utils.py --dataset_id PATH     # shows how a local dataset's columns are mapped

``standardize`` maps a dataset's columns onto the schema (``prompt``, ``problem``, ``solution``,
``answer``), picking known names (``question``, ``expected_answer``, ...) or the ones given with
``--problem_column``/``--solution_column``/``--answer_column``. No torch.
"""

from __future__ import annotations

import re

from trl_grpo.answers.boxes import BOXED, extract_boxed
from trl_grpo.answers.contract import gold_answer
from trl_grpo.data.files import cell_text
from trl_grpo.data.prompts import system_prompt
from trl_grpo.data.splits import (
    DataError,
)

# ---------------------------------------------------------------- loading
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)

# The columns every row gets here (prepare.py adds problem_id): a dataset's own column of one of these
# names, other than the one read as it, would be overwritten.
SCHEMA = ("prompt", "problem", "solution", "answer", "problem_id")
# Column names TRL reads itself (a "messages" column makes TRL take the rows for chat data, whatever the
# prompt holds) or passes to rewards under the same name: left out, never handed on.
TRL_OWN = ("messages", "chosen", "rejected", "completion", "completions", "completion_ids", "prompts", "trainer_state")
TRL_OWN += ("image", "images", "log_metric", "log_extra", "environments")  # multimodal path; TRL's reward hooks
PROBLEM_COLUMNS = ("problem", "question", "query", "instruction", "input")


SOLUTION_COLUMNS = ("solution", "reasoning", "output")


ANSWER_COLUMNS = ("final_answer", "answer", "expected_answer", "target")


def _pick(
    columns: list[str], flag_value: str | None, candidates: tuple[str, ...], what: str, flag: str, required: bool
):
    if flag_value:
        if flag_value not in columns:
            raise DataError(f"Column {flag_value!r} given by {flag} is not in the dataset. Its columns are {columns}.")
        return flag_value
    for name in candidates:
        if name in columns:
            return name
    if required:
        raise DataError(
            f"No {what} column found. The dataset's columns are {columns}; name the {what} column with {flag} "
            f"(looked for {list(candidates)})."
        )
    return None


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" but not "(1, 2)" or "1,2"


def standardize(
    ds, problem_column=None, solution_column=None, answer_column=None, template: str = "original", system=None
):
    """Map a dataset's columns to the schema ``prompt, solution, answer`` (see the module docstring).

    Detected layouts: NuminaMath-TIR / MATH (problem, solution), GSM8K (question, answer ending
    in ``#### 72``), DeepMath-style (question, final_answer); flags override detection. Every
    other column is kept as it is: TRL hands each to every reward as a keyword argument (a reward
    of yours may read ``difficulty`` or ``tests``), and eval.py does the same. A column of another
    meaning under one of the schema's names (``SCHEMA``) is refused by name.
    """
    columns = list(ds.column_names)
    pcol = _pick(columns, problem_column, PROBLEM_COLUMNS, "problem", "--problem_column", True)
    scol = _pick(columns, solution_column, SOLUTION_COLUMNS, "solution", "--solution_column", False)
    acol = _pick(columns, answer_column, ANSWER_COLUMNS, "answer", "--answer_column", False)
    if acol == pcol:
        acol = None
    if scol is None and acol is None:
        raise DataError(
            f"No solution or answer column found. The dataset's columns are {columns}; name one with "
            f"--solution_column or --answer_column (looked for {list(SOLUTION_COLUMNS + ANSWER_COLUMNS)})."
        )
    sysmsg = system or system_prompt(template)
    used = {c for c in (pcol, scol, acol) if c}
    kept = [c for c in columns if c not in used and c not in TRL_OWN]
    clash = [c for c in kept if c in SCHEMA]
    if clash:
        raise DataError(
            f"The dataset's column {clash[0]!r} is not the one read as the {clash[0]} here, yet has the name of a "
            f"column this tool makes ({', '.join(SCHEMA)}): rename it (a reward reads every other column by its "
            "own name), or name the columns to read with --problem_column/--solution_column/--answer_column."
        )

    def convert(example):
        solution = cell_text(example[scol]) if scol else ""
        answer = cell_text(example[acol]) if acol else ""
        gsm = _GSM8K_ANSWER.search(answer) if answer else None
        if gsm:  # GSM8K: the rationale and the final answer share one column; "1,000" is a thousand
            solution = solution or answer[: gsm.start()].strip()
            answer = _THOUSANDS.sub("", gsm.group(1)).strip()
        if not answer:  # the gold alone: all the solution's boxed parts, or a solution that is only math
            answer = gold_answer(solution) or ""
        if answer and extract_boxed(solution) is None:
            solution = f"{solution}\n{BOXED}{{{answer}}}".strip()
        problem = "" if example[pcol] is None else str(example[pcol]).strip()
        return {
            "prompt": [{"role": "system", "content": sysmsg}, {"role": "user", "content": problem}],
            "problem": problem,
            "solution": solution,
            "answer": answer,
        }

    from datasets import Features, List, Value

    text = Value("string")  # stated: an input column of numbers would otherwise keep its numeric type
    message = {"role": text, "content": text}
    own = {c: ds.features[c] for c in kept}
    features = Features({**own, "prompt": List(message), "problem": text, "solution": text, "answer": text})
    dropped = sorted(used | (set(columns) & set(TRL_OWN)))
    return ds.map(convert, remove_columns=dropped, features=features, desc="Formatting prompts")
