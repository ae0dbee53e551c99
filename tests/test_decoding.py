"""trl_grpo/fast/decoding.py: every generation speed path gives what transformers' stock path gives."""

from dataclasses import replace

import torch

from conftest import tiny_trainer
from trl_grpo.fast import decoding, kv_cache, merged_weights
from trl_grpo.models import loading, sampling
from trl_grpo.models.sampling import Sampling


def test_shared_prefix_generate_matches_plain_generate(tiny_model_dir):
    """The hook train.py installs for TRL's generation gives the same greedy tokens, same layout."""
    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    rows = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]]
    width = max(map(len, rows))
    ids = torch.tensor([[2] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": 2}
    plain = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    hooked = decoding.SharedPrefixGenerate(model, pad_id=2)(input_ids=ids, attention_mask=mask, **kwargs)
    assert hooked.shape == plain.shape
    assert torch.equal(hooked[:, width:], plain[:, width:])


def test_generation_weights_merge_and_restore(tiny_model_dir, tmp_path):
    """Inside: logits equal the unmerged adapter's (fp32); after: the very same base tensors, bit for bit."""
    trainer = tiny_trainer(tiny_model_dir, tmp_path)
    model = trainer.model.eval()
    ids = torch.tensor([[1, 690, 198, 67, 2, 198, 69, 70]])
    before = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_weights.generation_weights(model):
            merged = model(input_ids=ids).logits
        with merged_weights.generation_weights(model, torch.bfloat16):
            running = [
                m for name, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in name
            ]  # LoRA A/B are merged in, switched off
            assert running and all(m.weight.dtype == torch.bfloat16 for m in running)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = model(input_ids=ids).logits.float()
    assert torch.allclose(plain, merged, atol=1e-5)
    assert (plain - low).abs().max() < 0.1 * plain.abs().max()
    for name, p in model.named_parameters():
        assert p is before[name][0] and torch.equal(p, before[name][1]), name
    assert not any(getattr(m, "_disable_adapters", False) for m in model.modules())


def test_cpu_fp32_attention_matches_sdpa(tiny_model_dir):
    name = kv_cache.pick_attention("cpu", True)
    assert name and kv_cache.pick_attention("cpu", False) is None and kv_cache.pick_attention("cuda", True) is None
    plain = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    upcast = loading.load_model({"base": tiny_model_dir}, torch.float32, attn_implementation=name).eval()
    ids = torch.tensor([[1, 690, 198, 67, 2, 198, 69, 70]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, upcast(input_ids=ids).logits, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = plain(input_ids=ids).logits.float(), upcast(input_ids=ids).logits.float()
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_cpu_fp32_attention_runs_grouped_heads_as_they_are(tiny_model_dir, monkeypatch):
    """A padded batch (a mask) under bf16 autocast: torch's kernel on the grouped key/value heads gives
    the outputs of repeating them bit for bit, and the gradients to rounding."""
    name = kv_cache.pick_attention("cpu", True)
    model = loading.load_model({"base": tiny_model_dir}, torch.float32, attn_implementation=name)
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped
    ids, mask, _ = _prompt_batch()
    grouped, calls = kv_cache._sdpa_grouped, []
    monkeypatch.setattr(kv_cache, "_sdpa_grouped", lambda *a: calls.append(1) or grouped(*a))

    def run():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(inputs_embeds=embeds, attention_mask=mask).logits.float()
        logits.square().mean().backward()
        return logits.detach(), embeds.grad

    fast = run()
    assert len(calls) == model.config.num_hidden_layers
    monkeypatch.setattr(kv_cache, "_grouped_with_mask", lambda *a: False)
    stock = run()
    assert len(calls) == model.config.num_hidden_layers and torch.equal(fast[0], stock[0])
    assert torch.allclose(fast[1], stock[1], rtol=1e-4, atol=1e-7)


def _prompt_batch():
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    rows = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]]
    width = max(map(len, rows))
    ids = torch.tensor([[2] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, width


def test_trl_style_greedy_generation_matches_generate(tiny_model_dir):
    """TRL passes a GenerationConfig: the decode loop gives generate's tokens up to each row's end."""
    from transformers import GenerationConfig

    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    ids, mask, width = _prompt_batch()
    plain = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=2)
    hook = decoding.SharedPrefixGenerate(model, pad_id=2)
    for eos in ([2], [int(plain[0, width + 3])]):  # the real EOS, and a token the first row emits early
        config = GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=eos, pad_token_id=2)
        got = hook(input_ids=ids, attention_mask=mask, generation_config=config)
        want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        assert torch.equal(got[:, :width], ids)
        for g, w in zip(got[:, width:].tolist(), want[:, width:].tolist(), strict=True):
            end = next((i + 1 for i, t in enumerate(w) if t in eos), len(w))  # TRL keeps tokens up to the first EOS
            assert g[:end] == w[:end]


def test_each_prompt_prefilled_once_for_its_samples(tiny_model_dir):
    """k samples per prompt from one prefill (pass@k, GRPO groups): the same tokens, for the same
    seed, as prefilling k copies of each prompt; greedy, every copy is the prompt's greedy output."""
    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    rows = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]]
    k, shared, eos = 4, len(prefix), {2}
    copies = [r for r in rows for _ in range(k)]
    with torch.no_grad():
        for temperature in (0.0, 1.0):
            torch.manual_seed(3)
            once = decoding.decode_shared_prefix(model, rows, 2, shared, "cpu", 8, eos, temperature, repeats=k)
            torch.manual_seed(3)
            each = decoding.decode_shared_prefix(model, copies, 2, shared, "cpu", 8, eos, temperature)
            assert once == each and len(once) == len(rows) * k
        assert len({tuple(t) for t in once}) > len(rows)  # sampled: the copies differ
    ids = torch.tensor([[2] * (12 - len(r)) + r for r in copies])
    mask = torch.tensor([[0] * (12 - len(r)) + [1] * len(r) for r in copies])
    kwargs = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": 2}
    hooked = decoding.SharedPrefixGenerate(model, pad_id=2)(input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(hooked[:, 12:], model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, 12:])


