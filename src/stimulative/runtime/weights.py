"""Reading a weights file into a state dict: ``.safetensors``, or a state dict saved with
``torch.save`` and read with ``weights_only=True`` (anything but tensors and plain data is
refused, never unpickled). Used by checkpoints, ``--init-from`` and ``--pretrained-file``."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load as load_safetensors


class WeightsFileError(ValueError):
    """A weights file cannot be used; the message is one line saying why (without the path,
    which the caller names). ``damaged``: the file was read but its content is unusable
    (False when it could not be read at all)."""

    def __init__(self, reason: str, damaged: bool) -> None:
        super().__init__(reason)
        self.damaged = damaged


def read_weights(path: str) -> dict[str, Any]:
    """The state dict held by the weights file ``path``."""
    try:
        if path.endswith(".safetensors"):
            # read whole into memory (not memory-mapped): the tensors own their storage
            with open(path, "rb") as fh:
                state = load_safetensors(fh.read())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise WeightsFileError(str(e.strerror or e), damaged=False) from None
    except Exception as e:  # noqa: BLE001 - any other failure means the content is unusable
        raise WeightsFileError(_first_line(e), damaged=True) from None
    if not isinstance(state, dict):
        raise WeightsFileError(f"it holds a {type(state).__name__}, not a state dict", damaged=True)
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def state_dict_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> str | None:
    """Why ``given`` cannot be loaded into a model whose state dict is ``expected``, in one
    line (keys, then shapes, then dtypes), or None when it fits."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        return (
            f"is for another architecture: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    for k, v in given.items():
        if v.shape != expected[k].shape:
            return (
                f"does not fit this model: {k} has shape {tuple(v.shape)}, the model expects "
                f"{tuple(expected[k].shape)} (another number of classes or channels?)"
            )
        if v.dtype != expected[k].dtype:
            return f"does not fit this model: {k} is {v.dtype}, the model has {expected[k].dtype}"
    return None
