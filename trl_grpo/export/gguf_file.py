"""A merged model as one GGUF file for llama.cpp, Ollama and LM Studio: weights, the model's shape, the
tokenizer and its chat template in the file's metadata. Written with the ``gguf`` package (its writer and
its tensor-name maps), as llama.cpp's own converter lays such a file out.

    python export.py ckpts/RUN --gguf out/model.gguf                    # f16
    python export.py ckpts/RUN --gguf out/model-q8.gguf --gguf_type q8_0

Covered: the Llama and Qwen2 families with a byte-level BPE tokenizer (SmolLM2, Llama 3, Qwen2/2.5);
anything else is refused by name. transformers reads the file back (``gguf_file=``): the tests compare
its logits with the merged model's.
"""

from __future__ import annotations

import json

import numpy as np

from trl_grpo.export.merged import ExportError

GGUF_TYPES = ("f16", "q8_0")
# model_type -> (gguf architecture name, q/k weights permuted as llama.cpp's rotary layout wants)
ARCHITECTURES = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (its rotary embedding pairs rows differently from transformers')."""
    dim = weights.shape[0] // heads // 2
    return weights.reshape(heads, 2, dim, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _pre_tokenizer(model_type: str, tokenizer) -> str:
    if model_type == "qwen2":
        return "qwen2"
    if "<|im_start|>" in tokenizer.get_vocab() and len(tokenizer) <= 49152 + 64:  # SmolLM/SmolLM2's tokenizer
        return "smollm"
    return "llama-bpe"


def _tokenizer_fields(tokenizer, vocab_size: int) -> dict:
    """Token strings, types and merges of a byte-level BPE tokenizer, padded to the model's vocabulary."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    pre = state.get("pre_tokenizer") or {}
    byte_level = any(p.get("type") == "ByteLevel" for p in [pre, *pre.get("pretokenizers", [])] if p)
    if model.get("type") != "BPE" or not byte_level:
        raise ExportError(
            "GGUF export covers byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen2); this model's tokenizer is "
            f"{model.get('type')!r}. Export --merged and convert it with llama.cpp's convert_hf_to_gguf.py."
        )
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        kind = gguf.TokenType.NORMAL
        if i in special or (i in added and tokenizer.added_tokens_decoder[i].special):
            kind = gguf.TokenType.CONTROL
        elif i in added:
            kind = gguf.TokenType.USER_DEFINED
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges}


def check_config(config: dict) -> None:
    """``ExportError`` for a model this writer does not cover: another architecture, or rotary scaling
    (Llama 3.1's, YaRN) that llama.cpp reads from keys and a tensor this writer does not write."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ExportError(
            f"--gguf: the model's architecture {model_type!r} is not covered (this export writes "
            f"{', '.join(sorted(ARCHITECTURES))}). Export --merged and convert that with llama.cpp's "
            "convert_hf_to_gguf.py."
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise ExportError(
            f"--gguf: the model scales its rotary embedding ({kind!r}), which this export does not write. Export "
            "--merged and convert that with llama.cpp's convert_hf_to_gguf.py."
        )


def write_gguf(model, tokenizer, path: str, gguf_type: str = "f16", name: str = "model") -> dict:
    """Write ``model`` (a merged transformers model) and ``tokenizer`` to ``path``; returns what was written."""
    import gguf
    import torch

    config = model.config
    check_config(config.to_dict())
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"--gguf_type {gguf_type!r}: expected one of {', '.join(GGUF_TYPES)}.")
    arch_name, permute = ARCHITECTURES[config.model_type]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    fields = _tokenizer_fields(tokenizer, config.vocab_size)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_theta") or getattr(config, "rope_theta", 10000.0)
    writer.add_rope_freq_base(float(rope))
    writer.add_vocab_size(config.vocab_size)
    qtype = gguf.GGMLQuantizationType.F16 if gguf_type == "f16" else gguf.GGMLQuantizationType.Q8_0
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(config.model_type, tokenizer))
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    for key, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id)):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(value)
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    if tokenizer.unk_token_id is not None:
        writer.add_unk_token_id(tokenizer.unk_token_id)
    # what the tokenizer does, not its flag (transformers 5's Llama 3 adds BOS in its post-processor)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    writer.add_add_bos_token(adds_bos)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    counts = {"tensors": 0, "quantized": 0}
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reads the embeddings as the output layer when output.weight is absent
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ExportError(f"--gguf: no GGUF name for the tensor {hf_name!r} of this {config.model_type} model.")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if permute and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            data = _permute(data, heads if "q_proj" in hf_name else kv_heads)
        if data.ndim == 1:  # norms and biases stay in f32, as llama.cpp keeps them
            writer.add_tensor(new, data)
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
            writer.add_tensor(new, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            counts["quantized"] += 1
        else:
            writer.add_tensor(new, data.astype(np.float16))
        counts["tensors"] += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"path": path, "type": gguf_type, "architecture": gguf.MODEL_ARCH_NAMES[arch], **counts}
