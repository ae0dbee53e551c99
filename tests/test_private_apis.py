"""Contracts of the private APIs the speed paths rely on: one test per API, named after it.

An upgrade inside the ranges of requirements.txt can change a private API without notice; each
test here fails with the package, what changed and which of our code depends on it, so the fix
(or the pin) is obvious. Every speed path also falls back to the stock path at run time.
"""

import inspect
import re

import pytest
import torch


def _broke(package: str, what: str, used_by: str) -> str:
    import importlib.metadata as md

    return f"{package} {md.version(package)} changed {what}; {used_by} relies on it: adapt it or pin {package}."


def test_transformers_DynamicLayer_state():  # noqa: N802 - named after the API
    from transformers.cache_utils import DynamicLayer

    layer = DynamicLayer()
    assert hasattr(layer, "is_initialized") and not layer.is_initialized, _broke(
        "transformers", "DynamicLayer.is_initialized", "kv_cache.ReservedLayer"
    )
    k = torch.randn(2, 1, 3, 4)
    keys, values = layer.update(k, k.clone())
    for name in ("keys", "values", "device"):
        assert hasattr(layer, name), _broke("transformers", f"DynamicLayer.{name}", "kv_cache.ReservedLayer")
    assert layer.get_seq_length() == 3 and torch.equal(keys, k), _broke(
        "transformers", "DynamicLayer.update/get_seq_length", "kv_cache.ReservedLayer"
    )
    for method in ("batch_select_indices", "batch_repeat_interleave"):
        assert callable(getattr(layer, method, None)), _broke("transformers", f"DynamicLayer.{method}", "decoding")


def test_transformers_DynamicCache_layers():  # noqa: N802
    from transformers import DynamicCache, LlamaConfig

    cache = DynamicCache(config=LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2))
    assert isinstance(getattr(cache, "layers", None), list), _broke(
        "transformers", "DynamicCache.layers", "decoding.decode_compacting (swaps in ReservedLayer)"
    )


def test_transformers_AttentionInterface_register():  # noqa: N802
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    assert callable(AttentionInterface.register) and callable(AttentionMaskInterface.register), _broke(
        "transformers", "AttentionInterface/AttentionMaskInterface.register", "kv_cache.pick_attention"
    )
    params = list(inspect.signature(sdpa_attention_forward).parameters)
    assert params[:5] == ["module", "query", "key", "value", "attention_mask"], _broke(
        "transformers", "sdpa_attention_forward's arguments", "kv_cache._sdpa_cpu_fp32"
    )
    assert callable(sdpa_mask)


def test_peft_LoraLinear_internals():  # noqa: N802
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.layer import Linear as LoraLinear
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(
        LlamaConfig(num_hidden_layers=1, hidden_size=8, intermediate_size=16, num_attention_heads=2, vocab_size=32)
    )
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    for name in ("_disable_adapters", "merged", "use_dora", "active_adapters", "base_layer", "get_delta_weight"):
        assert hasattr(layer, name), _broke("peft", f"lora.Linear.{name}", "merged_weights.generation_weights")
    layer._disable_adapters = True
    assert layer.disable_adapters, _broke(
        "peft", "what _disable_adapters switches", "merged_weights.generation_weights"
    )


def test_torch_ops_mkldnn_reorder_linear_weight():
    ops = torch.ops.mkldnn
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build: packed_linears is a no-op here")
    weight, x = torch.randn(6, 4), torch.randn(3, 4)
    packed = ops._reorder_linear_weight(weight, 64)
    out = ops._linear_pointwise(x, packed, None, "none", [], "")
    assert torch.allclose(out, x @ weight.T, atol=1e-5), _broke(
        "torch", "mkldnn._reorder_linear_weight/_linear_pointwise", "merged_weights.packed_linears"
    )


