"""The official initialisation options: gamma = 1 in every BN, the classifier N(0, 0.01^2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stimulative.core.sampling import SubnetSpec
from stimulative.models import create_model
from stimulative.models.initialisation import apply_init_options


def _gammas(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_zero_init_makes_every_sub_network_the_full_network_at_initialisation():
    torch.manual_seed(0)
    model = create_model("resnet50_cifar", num_classes=10).eval()  # fresh running statistics: mean 0, var 1
    assert any((g == 0).all() for g in _gammas(model))  # the last BN of each bottleneck branch
    x = torch.randn(2, 3, 16, 16)
    shallow = SubnetSpec.ordered([1, 1, 1, 1])
    assert torch.allclose(model(x), model(x, shallow), atol=1e-6)
    apply_init_options(model, bn_zero_init=False)
    assert all((g == 1).all() for g in _gammas(model))
    assert not torch.allclose(model(x), model(x, shallow), atol=1e-3)


def test_defaults_leave_the_model_as_built():
    torch.manual_seed(0)
    model = create_model("resnet50_cifar", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    apply_init_options(model)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["resnet50", "resnet20", "mobilenetv3_large"])
def test_classifier_normal(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=100)
    apply_init_options(model, classifier_init="normal")
    fc = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
    assert fc.out_features == 100
    assert torch.equal(fc.bias, torch.zeros(100))
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert abs(fc.weight.mean().item()) < 0.001
    with pytest.raises(ValueError, match="choose from model, normal"):
        apply_init_options(model, classifier_init="xavier")
