"""The Stimulative Training++ options (arXiv 2305.02507) and the schedule of lambda, as pure
functions that the one training loop applies (each is a configuration, not a code path):

* named inter-stage sampling spaces (:func:`min_depths_for`, :func:`build_space`);
* the sandwich rule: the shallowest sub-network of the space in every step (:func:`shallowest`);
* random smaller inputs for the sub-networks (:func:`subnet_sides`, :func:`resize_batch`);
* lambda schedules: constant, cosine-up, cosine-down, after a start epoch (:func:`kl_weight_at`).

The fourth ST++ option, the direction-only KL ("KL-"), lives with the loss
(:func:`stimulative.loss.direction_kl_divergence`).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F

from .sampling import Architecture, SamplingSpace, SubnetSpec

KL_SCHEDULES = ("constant", "cosine-up", "cosine-down")
NAMED_SPACES = ("default", "all", "half", "spaceK")


def min_depths_for(arch: Architecture, text: str) -> list[int]:
    """Per-stage minimum depths from ``--min-depths``: integers per stage (``3,3,3,3``) or a
    named space, resolved against the architecture:

    * ``default``: at least one block per stage (the reference implementation's space);
    * ``all``: only the shape-changing blocks are kept for sure (an all-skippable stage,
      such as a ViT's, may run none of its blocks);
    * ``half``: at least half of each stage (rounded up);
    * ``spaceK``: at least K blocks per stage, or the whole stage if shorter (ST++'s
      ResNet-50 "space3" keeps at least (3, 3, 3, 3) of (3, 4, 6, 3)).
    """
    text = text.strip()
    fixed = [sum(1 for k in skip if not k) for skip in arch.skippable]
    sizes = arch.stage_sizes
    if text in ("", "default"):
        return [max(1, f) for f in fixed]
    if text == "all":
        return fixed
    if text == "half":
        return [max(f, math.ceil(n / 2)) for f, n in zip(fixed, sizes, strict=True)]
    m = re.fullmatch(r"space(\d+)", text)
    if m:
        k = int(m.group(1))
        return [max(f, min(k, n)) for f, n in zip(fixed, sizes, strict=True)]
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--min-depths {text!r}: write one integer per stage (e.g. 1,1,1) or a named space: "
            f"{', '.join(NAMED_SPACES)} (K an integer, e.g. space3)"
        ) from None


def build_space(arch: Architecture, text: str) -> SamplingSpace:
    """The sampling space of ``--min-depths`` (see :func:`min_depths_for`)."""
    return SamplingSpace.from_min_depths(arch, min_depths_for(arch, text))


def shallowest(space: SamplingSpace, arch: Architecture, sampler: str = "ordered") -> SubnetSpec:
    """The smallest sub-network the sampler can draw: the minimum depth of every stage
    (ordered and stochastic), or only the shape-changing blocks (raw)."""
    if sampler == "raw":
        return SubnetSpec.from_blocks([[b for b, k in enumerate(skip) if not k] for skip in arch.skippable])
    return SubnetSpec.ordered([min(allowed) for allowed in space.depths])


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