def test_trl_GRPOTrainer_get_per_token_logps_and_entropies():  # noqa: N802
    from trl import GRPOTrainer

    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    want = ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy"]
    assert params[: len(want)] == want, _broke(
        "trl", "GRPOTrainer._get_per_token_logps_and_entropies's arguments", "packed_logps.FastLogpsTrainer"
    )
    from transformers import Trainer

    for attribute in ("is_deepspeed_enabled", "is_fsdp_enabled"):  # the gate reads them
        assert f"self.{attribute} =" in inspect.getsource(Trainer), _broke(
            "transformers", f"Trainer.{attribute}", "packed_logps.FastLogpsTrainer._fast_logps_ok"
        )


def test_trl_GRPOTrainer_generate_and_score_completions_and_logs():  # noqa: N802
    """telemetry.TelemetryMixin reads the scored batch from these."""
    from trl import GRPOTrainer

    assert callable(getattr(GRPOTrainer, "_generate_and_score_completions", None)), _broke(
        "trl", "GRPOTrainer._generate_and_score_completions", "telemetry.TelemetryMixin"
    )
    source = inspect.getsource(GRPOTrainer)
    for piece in (
        'self._logs["prompt"]',
        'self._logs["completion"]',
        'self._logs["rewards"]',
        'self._logs["advantages"]',
    ):
        assert piece in source, _broke("trl", f"GRPOTrainer {piece}", "telemetry.TelemetryMixin")
    for piece in ('"completion_ids"', '"completion_mask"', "self._metrics[mode]", "self.num_generations"):
        assert piece in source, _broke("trl", f"GRPOTrainer's {piece}", "telemetry.TelemetryMixin")


def test_trl_ChunkedLogProbFunction_apply():  # noqa: N802
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    hidden, weight, ids = torch.randn(5, 4), torch.randn(7, 4), torch.tensor([1, 2, 3, 4, 5])
    logps, entropy, *_ = ChunkedLogProbFunction.apply(
        hidden, weight, None, ids, 1.0, 32768, None, 1.0, ("log_probs", "entropy")
    )
    want = torch.log_softmax(hidden @ weight.T, -1).gather(-1, ids[:, None]).squeeze(-1)
    assert torch.allclose(logps, want, atol=1e-5), _broke(
        "trl", "ChunkedLogProbFunction.apply's positional arguments or outputs", "packed_logps.shared_prefix_logps"
    )
    assert entropy.shape == (5,)


def test_trl_ChunkedLogProbFunction_backward_state():  # noqa: N802
    """lm_head.LeanChunkedLogProb reimplements the CPU backward from what the forward keeps."""
    from trl.kernels import chunked_logprob

    seen = {}

    class Probe(chunked_logprob.ChunkedLogProbFunction):
        @staticmethod
        def backward(ctx, *grads):
            seen.update(ctx.kernel_args, saved=len(ctx.saved_tensors), dtype=ctx.compute_dtype, chunk=ctx.chunk_size)
            return (None,) * 9

    hidden = torch.randn(3, 4, requires_grad=True)
    logps, *_ = Probe.apply(
        hidden, torch.randn(7, 4), None, torch.tensor([1, 2, 3]), 1.0, 64, None, 1.0, ("log_probs",)
    )
    logps.sum().backward()
    want = {"logit_scale", "softcap", "inv_t", "HAS_SOFTCAP", "saved", "dtype", "chunk"}
    assert want <= set(seen) and seen["saved"] == 6 and seen["chunk"] == 64, _broke(
        "trl",
        "ChunkedLogProbFunction's saved tensors or ctx.kernel_args/compute_dtype/chunk_size",
        "lm_head.py",
    )
    assert isinstance(chunked_logprob.TOKEN_CHUNK_SIZE, int), _broke("trl", "TOKEN_CHUNK_SIZE", "lm_head.py")
    params = list(inspect.signature(chunked_logprob._forward_tile).parameters)
    assert params[:12] == [
        "tile",
        "tile_stride",
        "targets",
        "running_max",
        "sum_exp",
        "x_sum_exp",
        "sq_sum_exp",
        "z_sum",
        "max_before_target",
        "target_logit",
        "vocab_start",
        "n_cols",
    ] and {"HAS_ENTROPY", "HAS_IS_TOP1", "BLOCK_SIZE"} <= set(params), _broke(
        "trl", "_forward_tile's arguments", "lm_head.LeanChunkedLogProb.forward"
    )


