"""Load a tokenizer and a model (with its LoRA adapter, if any) from what locate.py resolved.

python -c "from trl_grpo.models.loading import load_tokenizer; print(load_tokenizer('ckpts/RUN'))"
"""

from __future__ import annotations


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    resolved: dict,
    dtype,
    device: str | None = None,
    trust_remote_code: bool = False,
    merge: bool = True,
    attn_implementation: str | None = None,
):
    """Load the base weights (safetensors only), attach the adapter if any, and move to ``device``."""
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(
        resolved["base"], dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **extra
    )
    if resolved.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved["adapter"])
        if merge:  # generation runs faster without the LoRA side path
            model = model.merge_and_unload()
    if device:
        model = model.to(device)
    return model
