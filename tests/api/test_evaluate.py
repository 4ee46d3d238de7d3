"""stimulative.evaluate_subnets: every sub-network under a named BN protocol, as one call,
equal to the evaluation it is built on and leaving the model as it was."""

from __future__ import annotations

import math

import pytest
import torch

import stimulative
from stimulative.core.batchnorm import bn_state
from stimulative.evaluation.scores import evaluate_subnets as scores_of
from stimulative.models.cifar_resnet import CifarResNet


def trained_like_model() -> CifarResNet:
    """Random weights with BN statistics that differ from the defaults, so that the protocols
    give different numbers."""
    torch.manual_seed(0)
    model = CifarResNet(14, width=4).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8) * 2 + 1)
    return model


def data(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(12, 3, 8, 8, generator=gen), torch.randint(10, (12,), generator=gen)) for _ in range(3)]


def test_subnet_protocol_is_the_recalibrated_evaluation_and_changes_nothing():
    model, test, train = trained_like_model(), data(1), data(2)
    before, was_training = bn_state(model), model.training
    summary = stimulative.evaluate_subnets(model, test, calibration=train, bn="subnet")
    specs = list(
        stimulative.enumerate_subnets(stimulative.SamplingSpace.default(model.architecture), model.architecture)
    )
    direct = scores_of(model, specs, test, [x for x, _ in train], "recalibrated")
    assert [s.top1 for s in summary.scores] == [s.top1 for s in direct]
    assert summary.count == len(specs) == 8  # default space of 3 stages of 2 blocks: 2^3
    top1 = [s.top1 for s in direct]
    assert summary.mean == pytest.approx(sum(top1) / 8) and (summary.min, summary.max) == (min(top1), max(top1))
    assert summary.std == pytest.approx(math.sqrt(sum((t - summary.mean) ** 2 for t in top1) / 8))
    full = scores_of(model, [model.architecture.full()], test, [x for x, _ in train], "recalibrated")[0]
    assert summary.full == full.top1 and summary.bn == "subnet"
    assert model.training == was_training
    assert all(torch.equal(u, v) for a, b in zip(bn_state(model), before) for u, v in zip(a, b))
    # calibration given as images or as (image, label) pairs is the same
    again = stimulative.evaluate_subnets(model, test, calibration=[x for x, _ in train], bn="subnet")
    assert [s.ce for s in again.scores] == [s.ce for s in summary.scores]
    assert set(summary.metrics("val/").keys()) == {f"val/{k}" for k in ("full_top1", "top1_mean", "top1_std")} | {
        "val/top1_min",
        "val/top1_max",
    }


def test_running_protocol_needs_no_calibration_and_differs():
    model, test = trained_like_model(), data(1)
    running = stimulative.evaluate_subnets(model, test, bn="running")
    subnet = stimulative.evaluate_subnets(model, test, calibration=data(2), bn="subnet")
    assert [s.ce for s in running.scores] != [s.ce for s in subnet.scores]
    direct = scores_of(model, [model.architecture.full()], test, (), "running")[0]
    assert running.full == direct.top1


def test_which_sub_networks():
    model, test = trained_like_model(), data(1)
    assert stimulative.evaluate_subnets(model, test, bn="running", subnets="2,1,2").count == 2  # min depths
    chosen = stimulative.evaluate_subnets(model, test, bn="running", subnets=["1,1,1", stimulative.parse_spec("2,2,1")])
    assert [s.spec for s in chosen.scores] == ["1,1,1", "2,2,1"]
    with pytest.raises(ValueError, match="stage 0 has no block"):
        stimulative.evaluate_subnets(model, test, bn="running", subnets=["6,1,1"])
    with pytest.raises(ValueError, match="empty"):
        stimulative.evaluate_subnets(model, test, bn="running", subnets=[])


def test_protocol_names_and_clear_errors():
    model, test = trained_like_model(), data(1)
    with pytest.raises(ValueError, match="full, subnet, running"):
        stimulative.evaluate_subnets(model, test, bn="recalibrated")
    with pytest.raises(ValueError, match="calibration"):
        stimulative.evaluate_subnets(model, test, bn="subnet")
    full = stimulative.evaluate_subnets(model, test, calibration=data(2), bn="full")
    subnet = stimulative.evaluate_subnets(model, test, calibration=data(2), bn="subnet")
    assert full.count == subnet.count == 8
    assert full.full == subnet.full  # the full network's statistics are re-estimated alike
