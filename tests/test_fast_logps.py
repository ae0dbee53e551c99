"""trl_grpo/fast/packed_logps.py: shared-prefix log-probs equal TRL's own, are used only where exact, and fall back."""

import contextlib

import pytest
import torch

from conftest import tiny_trainer
from trl_grpo.fast import packed_logps


# ---------------------------------------------------------------- fast paths: same numbers as the plain ones
def _rows_with_shared_prefix():
    """4 prompts (a shared 9-token prefix, own parts of 1-4 tokens, left-padded) + completions
    right-padded to 6 (lengths 6, 4, 1, 3)."""
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    own = [[69, 70, 71], [72], [73, 74, 75, 76], [77, 78]]
    completions = [[80, 81, 82, 83, 84, 85], [86, 87, 88, 2], [2], [89, 90, 2]]
    width = len(prefix) + max(map(len, own))
    ids, mask = [], []
    for o, c in zip(own, completions, strict=True):
        p = prefix + o
        ids.append([2] * (width - len(p)) + p + c + [2] * (6 - len(c)))
        mask.append([0] * (width - len(p)) + [1] * len(p) + [1] * len(c) + [0] * (6 - len(c)))
    return torch.tensor(ids), torch.tensor(mask), 6


def _groups_of_a_prompt():
    """GRPO's layout: 3 prompts (own parts of 2, 1 and 3 tokens) x 3 completions each, right-padded
    to 5 (one empty, one at the cap, the rest in between), the groups not in order."""
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    own = [[69, 70], [71], [72, 73, 74]]
    completions = [[80, 81, 2], [82, 83, 84, 85, 86], [], [87, 2], [88], [89, 90, 91, 92, 2], [93], [94, 95], [2]]
    width = len(prefix) + 3
    ids, mask = [], []
    for i, c in enumerate(completions):
        p = prefix + own[[0, 1, 2, 1, 0, 2, 2, 0, 1][i]]
        ids.append([2] * (width - len(p)) + p + c + [2] * (5 - len(c)))
        mask.append([0] * (width - len(p)) + [1] * len(p) + [1] * len(c) + [0] * (5 - len(c)))
    return torch.tensor(ids), torch.tensor(mask), 5


@pytest.mark.parametrize(
    "rows,per_pack",
    [(_rows_with_shared_prefix, None), (_groups_of_a_prompt, None), (_groups_of_a_prompt, 2), (_groups_of_a_prompt, 1)],
)
def test_shared_prefix_logps_match_trls_path(tiny_model_dir, tmp_path, monkeypatch, rows, per_pack):
    """Log-probs, entropies and LoRA gradients equal TRL's full-row computation (fp32): distinct
    prompts, and rows of the same prompts packed together (all of a prompt's, 2 or 1 a sequence)."""
    from trl import GRPOTrainer

    if per_pack is not None:
        monkeypatch.setattr(packed_logps, "rows_per_pack", lambda *a: per_pack)
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--no-bf16")  # fp32: the two orders of work agree to rounding
    ids, mask, keep = rows()
    assert trainer._fast_logps_ok(trainer.model, False, {})
    results = []
    for fn in (
        lambda: GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, mask, keep, compute_entropy=True
        ),
        lambda: trainer._fast_logps(trainer.model, ids, mask, keep, None, True),
    ):
        trainer.model.zero_grad()
        logps, entropy, _ = fn()
        weights = torch.arange(1, 1 + logps.numel()).view(logps.shape)  # position-dependent: catch misalignment
        (logps * weights).sum().backward()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]
        results.append((logps.detach(), entropy.detach(), grads))
    (lp_a, ent_a, g_a), (lp_b, ent_b, g_b) = results
    valid = mask[:, -keep:].bool()
    assert torch.allclose(lp_a, lp_b, atol=1e-5) and torch.equal(lp_b[~valid], torch.zeros_like(lp_b[~valid]))
    assert torch.allclose(ent_a[valid], ent_b[valid], atol=1e-5)
    assert all(
        (a - b).norm() <= 1e-5 * a.norm() + 1e-6 for a, b in zip(g_a, g_b, strict=True)
    )  # fp32 summation order only
    assert any(a.abs().sum() > 0 for a in g_a)


