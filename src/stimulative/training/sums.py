"""The running sums of an epoch (losses kept on the device: no host synchronisation per
step), combined over processes, and the check that stops a run at a non-finite loss."""

from __future__ import annotations

import torch

from ..runtime import distributed


def new_epoch_sums() -> dict:
    """Running sums of one epoch: losses on the device, the step count, and ``first_bad``:
    the 1-based step whose loss was first non-finite, or -1."""
    return {
        "loss": torch.zeros(()),
        "ce": torch.zeros(()),
        "kl": torch.zeros(()),
        "steps": 0,
        "first_bad": torch.tensor(-1),
    }


@torch.no_grad()
def add_step(sums: dict, out, step: int) -> None:
    """Add one step's :class:`~stimulative.training.steps.StepOutput` (``step`` is 1-based).
    New tensors, not in-place sums: a checkpoint may hold the previous ones. Few operations:
    on the digits they are a measurable share of a 20 ms step."""
    device = out.loss.device
    for k in ("loss", "ce", "kl"):
        total = sums[k] if sums[k].device == device else sums[k].to(device)
        sums[k] = total + getattr(out, k).float()
    bad = sums["first_bad"] if sums["first_bad"].device == device else sums["first_bad"].to(device)
    sums["first_bad"] = torch.where(torch.isfinite(out.loss) | (bad >= 0), bad, step)
    sums["steps"] += 1


def global_sums(sums: dict, device: torch.device) -> dict:
    """The epoch's sums over all ranks: losses averaged (each rank saw an equal share of
    every batch), the first non-finite step the earliest of any rank."""
    if not distributed.is_dist():
        return sums
    losses = torch.stack([sums[k].to(device).float() for k in ("loss", "ce", "kl")])
    losses = distributed.all_reduce(losses) / distributed.get_world_size()
    never = torch.iinfo(torch.int64).max
    bad = sums["first_bad"].to(device)
    bad = distributed.all_reduce(torch.where(bad < 0, never, bad), "min")
    return {
        **sums,
        "loss": losses[0],
        "ce": losses[1],
        "kl": losses[2],
        "first_bad": torch.where(bad == never, -1, bad),
    }


def means(sums: dict) -> dict[str, float]:
    """Mean loss, CE and KL per step of the sums (host floats: a synchronisation)."""
    n = max(1, sums["steps"])
    return {k: float(sums[k]) / n for k in ("loss", "ce", "kl")}
