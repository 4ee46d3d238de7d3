"""The optimizer and the learning-rate schedule of a run."""

from __future__ import annotations

import torch

from ..core.schedules import cosine_lr
from .config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD. Weight decay on the weights of convolutions and linear layers only (ours, as is
    usual), or on every parameter with ``wd_all_params`` (the official code: one group)."""
    nesterov = cfg.nesterov and cfg.momentum > 0
    if cfg.wd_all_params:
        params = list(model.parameters())
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=nesterov
        )
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero, stepped once per training step; the factor
    never below ``min_lr_ratio`` (0: no floor)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, total_steps, warmup_steps, min_lr_ratio))
