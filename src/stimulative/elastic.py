"""Stages and blocks of a residual network, and running one sub-network of it.

An :class:`ElasticNet` is ``stem -> stages (each a list of blocks) -> head``. Every block
is a :class:`ResidualBlock` that splits its computation into a residual ``branch(x)`` and a
``merge(x, b)`` (``x + b`` followed by the block's post-activation, if any), so the same
weights serve the full block, the skipped block (identity) and the branch alone (raw paths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .sampling import BRANCH, Architecture, SubnetSpec


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
    """A residual network whose forward can run any sub-network given as a SubnetSpec."""

    stem: nn.Module
    stages: nn.ModuleList  # of nn.ModuleList of ResidualBlock
    head: nn.Module

    @property
    def architecture(self) -> Architecture:
        return Architecture(tuple(tuple(bool(b.skippable) for b in stage) for stage in self.stages))

    def block(self, stage: int, index: int) -> ResidualBlock:
        return self.stages[stage][index]

    def forward(self, x: torch.Tensor, spec: SubnetSpec | None = None) -> torch.Tensor:
        if spec is None:
            h = self.stem(x)
            for stage in self.stages:
                for block in stage:
                    h = block(h)
            return self.head(h)
        return self.forward_trace(x, spec)[0]

    def forward_trace(
        self,
        x: torch.Tensor,
        spec: SubnetSpec,
        start: tuple[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``spec`` and return ``(logits, trace)``; ``trace[j]`` is the activation after
        the first ``j`` blocks of ``spec.flat()`` (``trace[0]`` is the stem's output).

        ``start=(k, h)`` resumes from an activation ``h`` already computed for the first
        ``k`` blocks (a shared prefix), skipping the stem and those blocks; the trace then
        begins at ``h`` (``trace[j]`` follows ``k + j`` blocks)."""
        steps = spec.flat()
        k, h = start if start is not None else (0, self.stem(x))
        trace = [h]
        for s, b, path in steps[k:]:
            h = self.stages[s][b].run(h, path)
            trace.append(h)
        return self.head(h), trace


def shared_prefix(a: Sequence, b: Sequence) -> int:
    """Length of the common prefix of two block sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
