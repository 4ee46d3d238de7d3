"""Checkpoints that are never half-written and never unpickle untrusted code.

A checkpoint is a folder: ``model.safetensors`` (weights), ``state.pt`` (optimizer,
scheduler, grad scaler and random states: tensors and plain data only, read back with
``torch.load(weights_only=True)``, never with a fallback) and ``meta.json`` (position,
config, architecture). Everything is serialised in memory first, then written into
``<name>.tmp`` (:func:`stage_checkpoint`), every file fsynced, then swapped in by renames
(:func:`commit_checkpoint`; the trainer runs this part on a worker thread,
:class:`~stimulative.training.checkpoint_writer.CheckpointWriter`); the previous
checkpoint stays as ``<name>.old`` until the new one is complete. A crash at any moment
therefore leaves ``<name>`` or ``<name>.old`` complete, and :func:`latest_checkpoint`
finds it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import shutil
from typing import Any, NoReturn

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from ..runtime.weights import WeightsFileError, read_weights, state_dict_mismatch

META_KEYS = {"step": int, "epoch": int, "model": str, "num_classes": int, "in_chans": int, "config": dict}
STATE_KEYS = ("optimizer", "scheduler", "rng")
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, unsafe or belongs to another model."""


def _fsync(path: str) -> None:
    """Make a written file, or a folder's entries, durable (a read-only descriptor serves)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (durable only after :func:`_fsync`)."""
    with open(path, "wb") as fh:
        fh.write(data)


def weights_bytes(model: nn.Module) -> bytes:
    """The model's state dict as safetensors bytes."""
    return save_safetensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def save_weights(model: nn.Module, path: str, same_as: str | None = None) -> None:
    """Write the model's weights to ``path`` (.safetensors) atomically. ``same_as``: a
    weights file known to hold these very weights (the checkpoint just written), hard-linked
    instead of serialised and written again; checkpoints are replaced by renames, never
    rewritten in place, so the link keeps its content. Where links are refused (some network
    and FUSE file systems), the weights are written."""
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    if same_as is not None:
        try:
            os.link(same_as, tmp)
        except OSError:
            same_as = None
    if same_as is None:
        _write_file(tmp, weights_bytes(model))
        _fsync(tmp)
    os.replace(tmp, path)


