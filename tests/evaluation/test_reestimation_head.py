"""Re-estimation runs the head only up to its last BN layer (the rest changes no statistic);
the logits stay those of the naive way (test_evaluation.py checks them for every protocol)."""

from __future__ import annotations

import torch
from torch import nn

from stimulative.core.batchnorm import bn_layers, bn_prefix
from stimulative.core.sampling import SamplingSpace, enumerate_subnets
from stimulative.evaluation.walk import SubnetWalk, naive_subnet_logits
from stimulative.models import create_model


def test_bn_prefix_stops_at_the_last_bn_layer() -> None:
    head = create_model("mobilenetv3_large_cifar", num_classes=10).head
    part = bn_prefix(head)
    assert bn_layers(part) == bn_layers(head)
    assert not any(isinstance(m, nn.Linear) for m in part.modules())  # the classifier is not run
    h = torch.randn(4, 160, 2, 2)
    with torch.no_grad():  # the part computes the head's own first layers
        assert torch.equal(part(h), head[0][:2](h))
    assert bn_prefix(create_model("resnet20", num_classes=10).head) is None  # no BN in the head: nothing
    bn = nn.BatchNorm1d(3)
    assert bn_prefix(bn) is bn
    whole = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    assert list(bn_prefix(whole)) == list(whole)


def test_reestimation_runs_no_classifier() -> None:
    torch.manual_seed(0)
    model = create_model("mobilenetv3_large_cifar", num_classes=10).eval()
    arch = model.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))[:6]
    calls = []
    model.head[-1].register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    x = torch.randn(4, 3, 8, 8)
    with SubnetWalk(model, specs, [x], "subnet") as walk:
        assert calls == []  # re-estimation done, the classifier never ran
        out = dict((tuple(leaves), logits) for leaves, logits in walk(x))
    assert calls == [4] * 6  # inference: once per sub-network
    for i, spec in enumerate(specs):  # bit-identical to the naive way, which runs the whole head
        assert torch.equal(out[(i,)], naive_subnet_logits(model, spec, [x], [x], "subnet")[0])