def test_unsupported_generation_settings_go_to_generate(tiny_model_dir):
    from transformers import GenerationConfig

    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    ids, mask, width = _prompt_batch()
    config = GenerationConfig(
        do_sample=False, max_new_tokens=6, repetition_penalty=1.5, pad_token_id=2, eos_token_id=[2]
    )
    assert sampling.plain_sampling_settings(config) is None
    got = decoding.SharedPrefixGenerate(model, pad_id=2)(input_ids=ids, attention_mask=mask, generation_config=config)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert got.shape == want.shape and torch.equal(
        got[:, width:], want[:, width:]
    )  # the prompt block is laid out differently


def test_sample_rows_draws_from_the_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]]).repeat(20000, 1)
    for temperature in (1.0, 0.5):
        draws = sampling.sample_rows(logits, temperature)
        freq = torch.bincount(draws, minlength=5).float() / len(draws)
        assert (freq - torch.softmax(logits[0] / temperature, -1)).abs().max() < 0.015
        assert freq[4] == 0


def test_generate_hook_falls_back_to_generate_on_error(tiny_model_dir, monkeypatch, caplog):
    from transformers import GenerationConfig

    model = loading.load_model({"base": tiny_model_dir}, torch.float32).eval()
    ids, mask, width = _prompt_batch()
    hook = decoding.SharedPrefixGenerate(model, pad_id=2)
    monkeypatch.setattr(decoding, "decode_shared_prefix", lambda *a, **k: 1 / 0)  # a broken decode loop
    config = GenerationConfig(do_sample=False, max_new_tokens=5, eos_token_id=[2], pad_token_id=2)
    for _ in range(2):
        got = hook(input_ids=ids, attention_mask=mask, generation_config=config)
    want = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert torch.equal(got, want) and hook.failed.startswith("ZeroDivisionError")
    assert caplog.text.count("fast generation failed") == 1


def _greedy_batch(tiny_run):
    """The tiny trained model, 8 prompts of every level, and their one-by-one greedy outputs."""

    import torch

    import data_utils
    from trl_grpo.data.prompts import render_prompt
    from trl_grpo.models import loading, locate

    resolved = locate.resolve_model(tiny_run)
    tokenizer = loading.load_tokenizer(tiny_run)
    model = loading.load_model(resolved, torch.float32, "cpu").eval()
    _, test = data_utils.load_and_process_data("builtin", None, "test")
    rows = test.select(range(0, 800, 100))  # every level: prompts of different lengths
    prompts = [render_prompt(tokenizer, p, True) for p in rows["prompt"]]
    base = Sampling(max_new_tokens=6, temperature=0.0, seed=0)
    single, _ = decoding.generate_batches(model, tokenizer, prompts, base, "cpu")
    return model, tokenizer, prompts, base, single


