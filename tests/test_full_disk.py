"""A full disk during training or evaluation: one line naming the folder, the space free and needed,
and what to run next; no temporary file, no record cut in half, no half-written checkpoint left."""

import errno
import json
import os

import pytest

from trl_grpo.runs import files, results
from trl_grpo.runs.cli import UsageError
from trl_grpo.runs.control import StopOnSignal, train_with_signal_stop
from trl_grpo.runs.folders import COMPLETE_MARKER

FULL = OSError(errno.ENOSPC, "No space left on device")


def open_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_an_atomic_json_write_on_a_full_disk_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    files.write_json_atomic(str(path), {"a": 1})

    def dump(obj, f, **kw):
        f.write('{"a": ')  # part of it reached the disk
        raise FULL

    monkeypatch.setattr(files.json, "dump", dump)
    with pytest.raises(UsageError) as err:
        files.write_json_atomic(str(path), {"a": 2})
    assert f"the disk holding {tmp_path} is full (" in str(err.value) and "MB free" in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["summary.json"]


def test_a_record_cut_by_a_full_disk_is_taken_back(tmp_path, monkeypatch):
    out = str(tmp_path / "r.json")
    partial = results.PartialResults(out, {"k": 1}, resume=False)
    partial.add(0, {"completion": "first"})
    before = open_text(partial.path)
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise FULL

    monkeypatch.setattr(results.os, "write", half_then_full)
    with pytest.raises(UsageError, match="plus --resume"):
        partial.add(1, {"completion": "second " * 50})
    monkeypatch.undo()
    assert open_text(partial.path) == before  # ends at the last whole record
    assert set(results.PartialResults(out, {"k": 1}, resume=True).records) == {0}


def test_training_on_a_full_disk_is_one_line_with_the_resume_command(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "adapter_model.safetensors").write_bytes(b"x" * 3_000_000)
    (run / "checkpoint-1" / COMPLETE_MARKER).write_text("")

    class Trainer:
        args = type("A", (), {"output_dir": str(run)})()

        def train(self, resume_from_checkpoint=None):
            (run / "checkpoint-2").mkdir()
            (run / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"x" * 10)  # cut short
            raise FULL

    with pytest.raises(UsageError) as err:
        train_with_signal_stop(Trainer(), StopOnSignal(), None)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and f"the disk holding {run} is full" in message
    assert "about 3 MB needed" in message and f"--output_dir {run} --resume_from_checkpoint last" in message
    assert sorted(os.listdir(run)) == ["checkpoint-1"]  # the cut checkpoint is gone, the complete one kept
