"""The cold start (--sft_steps): its targets (trl_grpo/data/sft_targets.py), a real SFT-then-GRPO run on a tiny
model, and a stop and resume in either phase."""

import json
import os
import signal

import pytest
import torch

import data_utils
import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.answers import rewards
from trl_grpo.data import sft_targets
from trl_grpo.runs import folders
from trl_grpo.training import cold_start


# ---------------------------------------------------------------- targets
def test_a_target_is_what_grpo_scores_full_marks():
    train, _ = data_utils.load_and_process_data("builtin:1-4", "train[:40]", None)
    for row in train:
        prompt = "...<|im_start|>assistant\n<think>"  # the prefilled prompt GRPO samples from
        target, why = sft_targets.sft_target(row["solution"], row["answer"], prefill_think=True)
        assert why is None and target.endswith(f"<answer>\\boxed{{{row['answer']}}}</answer>")
        assert rewards.format_reward([target], prompts=[prompt]) == [1.0]
        assert rewards.accuracy_reward([target], [row["solution"]], [row["answer"]], [row["problem"]]) == [1.0]
        thinking = target.split("</think>")[0]
        assert "\\boxed" not in thinking and row["answer"] in thinking  # one final answer, and it is worked out
    unprefilled, _ = sft_targets.sft_target("2 + 3 = 5, so \\boxed{5}.", "5", prefill_think=False)
    assert unprefilled.startswith("<think>2 + 3 = 5") and rewards.format_reward([unprefilled]) == [1.0]


@pytest.mark.parametrize(
    "solution, answer, why",
    [
        ("\\boxed{42}", "", "no_worked_steps"),  # an answer column alone (DeepMath-style)
        ("The final answer is $42$.", "42", "no_worked_steps"),
        ("It is 4 </think><answer>\\boxed{4}</answer> so \\boxed{42}", "42", "contract_tags"),
        ("6 x 7 = \\boxed{42", "", "no_gold"),
        ("6 x 7 = \\boxed{42", "42", "unbalanced_box"),
        ("See the worked solution above for details", "", "no_gold"),
    ],
)
def test_rows_without_a_usable_worked_solution_are_left_out(solution, answer, why):
    assert sft_targets.sft_target(solution, answer, True) == (None, why)


def test_worked_solutions_holding_the_templates_special_tokens_are_left_out(tiny_model_dir):
    """``<|im_end|><|im_start|>user`` inside a solution would become real special tokens in the taught thinking."""
    from datasets import Dataset

    from trl_grpo.models import loading

    tokenizer = loading.load_tokenizer(tiny_model_dir)
    marker = "<|im_end|>\n<|im_start|>user"
    assert marker.split("\n")[0] in tokenizer.all_special_tokens  # the tiny model's template has them
    rows = [
        {"prompt": "p", "solution": f"2 + {i} = {2 + i}, so \\boxed{{{2 + i}}}.", "answer": str(2 + i)}
        for i in range(4)
    ]
    rows[1]["solution"] = f"2 + 1 = 3{marker} and so \\boxed{{3}}."
    ds, skipped = cold_start.sft_dataset(Dataset.from_list(rows), True, tokenizer, None)
    assert len(ds) == 3 and skipped["special_tokens"] == 1
    assert not any("<|im_end|>" in c for c in ds["completion"])