def test_shared_prefix_cache_gives_the_same_greedy_outputs(tiny_run):
    """Batched generation on a cached shared prefix matches one-by-one generation without it."""

    model, tokenizer, prompts, base, single = _greedy_batch(tiny_run)
    batched, _ = decoding.generate_batches(model, tokenizer, prompts, replace(base, batch_size=8), "cpu")
    assert decoding.shared_prefix_len([tokenizer(p)["input_ids"] for p in prompts]) > 50
    assert batched == single


def test_prompts_run_in_chunks_of_similar_length_give_the_same_greedy_outputs(tiny_run, monkeypatch):
    """The lean path runs the prompts' own tokens in length-sorted chunks (here of 3 prompts) and
    writes each chunk's keys and values to its rows: outputs match one-by-one generation, each
    prompt's samples included, and the stock decode loop's."""
    model, tokenizer, prompts, base, single = _greedy_batch(tiny_run)
    from trl_grpo.fast import lean_decode

    chunks = []
    prefill = lean_decode.LeanState.prefill
    monkeypatch.setattr(decoding, "PREFILL_ROWS", 3)
    monkeypatch.setattr(lean_decode.LeanState, "prefill", lambda s, p, *a: chunks.append(len(p)) or prefill(s, p, *a))
    twice = replace(base, batch_size=8, samples=2)
    got, _ = decoding.generate_batches(model, tokenizer, prompts, twice, "cpu")
    assert chunks == [3, 3, 2] and got == [s * 2 for s in single]
    stock, _ = decoding.generate_batches(model, tokenizer, prompts, twice, "cpu", lean=False)
    assert stock == got and len(chunks) == 3  # the stock loop: transformers' prefill of the whole batch


def test_batch_is_lowered_to_fit_free_memory(tiny_run, monkeypatch, caplog):
    """A batch whose KV cache would not fit a quarter of free memory is split; outputs stay the same."""
    import logging

    model, tokenizer, prompts, base, want = _greedy_batch(tiny_run)
    tokens = max(len(tokenizer(p)["input_ids"]) for p in prompts) + base.max_new_tokens
    row_bytes = 2 * 2 * 1 * 16 * tokens * 4  # layers x (k, v) x kv heads x head dim x tokens x fp32
    monkeypatch.setattr(kv_cache, "free_memory_bytes", lambda device: 4 * 3 * row_bytes)  # a quarter: 3 rows
    assert kv_cache.rows_that_fit(model, "cpu", tokens) == 3
    with caplog.at_level(logging.INFO):
        got, _ = decoding.generate_batches(model, tokenizer, prompts, replace(base, batch_size=8), "cpu")
    assert got == want and "lowered to 3 prompts" in caplog.text


def test_reserved_cache_layer_behaves_like_the_dynamic_one():
    """Writes in place, grows past its room, keeps the right rows: same contents as DynamicLayer."""
    import torch
    from transformers.cache_utils import DynamicLayer

    torch.manual_seed(0)
    plain, reserved = DynamicLayer(), kv_cache.reserved_layer(room=3)
    steps = [
        ("update", 4),
        ("update", 1),
        ("select", [0, 2, 3]),
        ("update", 1),
        ("update", 2),
        ("select", [1]),
        ("update", 1),
    ]
    batch = 4
    for op, arg in steps:
        if op == "update":
            k, v = torch.randn(batch, 2, arg, 8), torch.randn(batch, 2, arg, 8)
            got, want = reserved.update(k, v), plain.update(k, v)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        else:
            idx = torch.tensor(arg)
            reserved.batch_select_indices(idx)
            plain.batch_select_indices(idx)
            batch = len(arg)
        assert reserved.get_seq_length() == plain.get_seq_length()
        assert torch.equal(reserved.keys, plain.keys) and torch.equal(reserved.values, plain.values)
    taken = kv_cache.reserved_layer(room=2, like=plain)
    assert torch.equal(taken.keys, plain.keys) and taken.get_seq_length() == plain.get_seq_length()


