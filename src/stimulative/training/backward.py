"""Which backward an ST step takes with several sub-networks: ``joint`` (all their graphs kept,
one backward) or ``per-subnet`` (each one back-propagated to its branch point right after its
forward: :func:`stimulative.training.steps.low_memory_step`). Same gradients up to the order
of float summation; ``auto`` picks per-subnet where it is allowed and there is more than one
sub-network per step, because ``stimulative bench`` measured it as fast as the joint step
within noise and 15-47 % smaller in peak memory on every model with six sub-networks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

BACKWARDS = ("auto", "joint", "per-subnet")
PER_SUBNET = "--backward per-subnet (--low-memory)"
# the boolean --low-memory this choice replaced: true was per-subnet, false the joint step
LOW_MEMORY = {True: "per-subnet", False: "joint"}


def per_subnet_conflict(cfg: TrainConfig, distributed: bool = False) -> str | None:
    """Why the per-subnet backward cannot run with ``cfg`` (None: it can)."""
    if cfg.subnet_bn_update:
        return f"--subnet-bn-update runs each sub-network whole; {PER_SUBNET} shares prefixes: choose one"
    if cfg.amp == "fp16" or cfg.ghost_batches > 1:
        return (
            f"{PER_SUBNET} works without a grad scaler and with one BN group: use --amp bf16 or none, and no "
            "--ghost-batches"
        )
    if distributed:
        return (
            f"{PER_SUBNET} back-propagates each sub-network on its own, which DDP's one backward per forward "
            "does not allow: use --backward joint or auto under torchrun"
        )
    return None


def subnets_per_step(cfg: TrainConfig) -> int:
    """Sub-networks an ST step trains: the sampled ones and the sandwich rule's shallowest."""
    return cfg.subnets_per_step + int(cfg.sandwich) if cfg.mode == "st" else 0


def resolve_backward(cfg: TrainConfig, distributed: bool) -> bool:
    """Use the per-subnet backward? An explicit ``per-subnet`` that cannot run is an error;
    ``auto`` falls back to joint, and keeps joint for one sub-network (the paper's setting,
    where the bench showed no gain)."""
    if cfg.backward == "joint":
        return False
    conflict = per_subnet_conflict(cfg, distributed)
    if cfg.backward == "per-subnet":
        if conflict:
            raise ValueError(conflict)
        return cfg.mode == "st"  # only ST has sub-networks to back-propagate
    return conflict is None and subnets_per_step(cfg) > 1
