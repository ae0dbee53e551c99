"""export.py: the merged model generates what the adapter on its base generates, the GGUF file reads back
through transformers with the same tokenizer and close logits, the card carries the run's evaluations and
survives hostile text, and every bad input is one line with nothing on disk replaced."""

import json
import os
import shutil

import pytest
import torch
import yaml

from trl_grpo.export import card, command, gguf_file
from trl_grpo.runs.cli import UsageError

# f16 weights: the largest logit difference stays under this share of the logits' spread (measured on the
# embedded model's export: 0.039 against a standard deviation of 5.36, 0.7%).
F16_TOLERANCE = 0.02
Q8_TOLERANCE = 0.08


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    argv = [tiny_run, "--merged", str(out / "merged"), "--gguf", str(out / "model.gguf"), "--results_dir", str(out)]
    assert command.main(argv) == 0
    return out


def _front_matter(text: str) -> dict:
    """The card's metadata as the hub reads it: from the first line ``---`` to the next line that is ``---``."""
    lines = text.splitlines()
    assert lines[0] == "---"
    end = lines.index("---", 1)
    return yaml.safe_load("\n".join(lines[1:end]))


def _prompts(tokenizer, n=16):
    from trl_grpo.data import builtin

    rows = builtin.builtin_records()["test"][:n]
    return [tokenizer.apply_chat_template([{"role": "user", "content": r["problem"]}], tokenize=False) for r in rows]


