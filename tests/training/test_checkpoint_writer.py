"""The trainer's checkpoints: written on the training thread, made durable and swapped in on
a worker thread, waited for before the next one and before anything reads the folder."""

import errno
import os
import threading

import pytest
import torch

from stimulative.models import create_model
from stimulative.training import checkpoint as ckpt
from stimulative.training import checkpoint_writer
from stimulative.training.checkpoint_writer import CheckpointWriter

META = {"step": 3, "epoch": 0, "model": "resnet20", "num_classes": 10, "in_chans": 1, "config": {}}
STATE = {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "rng": {}}


def _model(seed):
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=10, in_chans=1)


def _same_weights(folder, model):
    other = _model(99)
    ckpt.load_weights(str(folder), other)
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_the_commit_runs_on_a_worker_thread_and_is_in_place_after_wait(tmp_path, monkeypatch):
    synced_on = []
    real = ckpt._fsync
    monkeypatch.setattr(ckpt, "_fsync", lambda path: synced_on.append(threading.current_thread()) or real(path))
    folder, model = tmp_path / "checkpoint", _model(0)
    writer = CheckpointWriter(str(folder))
    weights = writer.save(model, STATE, META)
    writer.wait()
    assert weights == str(folder / ckpt.WEIGHTS_FILE) and os.path.isfile(weights)
    assert synced_on and threading.main_thread() not in synced_on
    assert ckpt.load_meta(str(folder))["step"] == 3 and _same_weights(folder, model)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_a_failed_commit_is_raised_by_wait_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    folder, first = tmp_path / "checkpoint", _model(0)
    writer = CheckpointWriter(str(folder))
    writer.save(first, STATE, META)
    writer.wait()

    def full(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(ckpt, "_fsync", full)  # a network file system reports a full disk at fsync
    writer.save(_model(1), STATE, {**META, "step": 7})
    with pytest.raises(ckpt.CheckpointError, match=r"at step 7: No space left on device; the previous checkpoint"):
        writer.wait()
    writer.wait()  # raised once
    assert ckpt.load_meta(str(folder))["step"] == 3 and _same_weights(folder, first)
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_the_next_checkpoint_is_staged_only_after_the_last_commit(tmp_path, monkeypatch):
    """The first commit holds until the second checkpoint is staged or half a second passes:
    staged before it finished, the order would show it."""
    events, released = [], threading.Event()
    real_stage, real_commit = checkpoint_writer.stage_checkpoint, checkpoint_writer.commit_checkpoint

    def stage(folder, files, step):
        events.append(("stage", step))
        if step == 7:
            released.set()
        real_stage(folder, files, step)

    def commit(folder, step):
        released.wait(timeout=0.5)
        real_commit(folder, step)
        events.append(("committed", step))

    monkeypatch.setattr(checkpoint_writer, "stage_checkpoint", stage)
    monkeypatch.setattr(checkpoint_writer, "commit_checkpoint", commit)
    writer, last = CheckpointWriter(str(tmp_path / "checkpoint")), _model(1)
    writer.save(_model(0), STATE, META)
    writer.save(last, STATE, {**META, "step": 7})
    writer.wait()
    assert events == [("stage", 3), ("committed", 3), ("stage", 7), ("committed", 7)]
    assert ckpt.load_meta(str(tmp_path / "checkpoint"))["step"] == 7 and _same_weights(tmp_path / "checkpoint", last)
