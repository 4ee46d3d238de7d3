"""The shared walk over many sub-networks: each distinct prefix computed once.

Sub-networks that agree on their first blocks share those activations. :func:`subnet_logits`
walks the prefix tree of the requested sub-networks depth first, computing each distinct
prefix once. With BN recalibration, a prefix's statistics depend only on the prefix, so they
are estimated once per tree node too. :func:`naive_subnet_logits` is the straightforward
one-sub-network-at-a-time version (its BN set up by :func:`subnet_bn`), kept as the
reference the shared walk must equal.

Re-estimation runs the head only up to its last BN layer: the rest changes no statistic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..core.batchnorm import (
    bn_layers,
    bn_prefix,
    bn_protocol,
    bn_state,
    calibration_mode,
    load_bn_state,
    needs_calibration,
    preserved_bn_state,
    reestimate_full_network,
)
from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec

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


class SubnetWalk:
    """The prefix tree of ``specs`` prepared for inference. Use as a context manager (the
    model's own BN statistics are restored on exit); calling it on an input chunk yields
    ``(spec_indices, logits)`` for every sub-network, depth first, children before their
    own leaves (so the first spec comes first whenever it is the deepest on its path, e.g.
    the full network listed first).

    ``bn`` names the BN protocol (:data:`stimulative.core.batchnorm.BN_PROTOCOLS`):
    ``"full"``: the full network's statistics are re-estimated on the ``calibration``
    batches (train-mode forward, plain average) and every sub-network uses them (the
    paper's protocol); ``"subnet"``: each sub-network's statistics are re-estimated on
    them, one tree node at a time; ``"running"``: the running statistics as trained."""

    def __init__(
        self, model: ElasticNet, specs: Sequence[SubnetSpec], calibration: Batches = (), bn: str = "subnet"
    ) -> None:
        self.bn = bn_protocol(bn)
        self.recalibrate = self.bn == "subnet"  # per tree node
        if needs_calibration(self.bn) and not calibration:
            raise ValueError(
                f"the {self.bn!r} BN protocol re-estimates statistics on calibration batches (training images)"
            )
        self.model, self.calibration = model, calibration
        self.root = _build_tree(specs)
        self.stem_bn: list | None = None
        self._guard = preserved_bn_state(model)
        self.head_calibration = bn_prefix(model.head)  # the head's part its statistics depend on

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
                    _calibrate(self.model, self.root, self.model.stem(x), self.head_calibration)
            self.stem_bn = bn_state(self.model.stem)
        elif self.bn == "full":
            reestimate_full_network(self.model, self.calibration)
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
    bn: str = "subnet",
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """Yield ``(chunk, spec_indices, logits)`` for every input chunk and sub-network."""
    with SubnetWalk(model, specs, calibration, bn) as walk:
        for c, x in enumerate(inputs):
            for indices, logits in walk(x):
                yield c, indices, logits


def _calibrate(model: ElasticNet, node: _Node, h: torch.Tensor, head: torch.nn.Module | None) -> None:
    """Add one calibration batch (``h``: the activation reaching ``node``) to the BN running
    averages of every node below, depth first (the model is in calibration mode). ``head``:
    the head's part up to its last BN layer, all that a leaf runs (None: no BN in the head)."""
    for (s, b, path), child in node.children.items():
        block = model.stages[s][b]
        _resume_average(block, child.bn)
        out = block.run(h, path)
        child.bn = bn_state(block)
        _calibrate(model, child, out, head)
    if node.leaves and head is not None:
        _resume_average(model.head, node.head_bn)
        head(h)
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
        if recalibrate and node.head_bn is not None:  # None: no BN layer in the head
            load_bn_state(model.head, node.head_bn)
        yield node.leaves, model.head(h)


@contextmanager
def subnet_bn(model: ElasticNet, spec: SubnetSpec, calibration: Batches = (), bn: str = "subnet") -> Iterator[None]:
    """``model`` in eval mode with the BN statistics of protocol ``bn`` for ``spec``:
    re-estimated for it (subnet) or for the full network (full) on the ``calibration``
    batches, or the running ones. The model's own statistics are restored on exit. Call
    under ``torch.no_grad()``."""
    bn = bn_protocol(bn)
    with preserved_bn_state(model):
        if bn == "subnet":
            with calibration_mode(model):
                for x in calibration:
                    model(x, spec)
        elif bn == "full":
            reestimate_full_network(model, calibration)
        model.eval()
        yield


@torch.no_grad()
def naive_subnet_logits(
    model: ElasticNet, spec: SubnetSpec, inputs: Batches, calibration: Batches = (), bn: str = "subnet"
) -> list[torch.Tensor]:
    """One sub-network's logits per input chunk, computed on its own (the reference way)."""
    with subnet_bn(model, spec, calibration, bn):
        return [model(x, spec) for x in inputs]
