"""Evaluation split across the processes of a ``torchrun`` launch: sub-networks in
contiguous runs, test images in contiguous shares; every rank gets all results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..runtime.distributed import all_gather_objects, is_dist, local_batchnorm, shard_bounds, shard_dataset
from .scores import evaluate_full, evaluate_subnets


def evaluate_subnets_sharded(
    model: nn.Module,
    specs: Sequence,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    calibration: Sequence[torch.Tensor] = (),
    bn: str = "subnet",
    progress: Callable[[int], None] | None = None,
) -> list:
    """:func:`stimulative.evaluation.subnets.evaluate_subnets` with the sub-networks split across
    ranks in contiguous runs (neighbours share prefixes, so the shared walk keeps its
    savings) and the scores gathered in the order of ``specs``. Every rank gets all scores.
    BN recalibration is per sub-network, so it is split the same way. ``batches()`` makes a
    fresh iterator over the whole evaluation set."""
    lo, hi = shard_bounds(len(specs))
    mine = list(specs[lo:hi])
    with local_batchnorm(model):
        scores = evaluate_subnets(model, mine, batches(), calibration, bn, progress) if mine else []
    return [s for part in all_gather_objects(scores) for s in part]


def evaluate_full_sharded(
    model: nn.Module,
    dataset: Dataset,
    batches: Callable[[Dataset], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    calibration: Sequence[torch.Tensor] = (),
    bn: str = "subnet",
) -> dict[str, float]:
    """:func:`stimulative.evaluation.subnets.evaluate_full` with the test images split across ranks
    (each counted exactly once, no padding) and the per-rank means combined by their
    counts. ``batches(dataset)`` iterates over a dataset."""
    if not is_dist():
        return evaluate_full(model, batches(dataset), calibration, bn)
    part = shard_dataset(dataset)
    n = len(part)
    with local_batchnorm(model):
        # recalibration runs on every rank (identical result), the test images are split
        scores = evaluate_full(model, batches(part), calibration, bn) if n else {}
    gathered = all_gather_objects((n, scores))
    total = sum(k for k, _ in gathered)
    keys = next(s for k, s in gathered if k).keys()
    return {key: sum(k * s[key] for k, s in gathered if k) / total for key in keys}
