"""trl_grpo/fast/lean_decode.py: the lean decode step gives transformers' logits (to rounding), step after step,
as rows leave; the training hook uses it where it can and says why not where it cannot."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from conftest import tiny_trainer
from trl_grpo.fast import decoding, kv_cache, merged_weights
from trl_grpo.fast.lean_decode import LeanDecoder
from trl_grpo.models import loading

PAD = 0
SIZES = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "pad_token_id": PAD,
}


def _model(family: str):
    torch.manual_seed(1)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SIZES, tie_word_embeddings=True)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=False)).eval()  # q/k/v with bias


def _rows(shared: int):
    prefix = list(range(10, 10 + shared))
    return [prefix + [40, 41, 42, 43], prefix + [44], prefix + [45, 46]]  # own lengths differ: padding


def _logits_per_step(model, rows, shared, lean, tokens, drop_after=2):
    """The prompts' last logits, then each decode step's for teacher-forced ``tokens`` (rows x
    steps), row 1 leaving the batch after step ``drop_after``: through transformers, or through
    ``lean`` (its prefill of the prompts' own tokens after transformers ran the shared prefix)."""
    ids, mask, _ = decoding.shared_prefix_layout(rows, PAD, shared)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if lean:
        prefix = kv_cache.prefix_cache(model, rows[0][:shared], "cpu") if shared else None
        state = lean.start(prefix, shared, len(rows), ids.shape[1] - shared, room=tokens.shape[1])
        first = state.prefill(torch.arange(len(rows)), ids[:, shared:], mask[:, shared:], positions[:, shared:])
    else:
        state = None
        cache = kv_cache.expanded_prefix_cache(model, rows[0][:shared], "cpu", len(rows)) if shared else None
        cache = cache or DynamicCache(config=model.config)
        first = model(input_ids=ids[:, shared:], attention_mask=mask, position_ids=positions[:, shared:], cache=cache)
        first = first.logits[:, -1].float()
    last, out, alive = positions[:, -1], [first], torch.arange(len(rows))
    for step in range(tokens.shape[1]):
        last = last + 1
        tok = tokens[alive, step]
        if state:
            logits = state.step(tok, last)
        else:
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], 1)
            logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last[:, None], cache=cache)
            logits = logits.logits[:, -1].float()
        out.append(logits)
        if step == drop_after:
            keep = torch.tensor([0, 2])
            alive, last = alive[keep], last[keep]
            if state:
                state.select(keep)
            else:
                cache.batch_select_indices(keep)
                mask = mask[keep]
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("shared", [0, 6])
def test_lean_step_gives_transformers_logits(family, shared):
    model = _model(family)
    tokens = torch.randint(1, 300, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stock = _logits_per_step(model, _rows(shared), shared, None, tokens)
        lean = _logits_per_step(model, _rows(shared), shared, LeanDecoder(model), tokens)
    assert len(stock) == len(lean) == 7 and lean[-1].shape == (2, 300)
    for a, b in zip(stock, lean, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=2e-6, rtol=0), (a - b).abs().max()  # logits up to ~1.2
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_lean_step_under_bf16_is_as_close_to_fp32_as_transformers():
    """Training samples from bf16 weights under autocast: the lean step's logits sit as close to the
    fp32 ones as transformers' own bf16 step does (attention in fp32 in both)."""
    name = kv_cache.pick_attention("cpu", True)
    model = _model("llama")
    model.config._attn_implementation = name
    tokens = torch.randint(1, 300, (3, 6), generator=torch.Generator().manual_seed(3))
    rows = _rows(6)
    with torch.no_grad():
        exact = _logits_per_step(model, rows, 6, None, tokens)
        with merged_weights.generation_weights(model, torch.bfloat16), torch.autocast("cpu", dtype=torch.bfloat16):
            stock = _logits_per_step(model, rows, 6, None, tokens)
            lean = _logits_per_step(model, rows, 6, LeanDecoder(model), tokens)
    off_stock = max((a - b).abs().max().item() for a, b in zip(exact, stock, strict=True))
    off_lean = max((a - b).abs().max().item() for a, b in zip(exact, lean, strict=True))
    assert off_stock > 0 and off_lean <= 2 * off_stock, (off_lean, off_stock)


def test_the_hook_decodes_through_the_lean_step(tiny_model_dir, monkeypatch):
    """Same greedy tokens as generate, with the lean step doing every decode step after the prompts."""
    from trl_grpo.fast import lean_decode

    calls = []
    step = lean_decode.LeanState.step
    monkeypatch.setattr(lean_decode.LeanState, "step", lambda self, *a: calls.append(1) or step(self, *a))
    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    rows = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]] * 2
    width = max(map(len, rows))
    ids = torch.tensor([[2] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    from transformers import GenerationConfig

    never = model.config.vocab_size + 7  # an end token no row emits: every row runs all 6 steps
    kwargs = {
        "generation_config": GenerationConfig(do_sample=False, max_new_tokens=6, eos_token_id=[never], pad_token_id=2)
    }
    hook = decoding.SharedPrefixGenerate(model, pad_id=2)
    hooked = hook(input_ids=ids, attention_mask=mask, **kwargs)
    assert hook.lean_skipped is None and hook.failed is None and len(calls) == 5
    assert torch.equal(hooked, model.generate(input_ids=ids, attention_mask=mask, **kwargs))
    hook.lean, calls[:] = False, []
    assert torch.equal(hook(input_ids=ids, attention_mask=mask, **kwargs), hooked) and not calls


def test_why_not_names_what_the_lean_step_cannot_run(tiny_model_dir, tmp_path):
    assert LeanDecoder.why_not(_model("llama")) is None and LeanDecoder.why_not(_model("qwen2")) is None
    windowed = Qwen2ForCausalLM(Qwen2Config(**SIZES, use_sliding_window=True, sliding_window=8, max_window_layers=0))
    assert "sliding-window" in LeanDecoder.why_not(windowed)
    from transformers import GPT2Config, GPT2LMHeadModel

    assert "'gpt2' is not one of" in LeanDecoder.why_not(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)))
    model = tiny_trainer(tiny_model_dir, tmp_path).model
    assert LeanDecoder.why_not(model) == "an adapter is active and not merged in"  # LoRA, unmerged
    with merged_weights.generation_weights(model):
        assert LeanDecoder.why_not(model) is None
