"""Schedules over training steps, as pure functions: lambda of Eq. 1 (constant, cosine-up,
cosine-down, after a start step) and the learning-rate factor (warm-up, then cosine, with an optional floor)."""

from __future__ import annotations

import math

KL_SCHEDULES = ("constant", "cosine-up", "cosine-down")


def kl_weight_at(base: float, step: int, total_steps: int, start_step: int = 0, schedule: str = "constant") -> float:
    """Lambda of Eq. 1 at a training step: 0 before ``start_step``, then ``base`` (constant),
    rising from 0 to ``base`` (cosine-up) or falling from ``base`` to 0 (cosine-down) along
    a half cosine over the remaining steps."""
    if schedule not in KL_SCHEDULES:
        raise ValueError(f"unknown KL schedule {schedule!r}; choose from {', '.join(KL_SCHEDULES)}")
    if step < start_step or base == 0:
        return 0.0
    if schedule == "constant":
        return base
    progress = (step - start_step) / max(1, total_steps - start_step)
    up = 0.5 * (1.0 - math.cos(math.pi * min(1.0, progress)))
    return base * (up if schedule == "cosine-up" else 1.0 - up)


def cosine_lr(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up then cosine decay to zero, clamped from below at
    ``floor`` (the official code's ``--min_lr``: lr >= lr0 * ``--min_lr_coef``, 1e-4 there)."""
    if step < warmup:
        factor = (step + 1) / warmup
    else:
        progress = (step - warmup) / max(1, total - warmup)
        factor = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(factor, floor) if floor > 0 else factor
