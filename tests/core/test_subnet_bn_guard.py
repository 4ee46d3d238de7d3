"""The misuse guard of ElasticNet.forward: a sub-network's train-mode pass that would record
its batch statistics into the BN running statistics is an error, unless it runs inside
``frozen_bn_stats`` (statistics untouched) or ``subnet_bn_updates`` (updates chosen on
purpose). Every legitimate path (full network, eval mode, BN calibration) still runs."""

from __future__ import annotations

import pytest
import torch

import stimulative
from stimulative.core.batchnorm import bn_layers, bn_state, calibration_mode
from stimulative.core.sampling import parse_spec
from stimulative.models.cifar_resnet import CifarResNet

SUB = parse_spec("1,1,1")  # the shallowest ordered sub-network of 3 stages of 2 blocks


def small_model() -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet(14, width=4)


def same_state(a, b) -> bool:
    return all(torch.equal(u, v) for sa, sb in zip(a, b, strict=True) for u, v in zip(sa, sb, strict=True))


def test_the_natural_loop_fails_loudly_before_touching_bn():
    model, x, y = small_model().train(), torch.randn(8, 3, 8, 8), torch.randint(10, (8,))
    main = model(x)
    before = bn_state(model)
    with pytest.raises(RuntimeError, match="frozen_bn_stats") as info:
        stimulative.stimulative_loss(main, [model(x, SUB)], y)
    assert "subnet_bn_updates" in str(info.value) and "Stimulative" in str(info.value)
    assert same_state(bn_state(model), before)


def test_frozen_bn_stats_leaves_the_full_networks_statistics_and_updates_would_change_them():
    x = torch.randn(8, 3, 8, 8)
    main_only = small_model().train()
    main_only(x)
    guarded = small_model().train()
    guarded(x)
    with stimulative.frozen_bn_stats(guarded):
        sub = guarded(x, SUB)
    assert same_state(bn_state(guarded), bn_state(main_only))
    updated = small_model().train()
    updated(x)
    with stimulative.subnet_bn_updates(updated):
        torch.testing.assert_close(updated(x, SUB), sub)  # the same pass, only the bookkeeping differs
    changed = [
        not torch.equal(a.running_mean, b.running_mean) for a, b in zip(bn_layers(updated), bn_layers(main_only))
    ]
    # exactly the BN layers the sub-network runs through changed: the stem's, its blocks', the head's
    ran = [updated.stem, updated.head, *(updated.stages[s][b] for s, b, _ in SUB.flat())]
    assert sum(changed) == sum(len(bn_layers(m)) for m in ran) < len(changed)
    with pytest.raises(RuntimeError):  # the allowance ended with its context
        updated(x, SUB)


def test_legitimate_passes_still_run():
    model, x = small_model().train(), torch.randn(4, 3, 8, 8)
    model(x, model.architecture.full())  # the full network, whatever its spec
    model.eval()
    model(x, SUB)  # inference
    with torch.no_grad(), calibration_mode(model):  # BN layers in train mode, the network in eval mode
        model(x, SUB)
    model.train()
    model.forward_trace(x, SUB)  # the unchecked low-level pass (individual training uses it)
    for m in bn_layers(model):
        m.eval()
    model(x, SUB)  # no BN layer records statistics
    nested = small_model().train()
    with stimulative.subnet_bn_updates(nested), stimulative.subnet_bn_updates(nested):
        pass
    with stimulative.subnet_bn_updates(nested):
        nested(x, SUB)  # still allowed after the inner context closed
