"""Evaluating the full network and all its sub-networks under a named BN protocol, in one
call: :func:`evaluate_subnets` returns a :class:`SubnetSummary`. Built on
:mod:`stimulative.evaluation.scores` (one shared walk over the sub-networks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from ..core.batchnorm import BN_PROTOCOLS, needs_calibration
from ..core.elastic import ElasticNet
from ..core.sampling import SamplingSpace, SubnetSpec, enumerate_subnets, parse_spec
from ..core.spaces import build_space
from ..evaluation.scores import SubnetScore, summarize
from ..evaluation.scores import evaluate_subnets as score_subnets


@dataclass
class SubnetSummary:
    """Top-1 (%) of the full network and statistics of the sub-networks' top-1 (population
    std), under BN protocol ``bn``; ``scores`` has every sub-network's top-1, CE and KL."""

    bn: str
    full: float
    count: int
    mean: float
    std: float
    min: float
    max: float
    scores: list[SubnetScore]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """The scalars, named for a logger: ``{prefix}full_top1``, ``{prefix}top1_mean``, ..."""
        names = {"full_top1": self.full, "top1_mean": self.mean, "top1_std": self.std}
        names |= {"top1_min": self.min, "top1_max": self.max}
        return {f"{prefix}{k}": float(v) for k, v in names.items()}


def evaluate_subnets(
    model: ElasticNet,
    batches: Iterable,
    calibration: Iterable | None = None,
    bn: str = "full",
    subnets: str | SamplingSpace | Sequence[SubnetSpec | str] | None = None,
) -> SubnetSummary:
    """Evaluate the full network and every sub-network on ``batches`` (``(x, y)`` pairs,
    moved to the model's device) under the BN protocol ``bn``: ``"full"``, ``"subnet"`` or
    ``"running"`` (see :data:`BN_PROTOCOLS`). ``calibration``: training images (tensors or
    ``(x, y)`` pairs; about 2,000 images, training transform) to re-estimate BN statistics
    with, needed by ``"full"`` and ``"subnet"``. ``subnets``: None for every sub-network of
    the default space, a space (``"space3"``, ``"2,2,2"`` minimum depths, or a
    :class:`SamplingSpace`), or a list of specs (``SubnetSpec`` or text such as ``"1,2,1"``).
    The model's weights, BN statistics and train/eval mode are unchanged afterwards."""
    if bn not in BN_PROTOCOLS:  # the public API takes the protocol names only
        raise ValueError(f"unknown BN protocol {bn!r}; choose from {', '.join(BN_PROTOCOLS)}")
    mode = bn
    device = next(model.parameters()).device
    calib = [_images(b).to(device) for b in (calibration or ())]
    if needs_calibration(mode) and not calib:
        raise ValueError(f"bn={bn!r} re-estimates BN statistics: pass calibration batches (training images)")
    specs = resolve_subnets(model, subnets)
    data = ((x.to(device), y.to(device)) for x, y in batches)
    full, *subs = score_subnets(model, [model.architecture.full(), *specs], data, calib, mode)
    stats = summarize(subs)
    return SubnetSummary(bn, full.top1, stats["count"], stats["mean"], stats["std"], stats["min"], stats["max"], subs)


def resolve_subnets(
    model: ElasticNet, subnets: str | SamplingSpace | Sequence[SubnetSpec | str] | None
) -> list[SubnetSpec]:
    """The sub-networks named by ``subnets`` (see :func:`evaluate_subnets`), checked."""
    arch = model.architecture
    if subnets is None or isinstance(subnets, str):
        space = build_space(arch, subnets or "", "subnets")
        return list(enumerate_subnets(space, arch))
    if isinstance(subnets, SamplingSpace):
        return list(enumerate_subnets(subnets, arch))
    specs = [parse_spec(s) if isinstance(s, str) else s for s in subnets]
    if not specs:
        raise ValueError("subnets: the list is empty")
    for spec in specs:
        arch.validate(spec)
    return specs


def _images(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch
