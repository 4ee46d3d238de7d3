"""Destruction at test time, without retraining (paper Fig. 6): delete one block, delete k
blocks, permute k blocks within a stage; report the top-1 drop against the intact network.

The paper deletes "all combinations" of k blocks. Here every combination is evaluated when a
k has at most ``limit`` of them (5000 by default: ResNet-50's 12 skippable blocks give at
most C(12, 4) = 495), and a seeded sample of ``limit`` distinct ones above it; the result
says, per kind and k, how many there are, how many were evaluated and whether they were
sampled.

A *permutation of k blocks*: choose k skippable blocks of one stage (every choice, or a
seeded sample above ``limit``) and move each to the position of the next chosen one, the
last to the first's (a cyclic shift among the chosen positions); the other blocks stay. It
is the one permutation per choice that moves every chosen block. The paper's own definition
(its appendix C.3) is not in the text we hold.

Blocks that training never skips (e.g. the first block of each stage under ordered sampling,
or the first three under ST++'s space3) were always present when the network was trained:
each entry says whether it touches one (``never_skipped``), and the per-kind summaries are
given with and without such entries."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from ..core.elastic import ElasticNet
from ..core.sampling import Architecture, SamplingSpace, SubnetSpec, delete_blocks, permute_blocks, skippable_blocks
from ..core.spaces import never_skipped
from ..evaluation.sharded import evaluate_subnets_sharded
from .stats import quantiles

KINDS = ("delete_one", "delete_k", "permute_k")
DEFAULT_LIMIT = 5000

Block = tuple[int, int]


@dataclass(frozen=True)
class Destroyed:
    """One destroyed network: its label, k, spec, and the blocks deleted or moved."""

    label: str
    k: int
    spec: SubnetSpec
    blocks: tuple[Block, ...]


@dataclass
class DestructionPlan:
    """The destroyed networks per kind, and per kind and k: ``{"total", "evaluated", "sampled"}``."""

    entries: dict[str, list[Destroyed]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    coverage: dict[str, dict[str, dict]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    def record(self, kind: str, k: int, total: int, chosen: list[Destroyed]) -> None:
        self.entries[kind] += chosen
        self.coverage[kind][str(k)] = {"total": total, "evaluated": len(chosen), "sampled": len(chosen) < total}


def _combinations(items: list, k: int, limit: int, gen: torch.Generator) -> list[tuple]:
    """All k-combinations if there are at most ``limit``, else ``limit`` distinct seeded ones."""
    if math.comb(len(items), k) <= limit:
        return list(itertools.combinations(items, k))
    chosen: dict[tuple, None] = {}
    while len(chosen) < limit:
        idx = sorted(torch.randperm(len(items), generator=gen)[:k].tolist())
        chosen.setdefault(tuple(items[i] for i in idx))
    return list(chosen)


def _label(blocks) -> str:
    return " ".join(f"{s}.{b}" for s, b in blocks)


def _permutations(arch: Architecture, k: int, limit: int, gen: torch.Generator) -> tuple[int, list[Destroyed]]:
    """``(number of choices, the permuted networks)`` for k blocks within a stage."""
    candidates = []
    for s, skip in enumerate(arch.skippable):
        movable = [b for b, ok in enumerate(skip) if ok]
        candidates += [(s, c) for c in itertools.combinations(movable, k)]
    total = len(candidates)
    if total > limit:
        picks = torch.randperm(total, generator=gen)[:limit].tolist()
        candidates = [candidates[i] for i in sorted(picks)]
    out = []
    for s, chosen in candidates:
        movable = [b for b, ok in enumerate(arch.skippable[s]) if ok]
        mapping = dict(zip(chosen, chosen[1:] + chosen[:1]))  # every chosen block moves
        order = [mapping.get(b, b) for b in movable]
        label = f"stage {s}: {'-'.join(map(str, chosen))}"
        out.append(Destroyed(label, k, permute_blocks(arch, s, order), tuple((s, b) for b in chosen)))
    return total, out


def destruction_plan(arch: Architecture, max_k: int = 4, limit: int = DEFAULT_LIMIT, seed: int = 0) -> DestructionPlan:
    """Every destroyed network of the three kinds (see the module docstring), with coverage."""
    gen = torch.Generator().manual_seed(seed)
    blocks = skippable_blocks(arch)
    plan = DestructionPlan()
    one = [Destroyed(f"{s}.{b}", 1, delete_blocks(arch, [(s, b)]), ((s, b),)) for s, b in blocks]
    plan.record("delete_one", 1, len(blocks), one)
    for k in range(1, min(max_k, len(blocks)) + 1):
        chosen = [
            Destroyed(_label(c), k, delete_blocks(arch, c), tuple(c)) for c in _combinations(blocks, k, limit, gen)
        ]
        plan.record("delete_k", k, math.comb(len(blocks), k), chosen)
    for k in range(2, max_k + 1):
        total, chosen = _permutations(arch, k, limit, gen)
        plan.record("permute_k", k, total, chosen)
    return plan


def destruction_specs(
    arch: Architecture, max_k: int = 4, limit: int = DEFAULT_LIMIT, seed: int = 0
) -> dict[str, list[tuple[str, int, SubnetSpec]]]:
    """``{"delete_one": [(label, 1, spec)], "delete_k": [(label, k, spec)], "permute_k": [...]}``
    (see :func:`destruction_plan`)."""
    plan = destruction_plan(arch, max_k, limit, seed)
    return {kind: [(e.label, e.k, e.spec) for e in entries] for kind, entries in plan.entries.items()}


def drop_summary(drops: list[float]) -> dict:
    """Count, mean and the box plot's quantiles of a list of drops (``{"count": 0}`` if empty)."""
    if not drops:
        return {"count": 0}
    return {"count": len(drops), "mean": sum(drops) / len(drops), **quantiles(drops)}