def test_shared_prefix_logps_used_only_where_exact(tiny_model_dir, tmp_path):
    """Gradient checkpointing and --fast_paths off use TRL's path."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "a", "--gradient_checkpointing")
    assert not trainer._fast_logps_ok(trainer.model, False, {})
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "b", "--fast_paths", "off")
    assert not trainer._fast_logps_ok(trainer.model, False, {})
    assert "generate" not in trainer.model.__dict__  # transformers' own generate, no hook
    trainer = tiny_trainer(tiny_model_dir, tmp_path / "c")
    assert not trainer._fast_logps_ok(trainer.model, False, {"pixel_values": torch.zeros(1)})


def test_shared_prefix_logps_turn_off_after_a_failed_check(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from trl import GRPOTrainer

    trainer = tiny_trainer(tiny_model_dir, tmp_path)
    ids, mask, keep = _rows_with_shared_prefix()
    monkeypatch.setattr(
        packed_logps, "shared_prefix_logps", lambda *a, **k: (torch.zeros(len(a[2]), keep), None)
    )  # a broken fast path
    with torch.no_grad():
        got, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)
        want, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask, keep)
    assert torch.equal(got, want) and trainer.shared_prefix is False
    assert "using TRL's path" in caplog.text


def test_a_batch_without_completion_tokens_gives_zeros_and_a_zero_gradient(tiny_model_dir, tmp_path):
    """Every completion masked out (all truncated and masked, say): log-probs 0 like TRL's, and a
    backward through them runs (a zero gradient), not an error."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--no-bf16")
    ids, mask, keep = _groups_of_a_prompt()
    mask[:, -keep:] = 0
    assert packed_logps.packable(mask, keep)
    logps, _, _ = trainer._fast_logps(trainer.model, ids, mask, keep, None, False)
    assert torch.equal(logps, torch.zeros_like(logps))
    trainer.model.zero_grad()
    logps.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("hole", ["completion", "prompt", "inside the prompt"])
def test_rows_packing_cannot_take_go_to_trls_path(tiny_model_dir, tmp_path, monkeypatch, hole):
    """A mask with a hole in a completion or a prompt (TRL never makes one) or a row with no prompt
    token: TRL's path for that batch, the fast path still on for the next."""
    from trl import GRPOTrainer

    trainer = tiny_trainer(tiny_model_dir, tmp_path)
    ids, mask, keep = _rows_with_shared_prefix()
    if hole == "completion":
        mask[0, -3] = 0
    elif hole == "prompt":
        mask[2, :-keep] = 0
    else:
        mask[1, -keep - 4] = 0
    assert not packed_logps.packable(mask, keep)
    with pytest.raises(ValueError, match="TRL's path"):
        packed_logps.shared_prefix_logps(
            trainer.model.get_base_model().get_decoder(), trainer.model.get_base_model().lm_head, ids, mask, keep
        )
    with torch.no_grad():
        got, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, keep)
        want, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, mask, keep)
    assert torch.equal(got, want) and trainer.shared_prefix is True


def test_kl_penalty_runs_on_the_fast_log_probs(tiny_model_dir, tmp_path):
    """beta > 0: the reference log-probs (adapter switched off) go through the same fast path."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--beta", "0.1", "--no-bf16")
    trainer.train()
    kl = [e["kl"] for e in trainer.state.log_history if "kl" in e]
    assert (
        kl and all(k == k and k >= 0 for k in kl) and max(kl) > 0
    )  # finite, and the reference really is the base model
    assert trainer.shared_prefix and trainer._fast_checked


# ---------------------------------------------------------------- every GRPO knob: the same loss as TRL's path
def _vary(completions, **kwargs):
    """A reward that varies within every group, so the loss has a gradient on a random tiny model."""
    return [float(len(c if isinstance(c, str) else c[0]["content"]) % 7) for c in completions]


@pytest.mark.parametrize(
    "knob",
    [
        ["--num_iterations", "2"],
        ["--importance_sampling_level", "sequence"],
        ["--top_entropy_quantile", "0.5"],
        ["--epsilon_high", "0.28"],
        ["--mask_truncated_completions"],  # every 8-token completion of the tiny model is cut: no gradient at all
        ["--delta", "1.5"],
        ["--scale_rewards", "none", "--loss_type", "dr_grpo"],
        ["--scale_rewards", "batch", "--loss_type", "grpo"],
        ["--beta", "0.05"],
    ],
)
def test_the_fast_log_probs_give_trls_gradient_under_each_knob(tiny_model_dir, tmp_path, monkeypatch, knob):
    """One generated batch, its loss's LoRA gradient through the shared-prefix log-probs and through TRL's."""
    from trl_grpo.answers import registry

    monkeypatch.setitem(registry.REWARD_FUNCS, "vary", _vary)
    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--no-bf16", "--reward_funcs", "vary", *knob)
    trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.training_step, which this test skips
    grads = []
    for fast in (True, False):
        trainer.shared_prefix, trainer._fast_checked = fast, True
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        grads.append([p.grad.clone() for p in trainer.model.parameters() if p.requires_grad])
    assert any(g.abs().sum() > 0 for g in grads[1]) != ("--mask_truncated_completions" in knob)
    assert all((a - b).norm() <= 1e-4 * b.norm() + 1e-6 for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize(
    "knob", [["--top_p", "0.9"], ["--top_k", "20"], ["--min_p", "0.05"], ["--repetition_penalty", "1.2"]]
)
def test_the_decode_loop_steps_aside_for_sampling_it_does_not_reproduce(tiny_model_dir, tmp_path, knob):
    """top-p, top-k, min-p, a repetition penalty: transformers' generate samples, said once and recorded."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path, *knob)
    trainer.model.train()
    trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    hook = trainer.generate_hook
    assert trainer.model.generate is hook and hook.failed is None and knob[0].lstrip("-") in hook.stepped_aside
    assert trainer.fast_paths_report()["generate_hook"].startswith("stepped aside for ")


