"""ST++'s random smaller inputs for the sub-networks: the range as written on the command
line, the sides drawn per step, and the resized batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def parse_resolution(text: str) -> tuple[float, float] | None:
    """``"0.43,1"`` -> ``(0.43, 1.0)``: the range of sub-network input sides, as fractions."""
    if not text:
        return None
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--subnet-resolution {text!r}: write two fractions of the input side, e.g. 0.43,1") from None
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"--subnet-resolution {text!r}: need 0 < low <= high <= 1")
    return lo, hi


def subnet_sides(generator: torch.Generator, count: int, side: int, low: float, high: float) -> list[int]:
    """``count`` input sides drawn uniformly in ``[low, high] * side`` (rounded, at least 1)."""
    u = torch.rand(count, generator=generator).tolist()
    return [max(1, round(side * (low + (high - low) * v))) for v in u]


def resize_batch(x: torch.Tensor, side: int) -> torch.Tensor:
    """The batch ``(B, C, H, W)`` resized to ``side`` x ``side`` (bilinear, antialiased when
    shrinking); unchanged if it already has that size."""
    if x.shape[-2:] == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=side < x.shape[-1])
