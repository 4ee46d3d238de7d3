"""Top-1, cross-entropy and KL to the full network, for the full network and for many
sub-networks at once (through the shared walk of :mod:`stimulative.evaluation.walk`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.elastic import ElasticNet
from ..core.loss import kl_divergence
from ..core.sampling import SubnetSpec
from .walk import Batches, SubnetWalk


@dataclass
class SubnetScore:
    spec: str
    top1: float
    ce: float  # mean cross-entropy on the evaluation set
    kl: float  # mean KL(full network || this sub-network), per image


def evaluate_subnets(
    model: ElasticNet,
    specs: Sequence[SubnetSpec],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    calibration: Batches = (),
    bn: str = "subnet",
    progress: Callable[[int], None] | None = None,
) -> list[SubnetScore]:
    """Top-1, CE and KL to the full network for each sub-network (shared walk)."""
    full = model.architecture.full()
    all_specs = [full, *specs]  # the full network first: the reference for the KL
    # (correct, CE sum, KL sum) per sub-network, summed in float64 on the device: no host
    # synchronisation per sub-network and chunk, one transfer at the end
    sums: list[torch.Tensor | float] = [0.0] * len(all_specs)
    count = 0
    with SubnetWalk(model, all_specs, calibration, bn) as walk:
        for x, y in batches:
            count += len(y)
            reference = None
            for indices, logits in walk(x):
                reference = logits if 0 in indices else reference
                hits = (logits.argmax(1) == y).sum()
                loss = F.cross_entropy(logits.float(), y, reduction="sum")
                div = kl_divergence(reference, logits)
                row = torch.stack([hits.double(), loss.double(), div.double() * len(y)])
                for i in indices:
                    sums[i] = sums[i] + row
                if progress is not None:
                    progress(len(indices))
    table = torch.stack([s if torch.is_tensor(s) else torch.zeros(3, dtype=torch.float64) for s in sums]).cpu().tolist()
    return [
        SubnetScore(spec.to_text(), 100.0 * correct / count, ce / count, kl / count)
        for spec, (correct, ce, kl) in zip(all_specs, table)
    ][1:]


def evaluate_full(
    model: ElasticNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    calibration: Batches = (),
    bn: str = "subnet",
) -> dict[str, float]:
    """Top-1 and top-5 (%) and mean CE of the full network."""
    top1 = top5 = loss = 0.0
    count = 0
    with SubnetWalk(model, [model.architecture.full()], calibration, bn) as walk:
        for x, y in batches:
            ((_, logits),) = walk(x)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (top[:, 0] == y).sum().item()
            top5 += (top == y[:, None]).any(1).sum().item()
            loss += F.cross_entropy(logits.float(), y, reduction="sum").item()
            count += len(y)
    return {"top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "ce": loss / count}


def summarize(scores: Sequence[SubnetScore]) -> dict:
    """count, mean, std (population), min, max of the sub-networks' top-1."""
    values = [s.top1 for s in scores]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {
        "count": len(values),
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "per_subnet": [{"spec": s.spec, "top1": s.top1, "ce": s.ce, "kl": s.kl} for s in scores],
    }