def serialize(model: nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, bytes]:
    """The three files of a checkpoint, as bytes."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {
        WEIGHTS_FILE: weights_bytes(model),
        "state.pt": buffer.getvalue(),
        "meta.json": json.dumps(meta, indent=1).encode(),
    }


def save_checkpoint(folder: str, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, bytes]:
    """Atomically replace the checkpoint ``folder``; returns its files' bytes. On any error
    (a full disk, an interrupt) the previous checkpoint is left complete and loadable; an
    ``OSError`` is re-raised as :class:`CheckpointError` saying so."""
    files = serialize(model, state, meta)
    stage_checkpoint(folder, files, meta.get("step"))
    commit_checkpoint(folder, meta.get("step"))
    return files


def stage_checkpoint(folder: str, files: dict[str, bytes], step: int | None) -> None:
    """Write a checkpoint's files into ``<folder>.tmp``, not yet durable nor in place
    (:func:`commit_checkpoint` does both); on any error nothing is left of it."""
    tmp = folder + ".tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for name, data in files.items():
            _write_file(os.path.join(tmp, name), data)
    except BaseException as e:
        _abandon(folder, step, e)


def commit_checkpoint(folder: str, step: int | None) -> None:
    """Make the staged ``<folder>.tmp`` durable (every file, then the folder, fsynced), then
    swap it in: folder -> .old, .tmp -> folder; a crash in between leaves .old, which
    :func:`latest_checkpoint` falls back to."""
    tmp, old = folder + ".tmp", folder + ".old"
    try:
        for name in os.listdir(tmp):
            _fsync(os.path.join(tmp, name))
        _fsync(tmp)
    except BaseException as e:
        _abandon(folder, step, e)
    if os.path.isdir(folder):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    _fsync(os.path.dirname(os.path.abspath(folder)))
    shutil.rmtree(old, ignore_errors=True)


def _abandon(folder: str, step: int | None, e: BaseException) -> NoReturn:
    """Remove the staged ``<folder>.tmp`` and raise: an ``OSError`` as a
    :class:`CheckpointError` naming the checkpoint still intact, anything else as it is."""
    shutil.rmtree(folder + ".tmp", ignore_errors=True)
    if isinstance(e, OSError):
        previous = latest_checkpoint(folder)
        kept = f"the previous checkpoint {previous!r} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {folder!r} at step {step}: {e.strerror or e}; {kept}") from e
    raise e


def latest_checkpoint(folder: str) -> str | None:
    """The complete checkpoint to resume from: ``folder``, else the ``.old`` one kept while
    a newer one was being written (``.tmp`` is never complete until renamed)."""
    for path in (folder, folder + ".old"):
        if os.path.isfile(os.path.join(path, "meta.json")):
            return path
    return None


def load_meta(folder: str) -> dict[str, Any]:
    """``meta.json`` of a checkpoint, checked to hold what a resume needs."""
    path = os.path.join(folder, "meta.json")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {folder!r} has no readable meta.json ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r} is not a checkpoint description (a JSON object was expected)")
    for key, kind in META_KEYS.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise CheckpointError(
                f"{path!r} is not a stimulative checkpoint: {key!r} is missing or not {kind.__name__}"
            )
    return meta


def check_compatible(folder: str, meta: dict[str, Any], model: str, num_classes: int, in_chans: int) -> None:
    """Raise CheckpointError naming the first difference between a checkpoint and the model
    it is meant for."""
    for what, saved, wanted in (
        ("model", meta["model"], model),
        ("number of classes", meta["num_classes"], num_classes),
        ("number of input channels", meta["in_chans"], in_chans),
    ):
        if saved != wanted:
            raise CheckpointError(f"checkpoint {folder!r} is for {what} {saved!r}, not {wanted!r}")


def load_weights(folder: str, model: nn.Module) -> None:
    """Load the checkpoint's ``model.safetensors`` into ``model``, naming any mismatch of architecture."""
    load_weights_file(os.path.join(folder, WEIGHTS_FILE), model, f"checkpoint {folder!r}")


def load_weights_file(path: str, model: nn.Module, what: str = "") -> None:
    """Load the weights file ``path`` (.safetensors) into ``model``; ``what`` names it in errors."""
    folder = what or f"weights {path!r}"
    try:
        weights = read_weights(path)
    except WeightsFileError as e:
        if e.damaged:
            raise CheckpointError(f"weights {path!r} are damaged or truncated ({e})") from None
        raise CheckpointError(f"cannot read weights {path!r}: {e}") from None
    mismatch = state_dict_mismatch(model.state_dict(), weights)
    if mismatch:
        raise CheckpointError(f"{folder} {mismatch}")
    model.load_state_dict(weights)


def load_state(folder: str) -> dict[str, Any]:
    """``state.pt`` read with ``weights_only=True``: anything but tensors and plain data is
    refused, never unpickled."""
    path = os.path.join(folder, "state.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"cannot read training state {path!r}: {e.strerror or e}") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path!r}: it holds objects other than tensors and plain data "
            f"({_unpickling_reason(e)}); such a file could run code, so it is never unpickled"
        ) from None
    except Exception as e:  # noqa: BLE001 - any other failure means the file is unusable; never retry unsafely
        raise CheckpointError(f"training state {path!r} is damaged or truncated ({_first_line(e)})") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise CheckpointError(f"{path!r} is not a stimulative training state (it needs {', '.join(STATE_KEYS)})")
    return state


def _unpickling_reason(e: BaseException) -> str:
    """The line of torch's weights-only error that names the refused object."""
    for line in str(e).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return _first_line(e)


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for lines)."""
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0].strip().rstrip(".") if text else type(e).__name__
