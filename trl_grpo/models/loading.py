"""Load a tokenizer and a model (with its LoRA adapter, if any) from what locate.py resolved.

    python -c "from trl_grpo.models.loading import load_tokenizer; print(load_tokenizer('ckpts/RUN'))"

``revision``, ``init_kwargs`` (``--model_init_kwargs``), ``chat_template`` and ``template_kwargs``
(``--chat_template_kwargs``, kept on the tokenizer for data/prompts.py ``render_prompt``) are the
model arguments of TRL's ModelConfig and open-r1's recipes.
"""

from __future__ import annotations


def load_tokenizer(
    path: str,
    trust_remote_code: bool = False,
    revision: str | None = None,
    chat_template: str | None = None,
    template_kwargs: dict | None = None,
):
    from transformers import AutoTokenizer

    extra = {"revision": revision} if revision else {}
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.prompt_template_kwargs = dict(template_kwargs or {})  # read by render_prompt
    return tokenizer


def _quantized_device_map(device: str | None) -> dict:
    """Where a quantized model loads: this process's GPU (one per process under a launcher), else ``device``."""
    import torch

    if torch.cuda.is_available() and device in (None, "cuda"):
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": device or "cpu"}


def load_model(
    resolved: dict,
    dtype,
    device: str | None = None,
    trust_remote_code: bool = False,
    merge: bool = True,
    attn_implementation: str | None = None,
    revision: str | None = None,
    init_kwargs: dict | None = None,
    quantization=None,
    trainable: bool = False,
):
    """Load the base weights (safetensors only), attach the adapter if any, and move to ``device``.

    ``quantization``: a ``BitsAndBytesConfig`` (the base loads quantized, on ``device`` or the process's own
    GPU); ``trainable``: the adapter is attached to be trained on (never merged)."""
    from transformers import AutoModelForCausalLM

    extra = dict(init_kwargs or {})  # settings/checks.py refuses keys that the arguments below set
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    if revision:
        extra["revision"] = revision
    if quantization is not None:
        extra["quantization_config"] = quantization
        extra["device_map"] = _quantized_device_map(device)
    model = AutoModelForCausalLM.from_pretrained(
        resolved["base"], dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **extra
    )
    if resolved.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved["adapter"], is_trainable=trainable)
        if merge and not trainable:  # generation runs faster without the LoRA side path
            model = model.merge_and_unload()
    if device and quantization is None:  # a quantized model is placed as it loads and cannot be moved
        model = model.to(device)
    return model
