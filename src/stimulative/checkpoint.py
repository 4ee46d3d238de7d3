"""Checkpoints that are never half-written and never unpickle untrusted code.

A checkpoint is a folder: ``model.safetensors`` (weights), ``state.pt`` (optimizer,
scheduler, grad scaler and random states: tensors and plain data only, read back with
``torch.load(weights_only=True)``) and ``meta.json`` (position, config, architecture).
It is written into ``<name>.tmp``, every file flushed and fsynced, then swapped in by
renames; the previous checkpoint stays as ``<name>.old`` until the new one is complete."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or belongs to another model."""


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, write) -> None:
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def save_checkpoint(folder: str, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Atomically replace the checkpoint ``folder``. On any error the previous checkpoint
    is left loadable and the error propagates."""
    tmp, old = folder + ".tmp", folder + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, os.path.join(tmp, "model.safetensors"))
        with open(os.path.join(tmp, "model.safetensors"), "rb+") as fh:
            os.fsync(fh.fileno())
        _write_file(os.path.join(tmp, "state.pt"), lambda fh: torch.save(state, fh))
        _write_file(os.path.join(tmp, "meta.json"), lambda fh: fh.write(json.dumps(meta, indent=1).encode()))
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync_dir(os.path.dirname(os.path.abspath(folder)))
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(folder: str) -> str | None:
    """The complete checkpoint to resume from: ``folder``, else the ``.old`` one kept while
    a newer one was being written."""
    for path in (folder, folder + ".old"):
        if os.path.isfile(os.path.join(path, "meta.json")):
            return path
    return None


def load_meta(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, "meta.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {folder!r} has no readable meta.json ({e})") from None


def load_weights(folder: str, model: nn.Module) -> None:
    """Load ``model.safetensors`` into ``model``, naming any mismatch of architecture."""
    path = os.path.join(folder, "model.safetensors")
    try:
        weights = load_file(path)
    except (OSError, SafetensorError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {path!r}: {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {folder!r} is for another architecture: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in weights.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"checkpoint {folder!r} does not fit this model: {k} has shape {tuple(v.shape)}, "
                f"the model expects {tuple(expected[k].shape)} (another number of classes or channels?)"
            )
    model.load_state_dict(weights)


def load_state(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, "state.pt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable; never retry unsafely
        raise CheckpointError(f"cannot read training state {path!r} safely: {str(e).splitlines()[0]}") from None
