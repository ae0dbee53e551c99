"""lean_decode.py: the lean decode step gives transformers' step to rounding, drops rows like the
model's cache does, says why a model cannot take it, and the training hook uses it."""

import copy

import pytest
import torch

import decoding
import fast_weights
import kv_cache
import model_utils
from conftest import tiny_trainer
from lean_decode import LeanDecoder

PREFIX = [1, 9690, 198, 67, 2, 198, 1, 4093, 198]
ROWS = [PREFIX + [69, 70, 71], PREFIX + [72], PREFIX + [73, 74]]


def _both_steps(model, steps: int, drop_after: int | None = None):
    """Logits of ``steps`` decode steps after the prompts, by the model and by the lean step from
    the same cache, feeding both the model's greedy tokens; the last row leaves after ``drop_after``."""
    shared = len(PREFIX)
    ids, mask, _ = decoding.shared_prefix_layout(ROWS, 2, shared)
    cache = kv_cache.expanded_prefix_cache(model, PREFIX, "cpu", len(ROWS))
    kv_dtype = torch.float32 if kv_cache.cache_in_fp32(model) else None
    cache.layers = [kv_cache.reserved_layer(steps + ids.shape[1], like=layer, dtype=kv_dtype) for layer in cache.layers]
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:], cache=cache, use_cache=True
    ).logits[:, -1]
    nxt, last = logits.float().argmax(-1), positions[:, -1] + 1
    mask = torch.cat([mask, mask.new_ones((len(ROWS), 1))], 1)
    state = LeanDecoder.of(model).start(copy.deepcopy(cache), mask, shared, steps)
    got, want = [], []
    for step in range(steps):
        ref = model(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None], cache=cache, use_cache=True
        ).logits[:, -1]
        lean = state.step(nxt, last)
        want.append(ref.float())
        got.append(lean)
        nxt, last = ref.float().argmax(-1), last + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
        if step == drop_after:
            keep = torch.arange(mask.shape[0] - 1)
            for layer in cache.layers:
                layer.batch_select_indices(keep)
            state.select(keep)
            nxt, last, mask = nxt[keep], last[keep], mask[keep]
    return got, want


def _tiny_qwen2():
    """A 2-layer Qwen2 (biased q/k/v, tied head) with random weights, in memory."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=10_000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:  # biases start at zero: make them count
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    return model.eval()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_lean_step_gives_transformers_logits_in_fp32(tiny_model_dir, family):
    """Shared prefix, padded rows, a row leaving mid-way: every step's logits equal the model's to rounding."""
    if family == "llama":
        model = model_utils.load_model({"base": tiny_model_dir}, torch.float32).eval()
    else:
        model = _tiny_qwen2()
    with torch.no_grad():
        got, want = _both_steps(model, 4, drop_after=1)
    assert [g.shape for g in got] == [w.shape for w in want] and got[-1].shape[0] == len(ROWS) - 1
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-5), (g - w).abs().max()


def test_under_bf16_the_lean_step_is_as_close_to_fp32_as_transformers_step(tiny_model_dir):
    """Sampling weights in bf16 under autocast with the CPU fp32 attention (training's sampler): the
    lean step rounds no further from the fp32 logits than transformers' own bf16 step does."""
    model = model_utils.load_model(
        {"base": tiny_model_dir}, torch.float32, attn_implementation=kv_cache.pick_attention("cpu", True)
    ).eval()
    with torch.no_grad():
        _, exact = _both_steps(model, 3)
        with fast_weights.generation_weights(model, torch.bfloat16), torch.autocast("cpu", dtype=torch.bfloat16):
            got, want = _both_steps(model, 3)
    for g, w, e in zip(got, want, exact, strict=True):
        lean_err, model_err = (g - e).abs().mean(), (w - e).abs().mean()
        assert model_err > 0 and lean_err <= 2 * model_err + 1e-3, (lean_err, model_err)
        assert (g - w).abs().max() < 0.05 * e.abs().max()


def test_the_hook_samples_through_the_lean_step_and_gives_generates_tokens(tiny_model_dir, tmp_path):
    """Training's hook on a LoRA model, called as TRL calls it: the lean step runs (the adapter
    merged for sampling) and greedy tokens equal transformers' generate on the unmerged model."""
    from transformers import GenerationConfig

    trainer = tiny_trainer(tiny_model_dir, tmp_path)
    model = trainer.model.eval()
    assert "neither plain nor a merged LoRA" in LeanDecoder.why_not(model)  # outside generation_weights
    ids = torch.tensor([[2] * (12 - len(r)) + r for r in ROWS for _ in range(2)])
    mask = (torch.arange(12)[None] >= torch.tensor([12 - len(r) for r in ROWS for _ in range(2)])[:, None]).long()
    config = GenerationConfig(do_sample=False, max_new_tokens=8, eos_token_id=[2], pad_token_id=2)
    with torch.no_grad():
        want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, 12:].tolist()
    hook = decoding.SharedPrefixGenerate(model, pad_id=2)
    got = hook(input_ids=ids, attention_mask=mask, generation_config=config)
    assert hook.failed is None and hook.lean_used and hook.lean_skipped is None
    for g, w in zip(got[:, 12:].tolist(), want, strict=True):
        end = next((i + 1 for i, t in enumerate(w) if t == 2), len(w))
        assert g[:end] == w[:end]
    assert any(len(w) > 2 and 2 not in w[:2] for w in want)  # rows ran decode steps, not only the prompt pass
    off = decoding.SharedPrefixGenerate(model, pad_id=2, lean=False)
    assert torch.equal(off(input_ids=ids, attention_mask=mask, generation_config=config), got)
    assert not off.lean_used and off.lean_skipped == "off"


def test_a_model_the_lean_step_does_not_cover_is_named_and_decodes_as_before(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    assert "model type 'gpt2'" in LeanDecoder.why_not(model) and LeanDecoder.of(model) is None
    from transformers import GenerationConfig

    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 9, 10]])
    config = GenerationConfig(do_sample=False, max_new_tokens=4, eos_token_id=[99], pad_token_id=0)  # 99: never
    hook = decoding.SharedPrefixGenerate(model, pad_id=0)
    got = hook(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    assert hook.failed is None and not hook.lean_used and "gpt2" in hook.lean_skipped
    with torch.no_grad():
        want = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    assert torch.equal(got, want)
