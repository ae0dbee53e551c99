"""Model arguments as TRL's ModelConfig and open-r1's recipes spell them: a chat template and its
arguments, more from_pretrained arguments, the attention kernel, a revision; in training and eval."""

import json
import os

import pytest

import main
from conftest import TINY_TRAIN_FLAGS
from trl_grpo.settings import resolve

# A template that writes "HI" only when told to (as Qwen3's reads enable_thinking).
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if greet %}HI {% endif %}<|im_start|>assistant\n"
)


def _refused(argv, capsys=None):
    with pytest.raises(SystemExit) as err:
        resolve.parse("train", argv)
    said = str(err.value) if str(err.value) != "2" else capsys.readouterr().err.strip()  # argparse's own line
    assert len(said.splitlines()) == 1
    return said


def test_the_chat_template_and_its_arguments_reach_every_prompt(tiny_model_dir, tmp_path):
    (tmp_path / "t.jinja").write_text(TEMPLATE)
    out = str(tmp_path / "run")
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    flags += ["--chat_template", f"@{tmp_path / 't.jinja'}", "--chat_template_kwargs", "{greet: true}"]
    assert main.main([*flags, "--output_dir", out]) == 0
    with open(os.path.join(out, "run_config.json")) as f:
        recorded = json.load(f)["args"]
    assert recorded["chat_template"] == TEMPLATE and recorded["chat_template_kwargs"] == {"greet": True}
    with open(os.path.join(out, "completions.jsonl")) as f:
        prompts = [json.loads(line)["prompt"] for line in f if '"prompt"' in line]
    assert prompts and all("HI <|im_start|>assistant" in p and p.endswith("<think>") for p in prompts)
    from trl_grpo.evaluation import pipeline

    result = str(tmp_path / "e.json")  # eval.py on the run: the run's template and arguments
    assert (
        pipeline.main(["--model_dir", out, "--limit", "2", "--max_completion_length", "2", "--output_file", result])
        == 0
    )
    with open(result) as f:
        assert all("HI <|im_start|>assistant" in r["prompt"] for r in json.load(f))


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--attn_implementation", "flash_attention_2"], "needs a CUDA GPU"),
        (["--attn_implementation", "fast"], "expected one of"),
        (["--model_init_kwargs", "{dtype: float16}"], "--model_init_kwargs dtype: set it with --bf16"),
        (["--model_init_kwargs", "[1, 2]"], "expected a mapping"),
        (["--chat_template", "@/no/such/template.jinja"], "--chat_template @/no/such/template.jinja: cannot be read"),
    ],
)
def test_a_model_argument_this_machine_cannot_use_is_one_line(argv, says, capsys):
    import torch

    if torch.cuda.is_available() and "CUDA" in says:
        pytest.skip("a GPU machine can run flash attention kernels")
    assert says in _refused(argv, capsys)


def test_model_arguments_in_a_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model_revision: v1\nmodel_init_kwargs:\n  low_cpu_mem_usage: true\nattn_implementation: eager\n")
    args, _ = resolve.parse("train", ["--config", str(path), "--output_dir", str(tmp_path / "run")])
    assert (args.model_revision, args.model_init_kwargs, args.attn_implementation) == (
        "v1",
        {"low_cpu_mem_usage": True},
        "eager",
    )


def test_eager_attention_and_init_kwargs_train(tiny_model_dir, tmp_path):
    flags = ["--model_id", tiny_model_dir, *TINY_TRAIN_FLAGS, "--max_steps", "1", "--no-preflight"]
    flags += ["--attn_implementation", "eager", "--model_init_kwargs", "{low_cpu_mem_usage: true}"]
    assert main.main([*flags, "--output_dir", str(tmp_path / "run")]) == 0
    with open(tmp_path / "run" / "run_config.json") as f:
        assert json.load(f)["attn_implementation"] == "eager"


def test_today_s_adaptation_is_accepted_under_trls_names(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("use_peft: true\nuse_dora: false\nload_in_4bit: false\n")  # as open-r1 recipes write them
    args, _ = resolve.parse("train", ["--config", str(path), "--output_dir", str(tmp_path / "run")])
    assert args.use_peft is True and args.use_dora is False
