"""Evaluation of the full network and of many sub-networks, sharing work between them.

Sub-networks that agree on their first blocks share those activations. :func:`subnet_logits`
walks the prefix tree of the requested sub-networks depth first, computing each distinct
prefix once. With BN recalibration, a prefix's statistics depend only on the prefix, so they
are estimated once per tree node too. :func:`naive_subnet_logits` is the straightforward
one-sub-network-at-a-time version, kept as the reference the shared walk must equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .batchnorm import BN_MODES, bn_layers, bn_state, calibration_mode, load_bn_state, preserved_bn_state
from .elastic import ElasticNet
from .loss import kl_divergence
from .sampling import SubnetSpec

Batches = Sequence[torch.Tensor]


@dataclass
class _Node:
    children: dict[tuple[int, int, str], _Node] = field(default_factory=dict)
    leaves: list[int] = field(default_factory=list)
    bn: list | None = None  # recalibrated BN statistics of the block that leads here
    head_bn: list | None = None  # recalibrated BN statistics of the head, at a leaf


def _build_tree(specs: Sequence[SubnetSpec]) -> _Node:
    root = _Node()
    for i, spec in enumerate(specs):
        node = root
        for step in spec.flat():
            node = node.children.setdefault(step, _Node())
        node.leaves.append(i)
    return root


def _check_bn_mode(bn: str) -> None:
    if bn not in BN_MODES:
        raise ValueError(f"unknown BN mode {bn!r}; choose from {', '.join(BN_MODES)}")


class SubnetWalk:
    """The prefix tree of ``specs`` prepared for inference. Use as a context manager (the
    model's own BN statistics are restored on exit); calling it on an input chunk yields
    ``(spec_indices, logits)`` for every sub-network, depth first, children before their
    own leaves (so the first spec comes first whenever it is the deepest on its path, e.g.
    the full network listed first).

    ``bn="recalibrated"``: each sub-network's BN statistics are re-estimated on the
    ``calibration`` batches (train-mode forward, plain average), as the reference
    implementation does before every evaluation. ``bn="running"``: the full network's
    running statistics are used as they are."""

    def __init__(
        self, model: ElasticNet, specs: Sequence[SubnetSpec], calibration: Batches = (), bn: str = "recalibrated"
    ) -> None:
        _check_bn_mode(bn)
        self.recalibrate = bn == "recalibrated"
        if self.recalibrate and not calibration:
            raise ValueError("BN recalibration needs calibration batches (training images)")
        self.model, self.calibration = model, calibration
        self.root = _build_tree(specs)
        self.stem_bn: list | None = None
        self._guard = preserved_bn_state(model)

    @torch.no_grad()
    def __enter__(self) -> SubnetWalk:
        self._guard.__enter__()
        if self.recalibrate:
            # In calibration every BN layer normalises with its batch's own statistics, so no
            # activation depends on the statistics being estimated: the walk goes batch by
            # batch, each tree node resuming its own running average. Memory: one batch's
            # activations per level of the walk, not the whole calibration set per level.
            with calibration_mode(self.model):
                for x in self.calibration:
                    _calibrate(self.model, self.root, self.model.stem(x))
            self.stem_bn = bn_state(self.model.stem)
        self.model.eval()
        return self

    def __exit__(self, *exc) -> None:
        self._guard.__exit__(*exc)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Iterator[tuple[list[int], torch.Tensor]]:
        if self.stem_bn is not None:
            load_bn_state(self.model.stem, self.stem_bn)
        yield from _infer(self.model, self.root, self.model.stem(x), self.recalibrate)


def subnet_logits(
    model: ElasticNet,
    specs: Sequence[SubnetSpec],
    inputs: Iterable[torch.Tensor],
    calibration: Batches = (),
    bn: str = "recalibrated",
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Yield ``(chunk, spec_indices, logits)`` for every input chunk and sub-network."""
    with SubnetWalk(model, specs, calibration, bn) as walk:
        for c, x in enumerate(inputs):
            for indices, logits in walk(x):
                yield c, indices, logits


def _calibrate(model: ElasticNet, node: _Node, h: torch.Tensor) -> None:
    """Add one calibration batch (``h``: the activation reaching ``node``) to the BN running
    averages of every node below, depth first (the model is in calibration mode)."""
    for (s, b, path), child in node.children.items():
        block = model.stages[s][b]
        _resume_average(block, child.bn)
        out = block.run(h, path)
        child.bn = bn_state(block)
        _calibrate(model, child, out)
    if node.leaves:
        _resume_average(model.head, node.head_bn)
        model.head(h)
        node.head_bn = bn_state(model.head)


def _resume_average(module: torch.nn.Module, state: list | None) -> None:
    """Load a node's running BN averages so far (counters included), or start afresh."""
    if state is None:
        for m in bn_layers(module):
            m.reset_running_stats()
    else:
        load_bn_state(module, state)


def _infer(model: ElasticNet, node: _Node, h: torch.Tensor, recalibrate: bool):
    for (s, b, path), child in node.children.items():
        block = model.stages[s][b]
        if recalibrate:
            load_bn_state(block, child.bn)
        yield from _infer(model, child, block.run(h, path), recalibrate)
    if node.leaves:
        if recalibrate:
            load_bn_state(model.head, node.head_bn)
        yield node.leaves, model.head(h)


@torch.no_grad()
def naive_subnet_logits(
    model: ElasticNet, spec: SubnetSpec, inputs: Batches, calibration: Batches = (), bn: str = "recalibrated"
) -> list[torch.Tensor]:
    """One sub-network's logits per input chunk, computed on its own (the reference way)."""
    _check_bn_mode(bn)
    with preserved_bn_state(model):
        if bn == "recalibrated":
            with calibration_mode(model):
                for x in calibration:
                    model(x, spec)
        model.eval()
        return [model(x, spec) for x in inputs]


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
    bn: str = "recalibrated",
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
    bn: str = "recalibrated",
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

