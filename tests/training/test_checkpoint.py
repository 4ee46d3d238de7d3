"""Checkpoints: atomic writes (crash mid-write, full disk), safe and checked loading."""

import errno
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from stimulative.models import create_model
from stimulative.training import checkpoint as ckpt
from stimulative.training.callbacks import check_finite_weights
from stimulative.training.run_dir import TrainingError

META = {
    "step": 3,
    "epoch": 0,
    "train_seconds": 1.0,
    "model": "resnet20",
    "num_classes": 10,
    "in_chans": 1,
    "config": {},
}


def _model(num_classes=10, name="resnet20", seed=0):
    torch.manual_seed(seed)
    return create_model(name, num_classes=num_classes, in_chans=1)


def _state():
    return {
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": 3},
        "rng": {"torch": torch.get_rng_state()},
    }


def _save(folder, model=None, step=3):
    ckpt.save_checkpoint(str(folder), model or _model(), _state(), {**META, "step": step})


def _weights_equal(folder, model):
    saved = load_file(os.path.join(folder, "model.safetensors"))
    return all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_save_then_load_round_trips(tmp_path):
    folder = tmp_path / "checkpoint"
    model = _model()
    _save(folder, model)
    assert sorted(os.listdir(folder)) == ["meta.json", "model.safetensors", "state.pt"]
    assert not (tmp_path / "checkpoint.tmp").exists() and not (tmp_path / "checkpoint.old").exists()
    other = _model(seed=1)
    meta = ckpt.load_meta(str(folder))
    ckpt.check_compatible(str(folder), meta, "resnet20", 10, 1)
    ckpt.load_weights(str(folder), other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True))
    assert ckpt.load_state(str(folder))["scheduler"] == {"last_epoch": 3}


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    """A write that fails (ENOSPC) on any of the three files leaves the previous checkpoint
    complete and says so; no temporary folder is left behind."""
    folder = tmp_path / "checkpoint"
    first = _model(seed=0)
    _save(folder, first, step=3)
    calls = []
    real = ckpt._write_file

    def failing(path, data):
        calls.append(path)
        if len(calls) - 1 == fail_at:
            with open(path, "wb") as fh:  # part of the file reached the disk
                fh.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", failing)
    with pytest.raises(
        ckpt.CheckpointError, match=r"at step 7: No space left on device; the previous checkpoint .* is intact"
    ):
        _save(folder, _model(seed=1), step=7)
    assert ckpt.latest_checkpoint(str(folder)) == str(folder)
    assert ckpt.load_meta(str(folder))["step"] == 3
    assert _weights_equal(folder, first)
    assert not (tmp_path / "checkpoint.tmp").exists()