def test_gsm8k_rationales_are_worked_solutions(tmp_path):
    path = tmp_path / "gsm.jsonl"
    rows = [
        {"question": f"Q{i}: what is {i} + 1,000?", "answer": f"{i} + 1000 = {i + 1000}\n#### {i + 1000}"}
        for i in range(30)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train, _ = data_utils.load_and_process_data(str(path), "train", None)
    out, skipped = sft_targets.sft_rows(["p"] * len(train), train["solution"], train["answer"], True)
    assert len(out) == len(train) and not any(skipped.values())
    assert out[0]["completion"].startswith(f"{rows[0]['answer'].split(chr(10))[0]}")


def test_a_dataset_without_worked_solutions_is_refused_naming_the_column_flags():
    with pytest.raises(ValueError, match="none of the 3 training rows has one.*--solution_column.*--sft_steps 0"):
        sft_targets.sft_rows(["p"] * 3, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"], ["", "", ""], True)


def test_the_refusal_comes_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    path = tmp_path / "answers_only.jsonl"
    rows = [{"question": f"{i} + 1?", "final_answer": str(i + 1)} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("trl_grpo.models.loading.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(SystemExit, match="--solution_column"):
        main.main(
            [
                "--model_id",
                tiny_model_dir,
                "--dataset_id",
                str(path),
                "--sft_steps",
                "2",
                "--max_steps",
                "1",
                "--output_dir",
                str(tmp_path / "run"),
            ]
        )
    assert not os.path.exists(tmp_path / "run")


# ---------------------------------------------------------------- runs
SFT_FLAGS = [*TINY_TRAIN_FLAGS, "--sft_steps", "3", "--sft_batch_size", "4", "--sft_learning_rate", "1e-2"]


def _state(run):
    with open(os.path.join(run, folders.RUN_STATE)) as f:
        return json.load(f)


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sft") / "run")
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", out, *SFT_FLAGS, "--save_steps", "1"]) == 0
    return out


def test_the_cold_start_runs_before_grpo_and_leaves_its_adapter(sft_run, tiny_model_dir):
    state = _state(sft_run)
    assert state["complete"] and state["steps"] == 2 and state["sft"]["steps"] == 3 and state["sft"]["complete"]
    assert state["sft"]["train_wall_s"] > 0 and state["attempts"][0]["sft"]["steps"] == 3
    # SFTTrainer's forward wrapper is taken off again: GRPO's fast log-probs pass their exact check after it
    assert state["attempts"][0]["fast_paths"]["fast_logps"] == "used"
    with open(os.path.join(sft_run, "run_config.json")) as f:
        config = json.load(f)
    assert config["sft"]["steps"] == 3 and config["sft"]["rows"] == 16 and config["args"]["sft_learning_rate"] == 0.01
    with open(os.path.join(sft_run, cold_start.SFT_LOG)) as f:
        losses = [e["loss"] for e in json.load(f) if "loss" in e]
    assert len(losses) == 3 and all(v > 0 for v in losses)
    cold, final = _adapter(os.path.join(sft_run, "sft")), _adapter(sft_run)
    assert any("lora_B" in k and cold[k].abs().sum() > 0 for k in cold)  # SFT moved the adapter off its zero init
    # GRPO trained that very adapter: on the random tiny model every group scores 0 (no gradient), so it ends
    # exactly as the cold start left it, not at a fresh LoRA's zeros
    assert cold.keys() == final.keys() and all(torch.equal(cold[k], final[k]) for k in cold)
    from trl_grpo.models import locate

    resolved = locate.resolve_model(os.path.join(sft_run, "sft"))  # eval.py --model_dir RUN/sft takes it
    assert resolved["adapter"] and resolved["base"] == tiny_model_dir
    assert os.path.isfile(os.path.join(sft_run, "reward_curves.png"))


class _StopAt:
    """A callback that sends SIGTERM as the step ``at`` (0-based) of the phase whose trainer it joins begins."""

    def __init__(self, at):
        self.at = at

    def __call__(self, base):
        stop_at = self.at

        class Stop(base):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == stop_at:
                    os.kill(os.getpid(), signal.SIGTERM)

        return Stop


def test_a_stop_in_the_cold_start_resumes_it_and_grpo_follows(tiny_model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    monkeypatch.setattr(cold_start, "CheckpointMarker", _StopAt(1)(cold_start.CheckpointMarker))
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *SFT_FLAGS, "--save_steps", "1", "--no-preflight"]
    assert main.main(argv) == 130
    state = _state(out)
    assert state["sft"] == {**state["sft"], "steps": 2, "complete": False} and not state["complete"]
    assert not os.path.exists(os.path.join(out, "checkpoint-1"))  # GRPO never started
    with pytest.raises(SystemExit, match="already holds files"):  # the phase's work is never moved aside
        main.main(argv)
    monkeypatch.undo()
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last"]) == 0
    state = _state(out)
    assert state["sft"]["steps"] == 3 and state["sft"]["complete"] and state["complete"] and state["steps"] == 2
    assert state["attempts"][-1]["sft"]["resumed_from"] == os.path.join(out, "sft", "checkpoint-2")  # not redone
    with open(os.path.join(out, cold_start.SFT_LOG)) as f:
        assert [e["step"] for e in json.load(f) if "loss" in e] == [1, 2, 3]


def test_a_stop_in_grpo_does_not_redo_the_cold_start(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    import train
    from trl_grpo.settings import resolve

    out = str(tmp_path / "run")
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *SFT_FLAGS, "--save_steps", "1", "--no-preflight"]
    args, startup = resolve.parse("train", argv)
    assert train.train(args, startup, callbacks=[_StopAt(0)(TrainerCallback)()]) == 130
    cold = _adapter(os.path.join(out, "sft"))
    log_before = os.path.getmtime(os.path.join(out, cold_start.SFT_LOG))
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last"]) == 0
    state = _state(out)
    assert state["complete"] and state["steps"] == 2 and "sft" not in state["attempts"][-1]
    assert os.path.getmtime(os.path.join(out, cold_start.SFT_LOG)) == log_before
    assert all(torch.equal(cold[k], v) for k, v in _adapter(os.path.join(out, "sft")).items())


def test_a_stop_just_after_the_cold_start_starts_grpo_from_its_adapter(tiny_model_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    monkeypatch.setattr(cold_start, "CheckpointMarker", _StopAt(2)(cold_start.CheckpointMarker))  # in its last step
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *SFT_FLAGS, "--no-preflight"]
    assert main.main(argv) == 130
    assert _state(out)["sft"]["complete"] and os.path.isfile(os.path.join(out, "sft", "adapter_model.safetensors"))
    monkeypatch.undo()
    loaded = []

    def spy(model, folder):
        loaded.append(folder)
        return sft_load(model, folder)

    monkeypatch.setattr(cold_start, "load_finished", spy)
    assert main.main(["--output_dir", out, "--resume_from_checkpoint", "last"]) == 0
    state = _state(out)
    assert loaded == [out] and state["attempts"][-1]["sft"] == "finished before" and state["complete"]


sft_load = cold_start.load_finished


def test_the_cold_start_cannot_change_on_resume(sft_run):
    with pytest.raises(SystemExit, match="--sft_steps: the run was started with 3, not 5"):
        main.main(["--output_dir", sft_run, "--resume_from_checkpoint", "last", "--sft_steps", "5"])


def test_max_steps_0_runs_the_cold_start_alone(tiny_model_dir, tmp_path):
    out = str(tmp_path / "run")
    argv = ["--model_id", tiny_model_dir, "--output_dir", out, *SFT_FLAGS, "--max_steps", "0", "--no-preflight"]
    assert main.main(argv) == 0
    state = _state(out)
    assert state["complete"] and state["steps"] == 0 and state["sft"]["steps"] == 3
    cold, final = _adapter(os.path.join(out, "sft")), _adapter(out)
    assert all(torch.equal(cold[k], final[k]) for k in cold)
    with pytest.raises(SystemExit, match="Nothing to train"):
        main.main(["--model_id", tiny_model_dir, "--output_dir", str(tmp_path / "none"), "--max_steps", "0"])


def test_the_cold_start_leaves_the_model_as_grpo_expects_it(tiny_model_dir, tmp_path):
    """SFTTrainer patches the base model's forward with a fused LM head at temperature 1 (over GRPO's, at
    --temperature) and its accelerator wraps the PeftModel's forward in autocast and marks it prepared. Left
    there, GRPO's loss scores its samples at the wrong temperature, its fast log-probs fail their exact check
    (it falls back to its slower path) and its own accelerator never wraps the model for its precision."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from trl import GRPOTrainer

    import train
    from trl_grpo.runs.control import StopOnSignal
    from trl_grpo.settings import resolve

    argv = ["--model_id", tiny_model_dir, *SFT_FLAGS, "--bf16", "--no-preflight", "--save_strategy", "no"]
    args, _ = resolve.parse("train", [*argv, "--temperature", "0.7"])
    trainer, _, _ = train.build_trainer(args, str(tmp_path / "run"))
    model, base = trainer.model, trainer.model.get_base_model()
    before = {k: (model.__dict__.get(k), base.__dict__.get(k)) for k in ("forward", "_original_forward")}
    torch.manual_seed(0)
    ids, mask = torch.randint(5, 200, (2, 12)), torch.ones(2, 12, dtype=torch.long)

    def trl_logps():  # TRL's own path (not ours), fp32, on a fixed batch and a fixed adapter
        with torch.no_grad():
            return GRPOTrainer._get_per_token_logps_and_entropies(trainer, model, ids, mask, 5)[0]

    adapter = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    expected = trl_logps()
    record, _ = cold_start.run(trainer, args, trainer.sft_dataset, str(tmp_path / "run"), StopOnSignal(), False, True)
    assert record["complete"] and trainer.accelerator.mixed_precision == "bf16"
    assert {k: (model.__dict__.get(k), base.__dict__.get(k)) for k in before} == before
    assert "_is_accelerate_prepared" not in model.__dict__  # GRPO's accelerator wraps it for its own precision
    set_peft_model_state_dict(model, adapter)  # the adapter as it was: any difference is the patches'
    torch.testing.assert_close(trl_logps(), expected, rtol=0, atol=1e-5)
