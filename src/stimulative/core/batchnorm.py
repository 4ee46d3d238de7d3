"""BatchNorm statistics: guarding the full network's running statistics during sub-network
passes, and recalibrating them (reset, then re-estimate on training images) for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# The three BN evaluation protocols, named wherever a number is reported:
# full: the full network's statistics re-estimated on training images, used by every
#   sub-network (the paper's protocol, as the official code re-estimates after each epoch);
# subnet: each sub-network's statistics re-estimated on its own (what a deployment does);
# running: the running (EMA) statistics as trained, no re-estimation.
BN_PROTOCOLS = ("full", "subnet", "running")
BN_MODES = BN_PROTOCOLS
# names used by results written before the protocols were named (read, never written)
LEGACY_BN_NAMES = {"recalibrated": "subnet"}


def bn_protocol(name: str) -> str:
    """The protocol ``name`` stands for (legacy names accepted); a ValueError listing the
    protocols otherwise."""
    name = LEGACY_BN_NAMES.get(name, name)
    if name not in BN_PROTOCOLS:
        raise ValueError(f"unknown BN protocol {name!r}; choose from {', '.join(BN_PROTOCOLS)}")
    return name


def needs_calibration(bn: str) -> bool:
    """Whether protocol ``bn`` re-estimates statistics on training images."""
    return bn_protocol(bn) != "running"


def bn_layers(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def bn_prefix(module: nn.Module) -> nn.Module | None:
    """The leading part of ``module`` that its BN statistics depend on, or None if it holds
    no BN layer: a plain ``nn.Sequential`` up to its last BN layer (recursively), any other
    module whole. A calibration pass need run no further: e.g. a head's pooling and linear
    layers after its last BN change no statistic."""
    if not bn_layers(module):
        return None
    if type(module) is not nn.Sequential:
        return module
    children = list(module)
    last = max(i for i, child in enumerate(children) if bn_layers(child))
    return nn.Sequential(*children[:last], bn_prefix(children[last]))


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Inside, BN layers in train mode still normalise with batch statistics but leave
    their running statistics (and counters) untouched.

    A sub-network's forward sees activations of a different path; letting it update the
    shared running statistics mixes its statistics into the full network's (the official
    code does, and re-estimates the full network's after each epoch; measured in the README
    with --subnet-bn-update). Disabling ``track_running_stats`` makes BatchNorm pass no running buffers to
    ``F.batch_norm`` in train mode, which is exactly "normalise, don't record"."""
    layers = [m for m in bn_layers(module) if m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


def bn_state(module: nn.Module) -> list[tuple[torch.Tensor, ...]]:
    """A copy of every BN layer's running statistics, in module order."""
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bn_layers(module)]


def load_bn_state(module: nn.Module, state: list[tuple[torch.Tensor, ...]]) -> None:
    for m, (mean, var, count) in zip(bn_layers(module), state):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)


@torch.no_grad()
def reestimate_full_network(model: nn.Module, calibration: Iterable[torch.Tensor]) -> None:
    """Replace the BN running statistics by those of the full network on ``calibration``
    batches (train-mode BN, plain average over the batches; the official code does the same
    after each epoch, averaging per-batch biased variances where PyTorch averages unbiased
    ones: a factor n/(n-1) with n = batch x height x width, below 1.001 at our sizes)."""
    with calibration_mode(model):
        for x in calibration:
            model(x)


@contextmanager
def calibration_mode(module: nn.Module) -> Iterator[None]:
    """Reset BN running statistics and accumulate a plain average over the batches that
    follow (momentum=None); only BN layers are in train mode, so dropout stays off. On exit
    the module is back in eval mode with the new statistics."""
    layers = bn_layers(module)
    momenta = [m.momentum for m in layers]
    module.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        yield
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        module.eval()


@contextmanager
def preserved_bn_state(module: nn.Module) -> Iterator[None]:
    """Restore the BN running statistics on exit (evaluation must not change the model)."""
    saved = bn_state(module)
    was_training = module.training
    try:
        yield
    finally:
        load_bn_state(module, saved)
        module.train(was_training)
