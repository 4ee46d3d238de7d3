"""Sampling spaces by name or by minimum depths per stage (``--min-depths``), and the
shallowest sub-network of a space (the sandwich rule's). ST++ (arXiv 2305.02507) restricts
the space per stage; this module turns the text a user writes into a checked space.

Every named space is a list of minimum depths per stage: a stage of ``n`` blocks with minimum
``m`` allows the depths ``m..n`` (ordered sampling keeps the first blocks), and the space is
their product (the full network included)."""

from __future__ import annotations

import math
import re

from .sampling import Architecture, SamplingSpace, SubnetSpec, unknown_sampler

# The official code's --sample_space (its train.py, sample()): minimum depths of ResNet-50's
# four stages (3, 4, 6, 3). Sizes on ResNet-50: 60, 108, 8, 20, 3, 16, 15 (default: 216).
# The official code applies them to ResNet-50 only (ResNet-101/152 ignore --sample_space).
OFFICIAL_SPACES = {
    "space1": (2, 2, 2, 2),
    "space2": (2, 2, 1, 1),
    "space3": (3, 3, 3, 3),
    "space4": (3, 3, 2, 2),
    "space5": (3, 4, 4, 3),
    "space6": (3, 3, 3, 2),
    "space7": (3, 2, 2, 3),
}

# OUR presets for MobileNetV3-Large's six stages (1, 2, 3, 4, 2, 3 blocks), named by their
# size. The paper (Fig. 4/5) trains MobileNetV3 with 6, 48 and 144 sub-networks but does not
# say which; the official code has no MobileNetV3. 144 = 1*2*3*4*2*3 is the whole ordered
# space (at least one block per stage); 48 also keeps the last stage whole (1*2*3*4*2*1);
# 6 also keeps stages 3 and 4 whole (1*2*3*1*1*1), so 6 ⊂ 48 ⊂ 144. The structure of 48 and
# 6 is our assumption (the paper's "sub-networks" may even be a sample of the 144).
MOBILENETV3_STAGES = (1, 2, 3, 4, 2, 3)
OUR_MOBILENETV3_SPACES = {
    "ours-mbv3-144": (1, 1, 1, 1, 1, 1),
    "ours-mbv3-48": (1, 1, 1, 1, 1, 3),
    "ours-mbv3-6": (1, 1, 1, 4, 2, 3),
}

NAMED_SPACES = ("default", "all", "half", "atleastK", *OFFICIAL_SPACES, *OUR_MOBILENETV3_SPACES)


def min_depths_for(arch: Architecture, text: str) -> list[int]:
    """Per-stage minimum depths from ``--min-depths``: integers per stage (``3,3,3,3``) or a
    named space, resolved against the architecture:

    * ``default``: at least one block per stage (the official code's default space);
    * ``all``: only the shape-changing blocks are kept for sure (an all-skippable stage,
      such as a ViT's, may run none of its blocks);
    * ``half``: at least half of each stage (rounded up);
    * ``atleastK`` (ours): at least K blocks per stage, or the whole stage if shorter;
    * ``space1`` .. ``space7``: the official ResNet-50 spaces (:data:`OFFICIAL_SPACES`), for
      any four-stage architecture whose stages hold at least those minimum depths;
    * ``ours-mbv3-144``, ``ours-mbv3-48``, ``ours-mbv3-6``: our MobileNetV3-Large presets
      (:data:`OUR_MOBILENETV3_SPACES`), for stages of exactly (1, 2, 3, 4, 2, 3) blocks.
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
    if text in OFFICIAL_SPACES:
        return _official(arch, text)
    if text in OUR_MOBILENETV3_SPACES:
        if tuple(sizes) != MOBILENETV3_STAGES:
            raise ValueError(
                f"{text} is our preset for MobileNetV3-Large's stages {list(MOBILENETV3_STAGES)}; this architecture "
                f"has stages {list(sizes)}: write minimum depths per stage instead"
            )
        return list(OUR_MOBILENETV3_SPACES[text])
    m = re.fullmatch(r"atleast(\d+)", text)
    if m:
        k = int(m.group(1))
        return [max(f, min(k, n)) for f, n in zip(fixed, sizes, strict=True)]
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(
            f"write one integer per stage (e.g. 1,1,1) or a named space: {', '.join(NAMED_SPACES)} "
            f"(K an integer, e.g. atleast3)"
        ) from None


def _official(arch: Architecture, name: str) -> list[int]:
    mins = OFFICIAL_SPACES[name]
    sizes = arch.stage_sizes
    if len(sizes) != len(mins) or any(m > n for m, n in zip(mins, sizes)):
        raise ValueError(
            f"{name} is the official ResNet-50 space keeping at least {list(mins)} blocks of 4 stages; this "
            f"architecture has stages {list(sizes)}: use atleastK (at least K blocks per stage) or write minimum "
            f"depths per stage"
        )
    return list(mins)


def build_space(arch: Architecture, min_depths: str, flag: str = "--min-depths") -> SamplingSpace:
    """The sampling space of ``--min-depths`` (see :func:`min_depths_for`); a ValueError
    naming ``flag`` if the text is malformed or impossible for ``arch``."""
    if not min_depths:
        return SamplingSpace.default(arch)
    try:
        mins = min_depths_for(arch, min_depths)  # integers per stage, or a named space
    except ValueError as e:
        raise ValueError(f"{flag} {min_depths!r}: {e}") from None
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


def never_skipped(space: SamplingSpace, arch: Architecture, sampler: str = "ordered") -> set[tuple[int, int]]:
    """The ``(stage, block)`` blocks that every sub-network the sampler can draw from
    ``space`` runs whole: training never skips them. Ordered: the first ``min depth`` blocks
    of each stage. Stochastic: the shape-changing blocks, and every block of a stage whose
    minimum depth is the whole stage. Raw: the shape-changing blocks only (any other block
    may contribute its identity path alone)."""
    out: set[tuple[int, int]] = set()
    for s, (allowed, skip) in enumerate(zip(space.depths, arch.skippable)):
        fixed = {b for b, k in enumerate(skip) if not k}
        if sampler == "ordered":
            kept = set(range(min(allowed))) | fixed
        elif sampler == "stochastic":
            kept = set(range(len(skip))) if min(allowed) == len(skip) else fixed
        elif sampler == "raw":
            kept = fixed
        else:
            raise ValueError(unknown_sampler(sampler))
        out |= {(s, b) for b in kept}
    return out
