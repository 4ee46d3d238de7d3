"""Stages and blocks of a residual network, and running one sub-network of it.

An :class:`ElasticNet` is ``stem -> stages (each a list of blocks) -> head``. Every block
is a :class:`ResidualBlock` that splits its computation into a residual ``branch(x)`` and a
``merge(x, b)`` (``x + b`` followed by the block's post-activation, if any), so the same
weights serve the full block, the skipped block (identity) and the branch alone (raw paths).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .batchnorm import bn_layers
from .sampling import BRANCH, FULL, Architecture, SubnetSpec


class ResidualBlock(nn.Module):
    """A block of a stage. ``skippable`` is True only with an identity shortcut, i.e. the
    block keeps its input's shape and adds its input back unchanged."""

    skippable: bool = False

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def merge(self, x: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        """Combine input and branch output; ``x=None`` takes the branch alone."""
        return b if x is None else x + b

    def run(self, x: torch.Tensor, path: str) -> torch.Tensor:
        b = self.branch(x)
        return self.merge(None if path == BRANCH else x, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(x, self.branch(x))


class ElasticNet(nn.Module):
    """A residual network ``stem -> stages -> head`` whose forward can run the full network or
    any of its sub-networks, given as a :class:`SubnetSpec`.

    ``model.architecture`` (a property, not a method) tells which blocks each stage has and
    which can be skipped; ``model.architecture.full()`` is the full network's spec."""

    stem: nn.Module
    stages: nn.ModuleList  # of nn.ModuleList of ResidualBlock
    head: nn.Module

    @property
    def architecture(self) -> Architecture:
        """Per stage, which blocks are skippable (a property: ``model.architecture.full()``)."""
        return Architecture(tuple(tuple(bool(b.skippable) for b in stage) for stage in self.stages))

    def block(self, stage: int, index: int) -> ResidualBlock:
        return self.stages[stage][index]

    def forward(self, x: torch.Tensor, spec: SubnetSpec | None = None) -> torch.Tensor:
        """Logits ``(B, classes)`` of the full network (``spec=None``) or of the sub-network
        ``spec`` for the input batch ``x`` ``(B, C, H, W)``. ``spec`` lists, per stage, the
        blocks that run, in order (e.g. ``parse_spec("1,2,1")``: the first 1, 2 and 1 blocks of
        three stages); the weights are the full network's, shared.

        In train mode a sub-network's pass would record its batch statistics into the BN
        running statistics the full network uses at test time, silently degrading it (see
        :func:`stimulative.frozen_bn_stats`). So that misuse is an error here:
        train with :class:`stimulative.Stimulative` (the joint forward guards them), or run the
        pass inside :func:`stimulative.frozen_bn_stats`, or, to let sub-networks update the
        statistics on purpose (as the official code does), inside :func:`subnet_bn_updates`.
        :meth:`forward_trace` is the unchecked low-level pass."""
        if spec is None:
            h = self.stem(x)
            for stage in self.stages:
                for block in stage:
                    h = block(h)
            return self.head(h)
        if self.training:
            _check_subnet_bn(self, spec)
        return self.forward_trace(x, spec)[0]

    def forward_trace(
        self,
        x: torch.Tensor,
        spec: SubnetSpec,
        start: tuple[int, torch.Tensor] | None = None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``spec`` and return ``(logits, trace)``; ``trace[j]`` is the activation after
        the first ``j`` blocks of ``spec.flat()`` (``trace[0]`` is the stem's output).

        ``start=(k, h)`` resumes from an activation ``h`` already computed for the first
        ``k`` blocks (a shared prefix), skipping the stem and those blocks; the trace then
        begins at ``h`` (``trace[j]`` follows ``k + j`` blocks).

        ``keep`` (stochastic depth), ``(B, blocks)`` from :func:`drop_path_scales`: column
        ``j`` scales the residual branch of the network's ``j``-th block per sample (0: the
        block is the identity for that sample; 1/p: kept). Only skippable blocks run whole
        are scaled.

        Unlike :meth:`forward` this does not check BN: the joint forward calls it inside
        :func:`stimulative.frozen_bn_stats`, and individual training lets its one sub-network
        record its own statistics."""
        steps = spec.flat()
        k, h = start if start is not None else (0, self.stem(x))
        columns = block_columns(self.architecture) if keep is not None else None
        trace = [h]
        for s, b, path in steps[k:]:
            block = self.stages[s][b]
            if columns is not None and path == FULL and block.skippable:
                h = block.merge(h, drop_path(block.branch(h), keep[:, columns[s] + b]))
            else:
                h = block.run(h, path)
            trace.append(h)
        return self.head(h), trace


# ---------------------------------------------------------------------------------------
# the misuse guard: a sub-network's train-mode pass must not record BN statistics unawares


@contextmanager
def subnet_bn_updates(model: ElasticNet) -> Iterator[None]:
    """Inside, ``model(x, spec)`` in train mode may update the BN running statistics: the
    official code's behaviour, chosen on purpose (see :meth:`ElasticNet.forward`). Nests; it
    concerns ``model`` only (an attribute of the instance, not a global switch)."""
    model._subnet_bn_updates = getattr(model, "_subnet_bn_updates", 0) + 1
    try:
        yield
    finally:
        model._subnet_bn_updates -= 1


def _check_subnet_bn(model: ElasticNet, spec: SubnetSpec) -> None:
    """Raise if running ``spec`` now would record its statistics into BN layers silently."""
    if getattr(model, "_subnet_bn_updates", 0) or spec == model.architecture.full():
        return
    recording = [m for m in bn_layers(model) if m.training and m.track_running_stats]
    if recording:
        raise RuntimeError(
            f"sub-network {spec} run in train mode would update the running statistics of {len(recording)} BN "
            "layers, which the full network uses at test time. Train with stimulative.Stimulative (its joint "
            "forward guards them), or wrap the pass in `with stimulative.frozen_bn_stats(model):`, or, to let "
            "sub-networks update them on purpose, `with stimulative.subnet_bn_updates(model):`; for inference "
            "call model.eval() first"
        )


def shared_prefix(a: Sequence, b: Sequence) -> int:
    """Length of the common prefix of two block sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------------------------------
# stochastic depth (Huang et al. 2016), as a per-sample scale of the residual branches


def block_columns(arch: Architecture) -> list[int]:
    """Index of each stage's first block in the network's block order (stage-major)."""
    out, n = [], 0
    for size in arch.stage_sizes:
        out.append(n)
        n += size
    return out


def survival_probabilities(arch: Architecture, drop_path_rate: float) -> list[float]:
    """Survival probability of every block in network order, by Huang et al.'s linear decay
    rule: block ``l`` of ``L`` (1-based) survives with ``1 - l / L * drop_path_rate``, so the
    last one with ``1 - drop_path_rate`` (their ``p_L``; 0.5 in the paper). Blocks without
    an identity shortcut are never dropped (probability 1), as no sub-network skips them."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop path rate must be in [0, 1), got {drop_path_rate}")
    flags = [k for stage in arch.skippable for k in stage]
    total = len(flags)
    return [1.0 - (i + 1) / total * drop_path_rate if skip else 1.0 for i, skip in enumerate(flags)]


def drop_path_scales(arch: Architecture, drop_path_rate: float, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, blocks)`` per-sample branch scales: 0 where a block is dropped for that
    sample, ``1/p`` where it is kept (so each block's expected output is the full block's,
    and evaluation runs the full network unscaled, as timm's ``drop_path``). Drawn on the
    CPU from ``generator``: a run's drops are a pure function of its seed and step."""
    p = torch.tensor(survival_probabilities(arch, drop_path_rate))  # (blocks,)
    kept = torch.rand(batch, len(p), generator=generator) < p
    return kept.float() / p


def drop_path(b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The branch output ``b`` ``(B, ...)`` times a per-sample ``scale`` ``(B,)``."""
    return b * scale.to(device=b.device, dtype=b.dtype).view(-1, *([1] * (b.dim() - 1)))