def test_frozen_weights_cast_once_give_the_same_bits(tiny_model_dir, tmp_path):
    """Under bf16 autocast the loss runs from bf16 copies of the frozen base weights, made once:
    log-probs and LoRA gradients equal autocast's own casts bit for bit, the copies are reused
    across steps and remade after an in-place change, and the fp32 weights are back afterwards."""
    from trl_grpo.fast import merged_weights

    trainer = tiny_trainer(tiny_model_dir, tmp_path, "--bf16")  # bf16 autocast on any CPU
    model = trainer.model.train()
    ids, mask, keep = _rows_with_shared_prefix()
    before = dict(model.named_parameters())
    results = []
    for casts in (None, merged_weights.FrozenCasts()):
        trainer.frozen_casts = casts or merged_weights.FrozenCasts()
        if casts is None:  # autocast's own per-call casts: a FrozenCasts that never swaps
            trainer.frozen_casts.swapped = lambda *a, **k: contextlib.nullcontext()
        model.zero_grad()
        logps, _, _ = trainer._fast_logps(model, ids, mask, keep, None, False)
        (logps * torch.arange(1, 1 + logps.numel()).view(logps.shape)).sum().backward()
        results.append((logps.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (lp_a, g_a), (lp_b, g_b) = results
    assert lp_a.dtype == torch.float32 and torch.equal(lp_a, lp_b)
    assert all(torch.equal(a, b) for a, b in zip(g_a, g_b, strict=True)) and any(a.abs().sum() > 0 for a in g_a)
    assert all(p is before[n] and p.dtype == torch.float32 for n, p in model.named_parameters())
    copies = trainer.frozen_casts.copies
    assert copies and all(c.dtype == torch.bfloat16 for _, _, c in copies.values())
    assert id(model.get_output_embeddings().weight) in copies  # the LM head's too: its kernel casts per chunk
    kept = {k: c for k, (_, _, c) in copies.items()}
    trainer._fast_logps(model, ids, mask, keep, None, False)
    assert all(copies[k][2] is c for k, c in kept.items())  # reused, not cast again
    weight = next(w for w, _, _ in copies.values())
    with torch.no_grad():
        weight.mul_(2)  # changed in place: its copy is remade
    trainer._fast_logps(model, ids, mask, keep, None, False)
    assert torch.equal(copies[id(weight)][2], weight.detach().to(torch.bfloat16))


@pytest.mark.parametrize("vocab,tokens", [(49152, 40), (952, 70), (40003, 33)])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("grads", ["log_probs", "entropy", "both"])
def test_the_lean_lm_head_gives_trls_outputs_and_gradients_bit_for_bit(vocab, tokens, autocast, grads):
    """lm_head.LeanChunkedLogProb against TRL's ChunkedLogProbFunction: the embedded model's
    vocabulary (two chunks), the tests' small one, an odd one; fp32 and CPU bf16 autocast; every
    output; the log-prob gradient, an entropy gradient, both; gradients for hidden states, weight, bias."""
    from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS, ChunkedLogProbFunction

    from trl_grpo.fast import lm_head

    gen = torch.Generator().manual_seed(vocab + tokens)
    hidden = torch.randn(tokens, 24, generator=gen)
    weight, bias = torch.randn(vocab, 24, generator=gen) * 0.3, torch.randn(vocab, generator=gen)
    ids = torch.randint(0, vocab, (tokens,), generator=gen)
    weights = torch.rand(tokens, generator=gen) - 0.5  # GRPO's per-token loss weights: either sign
    got = []
    for fn in (ChunkedLogProbFunction, lm_head.LeanChunkedLogProb):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = fn.apply(*leaves, ids, 0.7, 32768, None, 1.0, ("log_probs", *OPTIONAL_OUTPUTS))
        logps, entropy = out[:2]
        loss = {"log_probs": (logps * weights).sum(), "entropy": entropy.sum(), "both": (logps * weights).sum()}[grads]
        if grads == "both":
            loss = loss + 0.1 * entropy.sum()
        loss.backward()
        got.append([t.detach() for t in out] + [leaf.grad for leaf in leaves])
    for want, lean in zip(*got, strict=True):
        assert torch.equal(want, lean), (want.float() - lean.float()).abs().max()