def summarise(entries: list[dict]) -> dict:
    """Per kind: drops of all entries, of those that touch only blocks training skips
    (``without_never_skipped``) and of those touching a never-skipped block, overall and per k."""

    def split(items: list[dict]) -> dict:
        return {
            "all": drop_summary([e["drop"] for e in items]),
            "without_never_skipped": drop_summary([e["drop"] for e in items if not e["never_skipped"]]),
            "with_never_skipped": drop_summary([e["drop"] for e in items if e["never_skipped"]]),
        }

    ks = sorted({e["k"] for e in entries})
    return {**split(entries), "by_k": {str(k): split([e for e in entries if e["k"] == k]) for k in ks}}


def run_destruction(
    model: ElasticNet,
    batches_fn,
    calibration,
    bn: str,
    max_k: int = 4,
    limit: int = DEFAULT_LIMIT,
    seed: int = 0,
    space: SamplingSpace | None = None,
    sampler: str = "ordered",
) -> dict:
    """Evaluate every destroyed network in one shared walk. ``batches_fn()`` yields the test
    batches; ``space``/``sampler``: how the network was trained (default: the default space,
    ordered), which decides the never-skipped blocks. Returns per kind a list of
    ``{"label", "k", "spec", "top1", "drop", "never_skipped"}``, and ``coverage`` (per kind
    and k: total, evaluated, sampled), ``summary`` (:func:`summarise`), ``never_skipped_blocks``."""
    arch = model.architecture
    space = space or SamplingSpace.default(arch)
    kept = never_skipped(space, arch, sampler)
    plan = destruction_plan(arch, max_k, limit, seed)
    flat = [arch.full()] + [e.spec for entries in plan.entries.values() for e in entries]
    unique = list(dict.fromkeys(flat))
    # under torchrun the destroyed networks are split across the processes (every rank gets all scores)
    scores = {s.spec: s.top1 for s in evaluate_subnets_sharded(model, unique, batches_fn, calibration, bn)}
    intact = scores[arch.full().to_text()]
    result = {"bn": bn, "intact_top1": intact}
    for kind, entries in plan.entries.items():
        result[kind] = [
            {
                "label": e.label,
                "k": e.k,
                "spec": e.spec.to_text(),
                "top1": scores[e.spec.to_text()],
                "drop": intact - scores[e.spec.to_text()],
                "never_skipped": any(b in kept for b in e.blocks),
            }
            for e in entries
        ]
    result["coverage"] = plan.coverage
    result["summary"] = {kind: summarise(result[kind]) for kind in KINDS}
    result["never_skipped_blocks"] = sorted(f"{s}.{b}" for s, b in kept if arch.skippable[s][b])
    result["training_space"] = {"depths": [list(d) for d in space.depths], "sampler": sampler}
    result["limit"] = limit
    return result
