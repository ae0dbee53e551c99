"""trl_grpo/fast/packed_sft.py: the cold start's packed loss equals SFTTrainer's own (loss, LoRA
gradients, metrics), is used only where exact, and falls back."""

import pytest
import torch

from trl_grpo.fast import packed_sft

SYSTEM = "You are a careful tutor. Think step by step, then give the final answer in a box. " * 2


def _trainer(tiny_model_dir, tmp_path, rows=None, dropout=0.0, **config):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: random, so every LoRA gradient is non-zero
            torch.nn.init.normal_(p, std=0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = rows or [
        {
            "prompt": f"{SYSTEM}Question {i}: what is {i} + {2 * i}?",
            "completion": f" {i} + {2 * i} = {3 * i}." * (i % 3 + 1),
        }
        for i in range(6)
    ]
    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": len(rows), "max_steps": 1}
    settings |= {"report_to": [], "use_cpu": True, "max_length": None, "completion_only_loss": True}
    settings |= {"gradient_checkpointing": False, "bf16": False} | config
    return packed_sft.FastSFTTrainer(
        model=model, args=SFTConfig(**settings), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )


def _loss_and_grads(trainer, batch, fast: bool, monkeypatch):
    calls = []
    real = packed_sft.sft_logps
    monkeypatch.setattr(packed_sft, "sft_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = trainer.model
    model.zero_grad()
    trainer.fast, trainer.fast_check = fast, {"passed": True} if fast else None
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert bool(calls) == fast  # the path meant ran
    return loss.item(), grads, {k: list(v) for k, v in trainer._metrics["train"].items()}


def test_the_packed_loss_and_gradients_equal_sfttrainers(tiny_model_dir, tmp_path, monkeypatch):
    trainer = _trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    prompts, completions = packed_sft.split_rows(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert len({len(c) for c in completions}) > 1  # rows of different lengths: packing and padding differ
    plain_loss, plain_grads, plain_metrics = _loss_and_grads(trainer, batch, False, monkeypatch)
    trainer._metrics["train"].clear()
    fast_loss, fast_grads, fast_metrics = _loss_and_grads(trainer, batch, True, monkeypatch)
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    assert len(plain_grads) > 4 and plain_grads.keys() == fast_grads.keys()
    for name, grad in plain_grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    for key in ("entropy", "mean_token_accuracy"):
        assert fast_metrics[key] == pytest.approx(plain_metrics[key], rel=1e-4)


def test_the_first_batch_is_checked_and_a_mismatch_falls_back(tiny_model_dir, tmp_path, monkeypatch):
    trainer = _trainer(tiny_model_dir, tmp_path)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer.fast and trainer.fast_check["passed"] and trainer.fast_check["relative_diff"] < 1e-5
    # a layout mistake (each row's first completion token predicted by the wrong state) is caught
    broken = _trainer(tiny_model_dir, tmp_path)
    broken.model.train()
    real = packed_sft.packed_rows
    monkeypatch.setattr(
        packed_sft, "packed_rows", lambda rows, per_pack, pad: real(rows, len(rows), pad)[:3] + ([0] * len(rows),)
    )
    loss = broken.compute_loss(broken.model, dict(batch))
    assert broken.fast is False and broken.fast_check["passed"] is False
    assert loss.item() == pytest.approx(trainer.fast_check["trl_loss"], rel=1e-5)  # TRL's loss, not the broken one


@pytest.mark.parametrize("setting", [{"loss_type": "dft"}, {"gradient_checkpointing": True}, {"dropout": 0.1}])
def test_settings_the_packed_loss_does_not_compute_go_to_trls_path(tiny_model_dir, tmp_path, setting):
    trainer = _trainer(tiny_model_dir, tmp_path, **setting)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, dict(batch))
    assert trainer.fast_check is None and trainer.fast_report()["packed_sft_loss"] == "not used"


def test_rows_it_cannot_split_go_to_trls_path():
    ids, mask = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 1, 1, 1]])
    assert packed_sft.split_rows(ids, mask, torch.tensor([[-100, 2, -100, 4]])) is None  # a hole in the labels
    assert packed_sft.split_rows(ids, torch.tensor([[0, 1, 1, 1]]), torch.tensor([[-100, -100, 3, 4]])) is None
    assert packed_sft.split_rows(ids, mask, torch.tensor([[-100, 2, 3, 5]])) is None  # labels not the tokens
    assert packed_sft.split_rows(ids, mask, torch.tensor([[-100] * 4])) == ([[1, 2, 3, 4]], [[]])
