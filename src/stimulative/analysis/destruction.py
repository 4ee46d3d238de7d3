"""Destruction at test time, without retraining (paper Fig. 6): delete one block, delete k
blocks, permute k blocks within a stage; report the top-1 drop against the intact network."""

from __future__ import annotations

import itertools
import math

import torch

from ..core.elastic import ElasticNet
from ..core.sampling import Architecture, SubnetSpec, delete_blocks, permute_blocks, skippable_blocks
from ..evaluation.sharded import evaluate_subnets_sharded


def _combinations(items: list, k: int, limit: int, gen: torch.Generator) -> list[tuple]:
    """All k-combinations if there are at most ``limit``, else ``limit`` distinct seeded ones."""
    if math.comb(len(items), k) <= limit:
        return list(itertools.combinations(items, k))
    chosen: dict[tuple, None] = {}
    while len(chosen) < limit:
        idx = sorted(torch.randperm(len(items), generator=gen)[:k].tolist())
        chosen.setdefault(tuple(items[i] for i in idx))
    return list(chosen)


def destruction_specs(
    arch: Architecture, max_k: int = 4, limit: int = 100, seed: int = 0
) -> dict[str, list[tuple[str, int, SubnetSpec]]]:
    """``{"delete_one": [(label, 1, spec)], "delete_k": [(label, k, spec)], "permute_k": [...]}``.

    Combinations (and permutations) are all taken when there are at most ``limit`` per k,
    else a seeded sample of ``limit``. A permutation of k blocks moves every one of them
    (a cyclic shift of the chosen blocks' positions)."""
    gen = torch.Generator().manual_seed(seed)
    blocks = skippable_blocks(arch)
    out: dict[str, list[tuple[str, int, SubnetSpec]]] = {"delete_one": [], "delete_k": [], "permute_k": []}
    for s, b in blocks:
        out["delete_one"].append((f"{s}.{b}", 1, delete_blocks(arch, [(s, b)])))
    for k in range(1, min(max_k, len(blocks)) + 1):
        for combo in _combinations(blocks, k, limit, gen):
            out["delete_k"].append((" ".join(f"{s}.{b}" for s, b in combo), k, delete_blocks(arch, combo)))
    for k in range(2, max_k + 1):
        candidates = []
        for s, skip in enumerate(arch.skippable):
            movable = [b for b, ok in enumerate(skip) if ok]
            candidates += [(s, c) for c in itertools.combinations(movable, k)]
        if len(candidates) > limit:
            picks = torch.randperm(len(candidates), generator=gen)[:limit].tolist()
            candidates = [candidates[i] for i in sorted(picks)]
        for s, chosen in candidates:
            movable = [b for b, ok in enumerate(arch.skippable[s]) if ok]
            mapping = dict(zip(chosen, chosen[1:] + chosen[:1]))  # every chosen block moves
            order = [mapping.get(b, b) for b in movable]
            out["permute_k"].append((f"stage {s}: {'-'.join(map(str, chosen))}", k, permute_blocks(arch, s, order)))
    return out


def run_destruction(
    model: ElasticNet, batches_fn, calibration, bn: str, max_k: int = 4, limit: int = 100, seed: int = 0
) -> dict:
    """Evaluate every destroyed network in one shared walk. ``batches_fn()`` yields the test
    batches. Returns per kind a list of ``{"label", "k", "spec", "top1", "drop"}``."""
    arch = model.architecture
    specs = destruction_specs(arch, max_k, limit, seed)
    flat = [arch.full()] + [spec for entries in specs.values() for _, _, spec in entries]
    unique = list(dict.fromkeys(flat))
    # under torchrun the destroyed networks are split across the processes (every rank gets all scores)
    scores = {s.spec: s.top1 for s in evaluate_subnets_sharded(model, unique, batches_fn, calibration, bn)}
    intact = scores[arch.full().to_text()]
    result = {"bn": bn, "intact_top1": intact}
    for kind, entries in specs.items():
        result[kind] = [
            {
                "label": label,
                "k": k,
                "spec": spec.to_text(),
                "top1": scores[spec.to_text()],
                "drop": intact - scores[spec.to_text()],
            }
            for label, k, spec in entries
        ]
    return result