def test_full_disk_on_first_checkpoint_says_none_exists(tmp_path, monkeypatch):
    def failing(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(ckpt, "_write_file", failing)
    with pytest.raises(ckpt.CheckpointError, match="no earlier checkpoint exists"):
        _save(tmp_path / "checkpoint")
    assert ckpt.latest_checkpoint(str(tmp_path / "checkpoint")) is None


def test_crash_between_renames_falls_back_to_old(tmp_path, monkeypatch):
    """Killed after moving the old checkpoint aside and before moving the new one in: the
    old one is found (and a later save cleans up)."""
    folder = tmp_path / "checkpoint"
    first = _model(seed=0)
    _save(folder, first, step=3)
    real = os.replace

    def crash(src, dst):
        real(src, dst)
        if str(dst).endswith(".old"):
            raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(folder, _model(seed=1), step=7)
    monkeypatch.setattr(ckpt.os, "replace", real)
    found = ckpt.latest_checkpoint(str(folder))
    assert found == str(folder) + ".old"
    assert ckpt.load_meta(found)["step"] == 3 and _weights_equal(found, first)
    _save(folder, _model(seed=2), step=9)
    assert ckpt.latest_checkpoint(str(folder)) == str(folder)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_interrupt_during_write_leaves_no_tmp(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint"
    _save(folder, step=3)

    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "_write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(folder, step=7)
    assert not (tmp_path / "checkpoint.tmp").exists()
    assert ckpt.load_meta(str(folder))["step"] == 3


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create the marker file if unpickled


def test_pickle_payload_is_refused_and_never_run(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    marker = tmp_path / "pwned"
    with open(folder / "state.pt", "wb") as fh:
        torch.save({"optimizer": Payload(str(marker)), "scheduler": {}, "rng": {}}, fh)
    with pytest.raises(ckpt.CheckpointError, match=r"refusing to load .*state\.pt.*never unpickled"):
        ckpt.load_state(str(folder))
    assert not marker.exists()


def test_plain_pickle_state_is_refused(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    marker = tmp_path / "pwned"
    with open(folder / "state.pt", "wb") as fh:
        pickle.dump({"optimizer": Payload(str(marker))}, fh)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load_state(str(folder))
    assert not marker.exists()


def test_truncated_weights_are_named(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"weights .*model\.safetensors.* are damaged or truncated"):
        ckpt.load_weights(str(folder), _model())


def test_garbage_weights_are_named(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(ckpt.CheckpointError, match="damaged or truncated"):
        ckpt.load_weights(str(folder), _model())


def test_truncated_state_is_named(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    path = folder / "state.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match=r"state\.pt.* is damaged or truncated"):
        ckpt.load_state(str(folder))


def test_state_without_its_parts_is_refused(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    torch.save({"weights": torch.zeros(2)}, folder / "state.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a stimulative training state"):
        ckpt.load_state(str(folder))


def test_other_number_of_classes_is_named(tmp_path):
    folder = tmp_path / "checkpoint"
    ckpt.save_checkpoint(str(folder), _model(num_classes=100), _state(), {**META, "num_classes": 100})
    meta = ckpt.load_meta(str(folder))
    with pytest.raises(ckpt.CheckpointError, match="number of classes 100, not 10"):
        ckpt.check_compatible(str(folder), meta, "resnet20", 10, 1)
    with pytest.raises(ckpt.CheckpointError, match=r"head.*shape \(100,.*expects \(10,.*number of classes"):
        ckpt.load_weights(str(folder), _model(num_classes=10))


def test_foreign_architecture_is_named(tmp_path):
    folder = tmp_path / "checkpoint"
    ckpt.save_checkpoint(str(folder), _model(name="resnet32"), _state(), {**META, "model": "resnet32"})
    with pytest.raises(ckpt.CheckpointError, match="model 'resnet32', not 'resnet20'"):
        ckpt.check_compatible(str(folder), ckpt.load_meta(str(folder)), "resnet20", 10, 1)
    with pytest.raises(ckpt.CheckpointError, match="another architecture: 0 missing keys .* unexpected"):
        ckpt.load_weights(str(folder), _model())


@pytest.mark.parametrize(
    "content",
    ["", "{", "[1, 2]", json.dumps({"step": "3"}), json.dumps({k: v for k, v in META.items() if k != "model"})],
)
def test_bad_meta_is_named(tmp_path, content):
    folder = tmp_path / "checkpoint"
    _save(folder)
    (folder / "meta.json").write_text(content)
    with pytest.raises(ckpt.CheckpointError, match="meta.json"):
        ckpt.load_meta(str(folder))


def test_missing_files_are_named(tmp_path):
    folder = tmp_path / "checkpoint"
    _save(folder)
    os.remove(folder / "model.safetensors")
    os.remove(folder / "state.pt")
    with pytest.raises(ckpt.CheckpointError, match="cannot read weights"):
        ckpt.load_weights(str(folder), _model())
    with pytest.raises(ckpt.CheckpointError, match="cannot read training state"):
        ckpt.load_state(str(folder))


def test_the_best_epoch_file_reuses_its_checkpoints_file(tmp_path, monkeypatch):
    """After each validated epoch the best weights are the epoch's checkpointed weights (the
    validation's BN re-estimation is undone): the checkpoint's file linked, not serialised a
    second time."""
    from stimulative.cli import main as cli

    serialised = []
    real = ckpt.weights_bytes
    monkeypatch.setattr(ckpt, "weights_bytes", lambda model: serialised.append(1) or real(model))
    out = tmp_path / "run"
    flags = ["--train-fraction", "0.05", "--batch-size", "16", "--eval-subnets", "1", "--calib-images", "32",
             "--no-progress", "--device", "cpu", "--mode", "ct", "--epochs", "1", "--out", str(out)]  # fmt: skip
    assert cli(["train", *flags]) == 0
    assert len(serialised) == 1  # the one checkpoint
    best = (out / "best.safetensors").read_bytes()
    assert best == (out / "checkpoint" / "model.safetensors").read_bytes()
    assert best == real(_loaded(out / "best.safetensors"))  # and the bytes are the weights themselves
    assert os.path.samefile(out / "best.safetensors", out / "checkpoint" / "model.safetensors")


def test_best_weights_outlive_the_checkpoint_they_link(tmp_path):
    """A later checkpoint replaces the folder (renames, never writes in place): the linked
    best weights keep the earlier content."""
    folder, best = tmp_path / "checkpoint", str(tmp_path / "best.safetensors")
    early, late = _model(seed=0), _model(seed=1)
    _save(folder, early)
    ckpt.save_weights(early, best, str(folder / ckpt.WEIGHTS_FILE))
    _save(folder, late, step=4)
    assert _loaded(best).state_dict().keys() == early.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(_loaded(best).state_dict().values(), early.state_dict().values()))
    assert not os.path.samefile(best, folder / ckpt.WEIGHTS_FILE)


def test_best_weights_are_written_where_links_are_refused(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", refuse)
    folder, best = tmp_path / "checkpoint", tmp_path / "best.safetensors"
    model = _model()
    _save(folder, model)
    ckpt.save_weights(model, str(best), str(folder / ckpt.WEIGHTS_FILE))
    assert best.read_bytes() == (folder / ckpt.WEIGHTS_FILE).read_bytes()
    assert not os.path.samefile(best, folder / ckpt.WEIGHTS_FILE)


def _loaded(path):
    model = _model()
    model.load_state_dict(load_file(str(path)))
    return model


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_named(bad):
    model = _model()
    name = [n for n, p in model.state_dict().items() if p.is_floating_point()][-3]
    model.state_dict()[name].view(-1)[0] = bad
    with pytest.raises(TrainingError, match=rf"non-finite value in {name} at step 7"):
        check_finite_weights(model, 7)


def test_finite_weights_too_large_to_sum_pass():
    """The one sum over all weights overflows here; the weights are finite, so no error."""
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(torch.finfo(p.dtype).max)
    check_finite_weights(model, 7)