def test_bf16_decoding_keeps_its_cache_in_fp32_with_the_same_tokens(tiny_model_dir, monkeypatch):
    """Where attention runs in fp32 on bf16 activations, the KV cache is stored in fp32 (cast once per
    token, not per step): exact, since bf16 -> fp32 is; the greedy tokens are those of a bf16 cache."""
    model = loading.load_model(
        {"base": tiny_model_dir}, torch.bfloat16, attn_implementation=kv_cache.pick_attention("cpu", True)
    ).eval()
    assert kv_cache.cache_in_fp32(model)
    assert not kv_cache.cache_in_fp32(loading.load_model({"base": tiny_model_dir}, torch.float32))
    prefix = [1, 690, 198, 67, 2, 198, 1, 493, 198]
    rows, seen = [prefix + [69, 70, 71], prefix + [72], prefix + [73, 74]], []
    update = kv_cache.ReservedLayer.update

    def spy(self, *args, **kwargs):
        seen.append(self.k_buf.dtype if self.is_initialized else None)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(kv_cache.ReservedLayer, "update", spy)
    with torch.no_grad():
        fp32 = decoding.decode_shared_prefix(model, rows, 2, len(prefix), "cpu", 8, {2})
        assert set(seen) == {torch.float32}  # the prefix's layers adopted into fp32 buffers
        monkeypatch.setattr(decoding, "cache_in_fp32", lambda m: False)
        seen.clear()
        bf16 = decoding.decode_shared_prefix(model, rows, 2, len(prefix), "cpu", 8, {2})
        assert set(seen) == {torch.bfloat16}
    assert fp32 == bf16


def test_packed_linears_match_and_restore(tiny_run):
    """oneDNN-packed linears give the same logits (fp32 rounding only) and leave no trace after."""
    import torch

    from trl_grpo.models import loading, locate

    model = loading.load_model(locate.resolve_model(tiny_run), torch.float32, "cpu").eval()
    ids = torch.tensor([[1, 690, 198, 67, 2, 198, 69, 70]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_weights.packed_linears(model, "cpu"):
            patched = [m for m in model.modules() if "forward" in m.__dict__]
            packed = model(input_ids=ids).logits
        with merged_weights.packed_linears(model, "cuda"):  # not a CPU: nothing to do
            assert not any("forward" in m.__dict__ for m in model.modules())
    if torch.backends.mkldnn.is_available():
        assert patched and all(type(m) is torch.nn.Linear for m in patched)
    assert torch.allclose(plain, packed, atol=1e-5, rtol=1e-5)
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_packed_linears_leave_bf16_alone_without_native_bf16(tiny_model_dir, monkeypatch):
    """oneDNN refuses to pack bf16 weights on an AVX2-only CPU (it raised mid-evaluation): there bf16
    layers run unpacked and give the plain logits (fp32 ones are packed: test above)."""
    import torch

    from trl_grpo.models import loading

    monkeypatch.setattr(merged_weights, "cpu_has_bf16", lambda: False)
    model = loading.load_model({"base": tiny_model_dir}, torch.bfloat16, "cpu").eval()
    ids = torch.tensor([[1, 690, 198, 67, 2, 198, 69, 70]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with merged_weights.packed_linears(model, "cpu"):
            patched = [m for m in model.modules() if "forward" in m.__dict__]
            packed = model(input_ids=ids).logits
    assert patched == [] and torch.equal(plain, packed)


def test_fast_paths_off_gives_the_same_greedy_outputs(tiny_run):
    """--fast_paths off (transformers' generate on left-padded batches) equals the fast path in fp32."""

    model, tokenizer, prompts, base, _ = _greedy_batch(tiny_run)
    args = replace(base, batch_size=8)
    fast_texts, fast_ids = decoding.generate_batches(model, tokenizer, prompts, args, "cpu", fast=True)
    stock_texts, stock_ids = decoding.generate_batches(model, tokenizer, prompts, args, "cpu", fast=False)
    assert fast_ids == stock_ids and fast_texts == stock_texts
    assert all(len(t[0]) <= base.max_new_tokens for t in stock_ids)