def test_the_merged_model_generates_what_the_adapter_on_its_base_generates(tiny_run, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grpo.models import loading, locate

    merged = AutoModelForCausalLM.from_pretrained(exported / "merged", dtype=torch.float32)  # no PEFT involved
    adapter = loading.load_model(locate.resolve_model(tiny_run), torch.float32, merge=False)
    assert hasattr(adapter, "peft_config") and not hasattr(merged, "peft_config")
    tokenizer = AutoTokenizer.from_pretrained(exported / "merged")
    tokenizer.padding_side = "left"
    batch = tokenizer(_prompts(tokenizer), return_tensors="pt", padding=True, add_special_tokens=False)
    settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        ours, theirs = merged.generate(**batch, **settings), adapter.generate(**batch, **settings)
    assert ours.shape[0] == 16 and torch.equal(ours, theirs)
    for name in ("model.safetensors", "config.json", "generation_config.json", "chat_template.jinja", "README.md"):
        assert (exported / "merged" / name).is_file(), name
    assert not (exported / "merged" / "adapter_config.json").exists()


@pytest.mark.parametrize("kind, tolerance", [("f16", F16_TOLERANCE), ("q8_0", Q8_TOLERANCE)])
def test_the_gguf_file_reads_back_with_its_tokenizer_and_close_logits(exported, tmp_path, kind, tolerance):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = exported / "model.gguf" if kind == "f16" else tmp_path / f"model-{kind}.gguf"  # f16: export.py's
    merged = AutoModelForCausalLM.from_pretrained(exported / "merged", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(exported / "merged")
    if kind != "f16":
        gguf_file.write_gguf(merged, tokenizer, str(path), kind)
    back = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    back_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = _prompts(tokenizer, 1)[0] + "<think>7 + 5 = 12</think><answer>\\boxed{12}</answer> Ünïcode ≈ 😀"
    assert back_tokenizer(text).input_ids == tokenizer(text).input_ids
    assert back_tokenizer.chat_template == tokenizer.chat_template
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        want, got = merged(ids).logits, back(ids).logits
    assert (want - got).abs().max() <= tolerance * want.std()


def test_the_card_has_the_runs_evaluations_in_its_model_index(tiny_run, tmp_path):
    from trl_grpo.evaluation import pipeline

    results = tmp_path / "results"
    result = str(results / "tiny.json")
    argv = ["--model_dir", tiny_run, "--limit", "4", "--max_completion_length", "4", "--output_file", result]
    assert pipeline.main(argv) == 0
    other = {**json.loads((results / "tiny.summary.json").read_text()), "accuracy": 0.99}
    other["settings"] = {**other["settings"], "weights": "adapter sha256 0000; other weights"}
    (results / "other.summary.json").write_text(json.dumps(other))  # the same path, other weights: left out
    out = tmp_path / "m"
    assert command.main([tiny_run, "--merged", str(out), "--results_dir", str(results), "--name", "tiny"]) == 0
    text = (out / "README.md").read_text()
    meta = _front_matter(text)
    (entry,) = meta["model-index"]
    assert len(entry["results"]) == 1  # not the summary of other weights under the same path
    metric = entry["results"][0]["metrics"][0]
    summary = json.loads((results / "tiny.summary.json").read_text())
    assert entry["name"] == "tiny" and metric["type"] == "accuracy" and metric["value"] == summary["accuracy"]
    assert "| builtin:1 | test | 4 |" in text and "tiny.summary.json" in text
    assert "<think>reasoning</think><answer>\\boxed{final answer}</answer>" in text


def test_hostile_text_stays_inside_the_card(tiny_run, tmp_path):
    with open(os.path.join(tiny_run, "run_config.json")) as f:
        record = json.load(f)
    record["args"]["dataset_id"] = "evil|data\n---\nbase_model: hijacked"
    src = {"folder": tiny_run, "run": tiny_run, "record": record, "adapter": True}
    prompt = "Answer in ```` fences ``` and close\n---\n"
    card.write_card(str(tmp_path), src, "x\n# y", str(tmp_path), prompt, merged=True)
    text = (tmp_path / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["datasets"] == ["evil|data\n---\nbase_model: hijacked"]
    assert "hijacked" not in str(meta.get("base_model")) and "\n# y" not in text  # no heading smuggled in
    assert "`````text\n" + prompt + "\n`````" in text


def test_an_unreachable_hub_is_one_line_after_the_local_export(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "m"
    with pytest.raises(UsageError) as refused:
        command.main([tiny_run, "--merged", str(out), "--push_to_hub", "someone/tiny"])
    message = str(refused.value)
    assert "--push_to_hub someone/tiny: the upload failed" in message and "local exports above are complete" in message
    assert "\n" not in message
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()


def test_bad_inputs_are_one_line_and_replace_nothing(tiny_run, tmp_path):
    def refused(argv) -> str:
        with pytest.raises(UsageError) as err:
            command.main(argv)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "nothing to export" in refused([tiny_run])
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "is not part of a run" in refused([str(plain), "--merged", str(tmp_path / "m")])
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert "exists; choose another path, or --overwrite" in refused([tiny_run, "--merged", str(taken)])
    existing = tmp_path / "old.gguf"
    existing.write_text("mine")
    assert "exists" in refused([tiny_run, "--gguf", str(existing)])
    assert (taken / "keep.txt").read_text() == "mine" and existing.read_text() == "mine"
    assert "expected OWNER/NAME" in refused([tiny_run, "--push_to_hub", "noslash"])
    assert "inside the run folder" in refused([tiny_run, "--merged", os.path.join(tiny_run, "export")])
    shutil.rmtree(os.path.join(tiny_run, "export"), ignore_errors=True)


def test_an_architecture_gguf_does_not_cover_is_refused_by_name(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(gguf_file.ExportError, match="architecture 'gpt2' is not covered"):
        gguf_file.write_gguf(model, AutoTokenizer, str(tmp_path / "x.gguf"))


def test_an_export_never_replaces_the_run_or_a_folder_of_the_users(tiny_run, tmp_path):
    for target, says in ((tiny_run, "is or holds"), (os.path.dirname(tiny_run), "is or holds")):
        with pytest.raises(UsageError, match=says):
            command.main([os.path.join(tiny_run, "checkpoint-2"), "--merged", target, "--overwrite"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an earlier export of this tool"):
        command.main([tiny_run, "--merged", str(mine), "--overwrite"])
    assert (mine / "notes.txt").read_text() == "mine" and os.path.isfile(os.path.join(tiny_run, "run_config.json"))
    with pytest.raises(UsageError, match="inside the run folder"):
        command.main([tiny_run, "--gguf", os.path.join(tiny_run, "model.gguf")])


def test_rotary_scaling_gguf_does_not_write_is_refused():
    with pytest.raises(gguf_file.ExportError, match="scales its rotary embedding \\('llama3'\\)"):
        gguf_file.check_config({"model_type": "llama", "rope_parameters": {"rope_type": "llama3", "factor": 8.0}})
    gguf_file.check_config({"model_type": "qwen2", "rope_parameters": {"rope_type": "default"}})
