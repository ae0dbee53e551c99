"""Shared fixtures: a tiny Llama with a small tokenizer in the embedded model's image, and one tiny trained run."""

import os
import sys

# Under pytest-xdist every worker gets one core's worth of threads: two torch processes each
# spinning two OpenMP threads on two cores slow each other several-fold. Set before torch loads;
# subprocesses the tests start inherit it.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Flags for a seconds-long run of the tiny model: 2 steps, 2 prompts x 2 completions of 8 tokens.
TINY_TRAIN_FLAGS = [
    "--dataset_id",
    "builtin:1",
    "--train_split",
    "train[:16]",
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "4",
    "--num_generations",
    "2",
    "--max_completion_length",
    "8",
    "--report_to",
    "none",
    "--save_steps",
    "1",
    "--learning_rate",
    "1e-2",
]


def pytest_collection_modifyitems(config, items):
    """The slow tests first: a worker that picks one up near the end would keep the others waiting."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def small_tokenizer(source):
    """A byte-level BPE tokenizer like ``source`` (same special tokens at the same ids, same
    pre-tokenizer, decoder and chat template) with merges learned from the built-in problems and
    the prompts only: ~950 tokens instead of 49,152. The tiny model's LM head and every log-prob
    over the vocabulary shrink with it, which is most of a tiny training's compute."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trl_grpo.data import builtin, prompts

    specials = [source.added_tokens_decoder[i].content for i in sorted(source.added_tokens_decoder)]
    backend = source.backend_tokenizer
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = backend.pre_tokenizer, backend.decoder
    texts = [f"{r['problem']}\n{r['solution']}" for r in builtin.builtin_records()["train"][::8]]
    texts += [prompts.system_prompt(name) for name in prompts.PROMPT_TEMPLATES]
    texts += ["system user assistant <think> </think> <answer> </answer>"]
    # Every byte is a token (as in any byte-level BPE), so any text still encodes.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=2048, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=source.bos_token,
        eos_token=source.eos_token,
        pad_token=source.pad_token,
        unk_token=source.unk_token,
        chat_template=source.chat_template,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, 32-wide Llama (random weights) saved with a small tokenizer made in the image of
    SmolLM2's (``small_tokenizer``: its special tokens, pre-tokenizer and chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from trl_grpo.models import locate

    # The converted copy's tokenizer loads in 0.3 s; from the GGUF file it takes ~9 s.
    tokenizer = small_tokenizer(AutoTokenizer.from_pretrained(locate.ensure_embedded_model()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir, tmp_path_factory):
    """A finished 2-step training run of the tiny model, through main.py's own argument parsing."""
    import main

    out = str(tmp_path_factory.mktemp("runs") / "tiny-run")
    assert main.main(["--model_id", tiny_model_dir, "--output_dir", out, *TINY_TRAIN_FLAGS]) == 0
    return out


def tiny_trainer(tiny_model_dir, tmp_path, *extra):
    """A GRPO trainer of the tiny model (fast paths on by default), LoRA B randomized."""
    import torch

    import train
    from trl_grpo.settings import flags

    args = flags.build_parser("train").parse_args(
        ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--save_strategy", "no", *extra]
    )
    trainer, _, _ = train.build_trainer(args, str(tmp_path / "run"))
    torch.manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero, which would hide a wrong adapter path
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return trainer
