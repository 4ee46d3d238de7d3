"""The optimizer's parameter groups and the learning-rate schedule's official options."""

from __future__ import annotations

import math

import pytest
import torch

from stimulative.core.schedules import cosine_lr
from stimulative.models import create_model
from stimulative.training.config import TrainConfig
from stimulative.training.optim import make_optimizer, make_scheduler


def test_min_lr_ratio_clamps_the_cosine_from_below():
    total = 1000
    assert cosine_lr(500, total, 0, 1e-4) == pytest.approx(0.5)  # the official log: epoch 100/200 -> 0.1 at lr 0.2
    assert cosine_lr(total - 1, total, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 999 / 1000)))
    assert cosine_lr(total - 1, total, 0, 1e-4) == 1e-4  # 2.47e-6 < 1e-4: clamped (0.2 * 1e-4 = 2e-5)
    assert cosine_lr(total, total, 0, 1e-4) == 1e-4
    assert cosine_lr(0, total, 10, 0.5) == 0.5  # the floor holds during warm-up too
    assert cosine_lr(total, total, 0) == 0.0  # no floor by default


def test_scheduler_follows_the_floor():
    model = create_model("resnet20", in_chans=1)
    cfg = TrainConfig(lr=0.2)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, 10, 0, min_lr_ratio=1e-4)
    for _ in range(10):
        opt.step()
        sched.step()
    assert all(g["lr"] == pytest.approx(0.2 * 1e-4) for g in opt.param_groups)


def test_weight_decay_groups():
    model = create_model("resnet20", in_chans=1)
    ours = make_optimizer(model, TrainConfig(weight_decay=1e-4))
    decayed = [g for g in ours.param_groups if g["weight_decay"] > 0]
    assert len(ours.param_groups) == 2 and all(p.ndim > 1 for p in decayed[0]["params"])
    bn_weight = model.stem[1].weight
    assert any(p is bn_weight for g in ours.param_groups if g["weight_decay"] == 0 for p in g["params"])
    official = make_optimizer(model, TrainConfig(weight_decay=1e-4, wd_all_params=True, nesterov=True))
    (group,) = official.param_groups
    assert group["weight_decay"] == 1e-4 and group["nesterov"]
    assert len(group["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_min_lr_ratio_range(ratio):
    with pytest.raises(ValueError, match="--min-lr-ratio must be in"):
        TrainConfig(min_lr_ratio=ratio).validate()


def test_sgd_update_with_weight_decay_on_everything_moves_bn():
    """With wd_all_params a BN gamma of 1 and zero gradient decays; without it, it stays."""
    for all_params, moved in ((False, False), (True, True)):
        model = create_model("resnet20", in_chans=1)
        opt = make_optimizer(model, TrainConfig(lr=0.1, momentum=0.0, weight_decay=0.5, wd_all_params=all_params))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        gamma = model.stem[1].weight
        opt.step()
        assert bool((gamma != 1).all()) == moved
        if moved:
            assert torch.allclose(gamma, torch.full_like(gamma, 1 - 0.1 * 0.5))
