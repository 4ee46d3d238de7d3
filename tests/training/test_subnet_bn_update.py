"""--subnet-bn-update: the official code's sub-network passes update the BN running
statistics; ours, by default, leave them to the full network."""

import copy

import torch

from stimulative.core.batchnorm import bn_state
from stimulative.core.sampling import SubnetSpec
from stimulative.models import create_model
from stimulative.training.steps import training_step


def _states_after(update: bool | None) -> list:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).double().train()
    x, y = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(10, (16,))
    model = copy.deepcopy(model)
    if update is None:  # the full network alone
        model(x)
    else:
        training_step(model, x, y, [SubnetSpec.ordered([1, 2, 1])], 1.0, subnet_bn_update=update)
    return bn_state(model)


def _same(a: list, b: list) -> list[bool]:
    return [all(torch.equal(u, v) for u, v in zip(p, q)) for p, q in zip(a, b)]


def test_default_leaves_running_statistics_to_the_full_network():
    assert all(_same(_states_after(False), _states_after(None)))


def test_subnet_bn_update_moves_the_layers_the_subnetwork_runs_through():
    same = _same(_states_after(True), _states_after(None))
    # the sub-network (first 1, 2, 1 blocks of each stage) runs whole from its stem: the stem's
    # BN and those blocks' BN layers are updated a second time; the blocks it skips are not
    assert not same[0]  # the stem
    assert sum(not s for s in same) >= 6 and any(same)


def test_subnet_bn_update_excludes_the_per_subnet_backward():
    import pytest

    from stimulative.training.config import TrainConfig

    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(subnet_bn_update=True, backward="per-subnet").validate()
