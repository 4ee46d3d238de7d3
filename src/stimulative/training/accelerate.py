"""Options for fast training on accelerators: the channels-last memory format and per-block
``torch.compile`` ("regional compilation").

Compiling the whole network would bake one sub-network into the graph, so changing the
sub-network would recompile every step. Instead every block's :meth:`ResidualBlock.run`, the
stem and the head are compiled on their own: a sub-network is then a different sequence of
already-compiled pieces. Blocks of the same class and shapes share their compiled code (the
parameters are graph inputs), so the number of graphs is bounded by :func:`graph_bound`,
whatever the sub-networks drawn."""

from __future__ import annotations

import torch

from ..core.elastic import ElasticNet

# the BatchNorm behaviours a block meets: training (recording statistics), training with the
# statistics frozen (sub-networks), evaluation, recalibration (momentum None)
BN_STATES = 4
# a guard failing on a shape recompiles once with that dimension dynamic (PyTorch's automatic
# dynamic shapes): at most a static and a dynamic graph per case
SHAPE_VARIANTS = 2


def block_signatures(model: ElasticNet) -> set[tuple]:
    """Distinct kinds of block: class, identity shortcut, and the shapes of their tensors."""
    return {
        (
            type(b).__qualname__,
            bool(b.skippable),
            tuple((n, tuple(t.shape)) for n, t in [*b.named_parameters(), *b.named_buffers()]),
        )
        for stage in model.stages
        for b in stage
    }


def graph_bound(model: ElasticNet) -> int:
    """Most graphs :func:`compile_blocks` can produce for ``model``: per kind of block and
    path (whole block, or its branch alone for raw paths), plus the stem and the head, per
    BN behaviour and shape variant."""
    paths = sum(2 if skippable else 1 for _, skippable, _ in block_signatures(model))
    return (paths + 2) * BN_STATES * SHAPE_VARIANTS


def compile_blocks(
    model: ElasticNet, backend: str | object = "inductor", mode: str | None = None, dynamic: bool | None = None
) -> int:
    """Compile ``model``'s stem, head and every block's ``run`` in place; return
    :func:`graph_bound`. Dynamo's per-function recompile limit is raised to the bound, since
    all blocks share the code of ``ResidualBlock.run``."""
    bound = graph_bound(model)
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), bound))
    options = {"backend": backend, "mode": mode, "dynamic": dynamic}
    for stage in model.stages:
        for block in stage:
            block.run = torch.compile(block.run, **options)
    model.stem.compile(**options)
    model.head.compile(**options)
    return bound


def prepare_model(model: ElasticNet, channels_last: bool = False, compile: bool = False) -> ElasticNet:
    """Apply ``--channels-last`` (weights in NHWC; convolutions then produce NHWC
    activations) and ``--compile`` (:func:`compile_blocks`) to a model on its device."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        compile_blocks(model)
    return model
