"""Sub-network specs, sampling spaces, samplers and enumeration.

A sub-network is explicit data: a :class:`SubnetSpec` lists, per stage, the blocks that run,
in the order they run. Each entry is ``(block_index, path)`` where ``path`` is ``"full"``
(the block as built, ``y = x + F(x)``) or ``"branch"`` (its residual branch alone, the
non-identity path of the unraveled view). A skippable block that is absent contributes its
identity path.

Text form (round-trips through :func:`parse_spec` / :meth:`SubnetSpec.to_text`):

* ordered, depths per stage: ``2,3,1`` (the first 2, 3 and 1 blocks of each stage);
* explicit: stages separated by ``/``, blocks by ``.``, a branch-only block suffixed ``r``,
  an empty stage written ``-``: ``0.2.1/0.1r/0``. A one-stage explicit spec ends with ``/``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

FULL, BRANCH = "full", "branch"
SAMPLERS = ("ordered", "stochastic", "raw")

Step = tuple[int, str]  # (block index within its stage, path)
MAX_DEPTH = 100_000  # blocks per stage a spec may name (no real network comes near)


@dataclass(frozen=True)
class SubnetSpec:
    """Which blocks run in each stage, in order. Immutable and hashable."""

    stages: tuple[tuple[Step, ...], ...]

    @classmethod
    def ordered(cls, depths: Sequence[int]) -> SubnetSpec:
        """Keep the first ``d`` blocks of each stage."""
        return cls(tuple(tuple((i, FULL) for i in range(d)) for d in depths))

    @classmethod
    def from_blocks(cls, blocks: Sequence[Sequence[int]]) -> SubnetSpec:
        """Run the listed block indices (full blocks) of each stage, in the given order."""
        return cls(tuple(tuple((int(i), FULL) for i in stage) for stage in blocks))

    def depths(self) -> tuple[int, ...] | None:
        """Per-stage depths if this is an ordered spec (a prefix of every stage), else None."""
        out = []
        for stage in self.stages:
            if stage != tuple((i, FULL) for i in range(len(stage))):
                return None
            out.append(len(stage))
        return tuple(out)

    def flat(self) -> tuple[tuple[int, int, str], ...]:
        """The blocks in execution order as ``(stage, block, path)``."""
        return tuple((s, b, p) for s, stage in enumerate(self.stages) for b, p in stage)

    def to_text(self) -> str:
        depths = self.depths()
        if depths is not None:
            return ",".join(str(d) for d in depths)
        parts = [".".join(f"{b}{'r' if p == BRANCH else ''}" for b, p in stage) or "-" for stage in self.stages]
        return "/".join(parts) + ("/" if len(parts) == 1 else "")

    def __str__(self) -> str:
        return self.to_text()


def parse_spec(text: str) -> SubnetSpec:
    """Parse the compact text form (see module docstring)."""
    text = text.strip()
    if not text:
        raise ValueError("empty sub-network spec; write depths per stage such as '2,3,1'")
    try:
        if "/" not in text:
            depths = [int(t) for t in text.split(",")]
            if any(not 0 <= d <= MAX_DEPTH for d in depths):  # a huge depth would build a huge spec
                raise ValueError
            return SubnetSpec.ordered(depths)
        parts = text[:-1].split("/") if text.endswith("/") and text.count("/") == 1 else text.split("/")
        stages = []
        for part in parts:
            steps: list[Step] = []
            if part != "-":
                for tok in part.split("."):
                    branch = tok.endswith("r")
                    index = int(tok[:-1] if branch else tok)
                    if index < 0:
                        raise ValueError
                    steps.append((index, BRANCH if branch else FULL))
            stages.append(tuple(steps))
        return SubnetSpec(tuple(stages))
    except ValueError:
        raise ValueError(
            f"cannot parse sub-network spec {text!r}; write ordered depths such as '2,3,1' "
            "or explicit blocks such as '0.2/0.1r/0'"
        ) from None


@dataclass(frozen=True)
class Architecture:
    """What the sampler needs to know of a model: per stage, which blocks are skippable."""

    skippable: tuple[tuple[bool, ...], ...]

    @property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.skippable)

    def full(self) -> SubnetSpec:
        return SubnetSpec.ordered(self.stage_sizes)

    def validate(self, spec: SubnetSpec) -> None:
        """Raise ValueError if ``spec`` cannot run on this architecture."""
        if len(spec.stages) != len(self.skippable):
            raise ValueError(
                f"sub-network {spec} has {len(spec.stages)} stages; the model has "
                f"{len(self.skippable)} (stage sizes {list(self.stage_sizes)})"
            )
        for s, (stage, skip) in enumerate(zip(spec.stages, self.skippable)):
            for b, path in stage:
                if b >= len(skip):
                    raise ValueError(f"sub-network {spec}: stage {s} has no block {b} (it has {len(skip)})")
                if path == BRANCH and not skip[b]:
                    raise ValueError(f"sub-network {spec}: block {s}.{b} has no identity path to unravel")
            present = [b for b, _ in stage]
            if len(set(present)) != len(present):
                raise ValueError(f"sub-network {spec}: stage {s} runs a block twice")
            for b, needed in enumerate(skip):
                if not needed and b not in present:
                    raise ValueError(f"sub-network {spec}: block {s}.{b} changes the shape and cannot be skipped")
            # a shape-changing block must run before the blocks that expect its output
            fixed = [i for i, (b, _) in enumerate(stage) if not skip[b]]
            if fixed and fixed != list(range(len(fixed))):
                raise ValueError(f"sub-network {spec}: a shape-changing block of stage {s} must run first")


@dataclass(frozen=True)
class SamplingSpace:
    """Allowed depths per stage (a depth counts the blocks a sub-network keeps)."""

    depths: tuple[tuple[int, ...], ...]

    @classmethod
    def default(cls, arch: Architecture) -> SamplingSpace:
        """Every stage keeps at least its first block (as the reference implementation does)."""
        return cls.from_min_depths(arch, [1] * len(arch.stage_sizes))

    @classmethod
    def from_min_depths(cls, arch: Architecture, min_depths: Sequence[int]) -> SamplingSpace:
        if len(min_depths) != len(arch.stage_sizes):
            raise ValueError(
                f"{len(min_depths)} minimum depths given for {len(arch.stage_sizes)} stages "
                f"(stage sizes {list(arch.stage_sizes)})"
            )
        for s, (m, n) in enumerate(zip(min_depths, arch.stage_sizes)):
            if not 0 <= m <= n:
                raise ValueError(f"impossible depth {m} in stage {s}: the stage has {n} blocks")
        return cls(tuple(tuple(range(m, n + 1)) for m, n in zip(min_depths, arch.stage_sizes))).checked(arch)

    def checked(self, arch: Architecture) -> SamplingSpace:
        """Return self after checking it fits ``arch``; raise ValueError naming the problem."""
        if len(self.depths) != len(arch.stage_sizes):
            raise ValueError(f"sampling space has {len(self.depths)} stages; the model has {len(arch.stage_sizes)}")
        for s, (allowed, skip) in enumerate(zip(self.depths, arch.skippable)):
            if not allowed:
                raise ValueError(f"sampling space is empty in stage {s}")
            lowest = sum(1 for k in skip if not k)
            bad = [d for d in allowed if d < lowest or d > len(skip)]
            if bad:
                raise ValueError(
                    f"impossible depth {bad[0]} in stage {s}: allowed {lowest}..{len(skip)} "
                    f"(the stage has {len(skip)} blocks, {lowest} of which cannot be skipped)"
                )
        return self

    def size(self, sampler: str = "ordered", arch: Architecture | None = None) -> int:
        """Number of distinct sub-networks the sampler can draw."""
        if sampler == "ordered":
            return math.prod(len(a) for a in self.depths)
        if arch is None:
            raise ValueError(f"the {sampler} sampler's space size needs the architecture")
        if sampler == "stochastic":
            return math.prod(
                sum(math.comb(sum(skip), d - (len(skip) - sum(skip))) for d in allowed)
                for allowed, skip in zip(self.depths, arch.skippable)
            )
        if sampler == "raw":
            return math.prod(2 ** sum(skip) for skip in arch.skippable)
        raise ValueError(unknown_sampler(sampler))


def unknown_sampler(name: str) -> str:
    return f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}"


def enumerate_subnets(space: SamplingSpace, arch: Architecture, sampler: str = "ordered") -> Iterator[SubnetSpec]:
    """Every sub-network of the space, in a fixed order (shared prefixes adjacent)."""
    if sampler == "ordered":
        for depths in itertools.product(*space.depths):
            yield SubnetSpec.ordered(depths)
    elif sampler == "stochastic":
        per_stage = [list(_stochastic_stage_choices(a, skip)) for a, skip in zip(space.depths, arch.skippable)]
        for stages in itertools.product(*per_stage):
            yield SubnetSpec(tuple(stages))
    elif sampler == "raw":
        per_stage = [list(_raw_stage_choices(skip)) for skip in arch.skippable]
        for stages in itertools.product(*per_stage):
            yield SubnetSpec(tuple(stages))
    else:
        raise ValueError(unknown_sampler(sampler))


def _stochastic_stage_choices(allowed: Sequence[int], skip: Sequence[bool]) -> Iterator[tuple[Step, ...]]:
    fixed = [b for b, k in enumerate(skip) if not k]
    optional = [b for b, k in enumerate(skip) if k]
    for d in allowed:
        for chosen in itertools.combinations(optional, d - len(fixed)):
            yield tuple((b, FULL) for b in sorted(fixed + list(chosen)))


def _raw_stage_choices(skip: Sequence[bool]) -> Iterator[tuple[Step, ...]]:
    optional = [b for b, k in enumerate(skip) if k]
    for mask in itertools.product((False, True), repeat=len(optional)):
        branch = {b for b, m in zip(optional, mask) if m}
        yield tuple((b, FULL) if not skip[b] else (b, BRANCH) for b in range(len(skip)) if not skip[b] or b in branch)


def sample_subnet(space: SamplingSpace, arch: Architecture, sampler: str, generator: torch.Generator) -> SubnetSpec:
    """Draw one sub-network.

    * ordered: per stage, a depth uniform over the allowed depths; keep the first blocks.
    * stochastic: the same depth distribution, but a uniform random subset of the
      skippable blocks (kept in order) fills it.
    * raw: every skippable block independently contributes its identity path or its
      residual branch alone (probability 1/2 each); shape-changing blocks run whole.
    """

    def randint(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    stages = []
    for allowed, skip in zip(space.depths, arch.skippable):
        if sampler == "ordered":
            stages.append(tuple((i, FULL) for i in range(allowed[randint(len(allowed))])))
        elif sampler == "stochastic":
            d = allowed[randint(len(allowed))]
            fixed = [b for b, k in enumerate(skip) if not k]
            optional = [b for b, k in enumerate(skip) if k]
            order = torch.randperm(len(optional), generator=generator).tolist()
            chosen = [optional[i] for i in order[: d - len(fixed)]]
            stages.append(tuple((b, FULL) for b in sorted(fixed + chosen)))
        elif sampler == "raw":
            flips = torch.randint(2, (len(skip),), generator=generator).tolist()
            stages.append(tuple((b, FULL) if not k else (b, BRANCH) for b, k in enumerate(skip) if not k or flips[b]))
        else:
            raise ValueError(unknown_sampler(sampler))
    return SubnetSpec(tuple(stages))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The sampler's generator for one training step: a pure function of (seed, step), so
    every rank and every resumed run draws the same sub-networks without saving state."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def delete_blocks(arch: Architecture, deleted: Sequence[tuple[int, int]]) -> SubnetSpec:
    """The full network without the given ``(stage, block)`` blocks (destruction at test time)."""
    gone = set(deleted)
    for s, b in gone:
        if not arch.skippable[s][b]:
            raise ValueError(f"block {s}.{b} changes the shape and cannot be deleted")
    return SubnetSpec.from_blocks([[b for b in range(n) if (s, b) not in gone] for s, n in enumerate(arch.stage_sizes)])


def permute_blocks(arch: Architecture, stage: int, order: Sequence[int]) -> SubnetSpec:
    """The full network with the skippable blocks of one stage run in ``order``.

    ``order`` lists the stage's skippable block indices in their new order."""
    skip = arch.skippable[stage]
    fixed = [b for b, k in enumerate(skip) if not k]
    if sorted(order) != [b for b, k in enumerate(skip) if k]:
        raise ValueError(f"a permutation of stage {stage} must list each skippable block once")
    blocks = [list(range(n)) for n in arch.stage_sizes]
    blocks[stage] = fixed + list(order)
    return SubnetSpec.from_blocks(blocks)


def skippable_blocks(arch: Architecture) -> list[tuple[int, int]]:
    return [(s, b) for s, skip in enumerate(arch.skippable) for b, k in enumerate(skip) if k]


def select_subnets(
    space: SamplingSpace, arch: Architecture, max_count: int, seed: int = 0, sampler: str = "ordered"
) -> list[SubnetSpec]:
    """Every sub-network of the space if there are at most ``max_count``, else a seeded
    sample of ``max_count`` distinct ones (in enumeration-friendly sorted order)."""
    if space.size(sampler, arch) <= max_count:
        return list(enumerate_subnets(space, arch, sampler))
    gen = torch.Generator().manual_seed(seed)
    chosen: dict[SubnetSpec, None] = {}
    while len(chosen) < max_count:
        chosen.setdefault(sample_subnet(space, arch, sampler, gen))
    return sorted(chosen, key=lambda s: s.flat())