def test_trl_GRPOConfig_loss_type_help():  # noqa: N802
    from trl_grpo.settings import checks

    accepted = checks.trl_loss_types()
    assert accepted and {"grpo", "dapo", "dr_grpo", "bnpo"} <= set(accepted), _broke(
        "trl", "GRPOConfig.loss_type's help text ('Supported values are ...')", "checks.check_train's --loss_type check"
    )


def test_accelerate_original_forward_and_autocast_handler():
    """In a fresh process: accelerate's state is a singleton the other tests have set up already."""
    import subprocess
    import sys

    code = (
        "import torch; from accelerate import Accelerator; from accelerate.utils import AutocastKwargs\n"
        "a = Accelerator(cpu=True, mixed_precision='bf16'); m = a.prepare(torch.nn.Linear(2, 2))\n"
        "assert hasattr(m, '_original_forward'), 'the _original_forward a mixed-precision model keeps'\n"
        "assert hasattr(a, 'autocast_handler') and callable(AutocastKwargs), 'Accelerator.autocast_handler'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, _broke(
        "accelerate", done.stderr.strip().splitlines()[-1], "packed_logps._check_fast_logps"
    )


def test_torch_Tensor__version():  # noqa: N802
    """merged_weights.FrozenCasts remakes a weight's copy when the weight changed in place: it reads
    the tensor's version counter, which every in-place op bumps."""
    w = torch.zeros(3)
    before = w._version
    with torch.no_grad():
        w.add_(1)
    assert w._version > before, _broke("torch", "Tensor._version (in-place counter)", "merged_weights.FrozenCasts")


def test_trl_SFTTrainer_total_train_tokens_and_metrics():  # noqa: N802
    from trl import SFTTrainer

    source = inspect.getsource(SFTTrainer.compute_loss)
    for name in ("self._total_train_tokens", 'self._metrics[mode]["mean_token_accuracy"]', "outputs.label_mask"):
        assert name in source, _broke("trl", f"SFTTrainer.compute_loss's {name}", "packed_sft.FastSFTTrainer")
    for name in ("aux_loss_enabled", "label_smoother", "compute_loss_func"):
        assert name in source, _broke("trl", f"SFTTrainer.compute_loss's use of {name}", "packed_sft._fast_ok")


def test_every_private_name_we_use_has_a_contract_test():
    """A new private API in the speed code must come with a test here."""
    import os

    from conftest import ROOT

    used = set()
    speed_code = [os.path.join(ROOT, "trl_grpo", "observe", "telemetry.py")]
    for folder in ("fast", "models"):  # found by folder: a new speed module is read without a list
        where = os.path.join(ROOT, "trl_grpo", folder)
        speed_code += [os.path.join(where, n) for n in sorted(os.listdir(where)) if n.endswith(".py")]
    for path in speed_code:
        with open(path) as f:
            used |= set(re.findall(r"\.(_[a-z][a-z_]+)\b", f.read()))
    ours = {
        "_adopt",
        "_views",
        "_fast",
        "_decode",
        "_fast_logps",
        "_fast_logps_ok",
        "_check_fast_logps",
        "_fast_checked",
        "_start",
        "_sdpa_cpu_fp32",
        "_read_config",
        "_check_model_dir",
        "_embedded_gguf_path",
        "_disable_adapters",
        "_observe",
        "_telemetry_failed",
        "_non_finite_seen",
        "_keep_until",
        "_plan",
        "_lean",
        "_step",
        "_prefill",
        "_check",
        "_fast_loss",
        "_fast_ok",
        "_dropout",
    }
    tested = {
        "_get_per_token_logps_and_entropies",
        "_original_forward",
        "_reorder_linear_weight",
        "_linear_pointwise",
        "_disable_adapters",
        "_generate_and_score_completions",
        "_logs",
        "_metrics",
        "_version",
        "_forward_tile",
        "_total_train_tokens",
    }
    assert used - ours - tested == set(), f"private names without a contract test: {sorted(used - ours - tested)}"
