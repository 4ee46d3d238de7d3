"""DistributedDataParallel around the joint forward of the network and its sub-networks
(see :mod:`stimulative.runtime.distributed` for the process group and the data shares)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..runtime.distributed import DistEnv


class JointForward(nn.Module):
    """``fn(module, *args)`` as the forward of one module, so that DDP sees the full network
    and every sampled sub-network in a single forward call (one forward, one backward).

    ``state_dict`` keys gain a ``module.`` prefix: save the inner ``module``, not this."""

    def __init__(self, module: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(self.module, *args, **kwargs)


def wrap_ddp(module: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel around ``module`` (already on ``env.device``)."""
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)  # buffers: rank 0's, broadcast at every forward


def freeze_unused(model: nn.Module, used_blocks: Iterable[tuple[int, int]]) -> None:
    """``requires_grad=False`` on the blocks a fixed sub-network never runs (individual
    training), so DDP expects no gradient for them; their weights stay as they are, exactly
    as in one process where their gradient is None and SGD leaves them."""
    used = set(used_blocks)
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            if (s, b) not in used:
                for p in block.parameters():
                    p.requires_grad_(False)
