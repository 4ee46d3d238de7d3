"""The device and the number of threads a command runs with."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU if there is one, else the CPU; a GPU asked for but absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``; 0 keeps PyTorch's choice."""
    if threads:
        torch.set_num_threads(threads)
