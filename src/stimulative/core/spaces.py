"""Sampling spaces by name or by minimum depths per stage (``--min-depths``), and the
shallowest sub-network of a space (the sandwich rule's). ST++ (arXiv 2305.02507) restricts
the space per stage; this module turns the text a user writes into a checked space."""

from __future__ import annotations

import math
import re

from .sampling import Architecture, SamplingSpace, SubnetSpec

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


def build_space(arch: Architecture, min_depths: str, flag: str = "--min-depths") -> SamplingSpace:
    """The sampling space of ``--min-depths`` (see :func:`min_depths_for`); a ValueError
    naming ``flag`` if the text is malformed or impossible for ``arch``."""
    if not min_depths:
        return SamplingSpace.default(arch)
    try:
        mins = min_depths_for(arch, min_depths)  # integers per stage, or a named space
    except ValueError:
        raise ValueError(
            f"{flag} {min_depths!r}: write one integer per stage, e.g. 1,1,1, or a named space "
            f"({', '.join(NAMED_SPACES)})"
        ) from None
    for s, (m, n) in enumerate(zip(mins, arch.stage_sizes)):
        if not 0 <= m <= n:
            raise ValueError(
                f"{flag} {min_depths!r}: stage {s} has {n} blocks, so its minimum depth must be in 0..{n}, not {m}"
            )
    try:
        return SamplingSpace.from_min_depths(arch, mins)
    except ValueError as e:
        raise ValueError(f"{flag} {min_depths!r}: {e}") from None


def shallowest(space: SamplingSpace, arch: Architecture, sampler: str = "ordered") -> SubnetSpec:
    """The smallest sub-network the sampler can draw: the minimum depth of every stage
    (ordered and stochastic), or only the shape-changing blocks (raw)."""
    if sampler == "raw":
        return SubnetSpec.from_blocks([[b for b, k in enumerate(skip) if not k] for skip in arch.skippable])
    return SubnetSpec.ordered([min(allowed) for allowed in space.depths])
