"""create_model takes a name or a model the user already has: an nn.Module is adapted (its
modules and weights shared), an ElasticNet returned as it is."""

from __future__ import annotations

import pytest
import torch
import torchvision

import stimulative
from stimulative.models.adapter import AdaptedNet


def test_a_torchvision_instance_becomes_an_elastic_net_sharing_its_weights():
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10)
    model = stimulative.create_model(original)  # the exact call: a 224 probe by default
    assert isinstance(model, AdaptedNet) and model.architecture.stage_sizes == (2, 2, 2, 2)
    assert original.fc.weight.data_ptr() in {p.data_ptr() for p in model.parameters()}
    assert model.training  # a fresh torchvision model is in train mode, and stays so
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), original.eval()(x), rtol=0, atol=0)
    shallow = model(x, stimulative.parse_spec("1,1,1,1"))
    assert shallow.shape == (2, 10) and not torch.allclose(shallow, model(x))


def test_an_example_sets_the_probe_and_num_classes_is_checked():
    original = torchvision.models.resnet18(num_classes=10)
    model = stimulative.create_model(original, num_classes=10, example=torch.randn(2, 3, 32, 32))
    assert model.architecture.stage_sizes == (2, 2, 2, 2)
    with pytest.raises(stimulative.AdapterError, match="outputs 10 classes, not num_classes=100"):
        stimulative.create_model(torchvision.models.resnet18(num_classes=10), num_classes=100, image_size=32)
    with pytest.raises(stimulative.AdapterError, match="no skippable residual block"):
        stimulative.create_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)), image_size=8)


def test_an_elastic_net_is_returned_as_it_is_and_names_still_work():
    model = stimulative.create_model("resnet20", num_classes=10, in_chans=1)
    assert stimulative.create_model(model) is model
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(TypeError, match="example"):
        stimulative.create_model("resnet20", example=torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown model"):
        stimulative.create_model("resnet21")
