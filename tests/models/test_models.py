import pytest
import torch

from stimulative.core.sampling import SamplingSpace, enumerate_subnets, sample_subnet
from stimulative.models import create_model, list_models

# parameter counts: CIFAR ResNets from He et al. 2016's table (10 classes); ImageNet models as torchvision
PAPER_COUNTS_M = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}
TORCHVISION_COUNTS = {"resnet50": 25_557_032, "resnet101": 44_549_160, "mobilenetv3_large": 5_483_032}


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS_M))
def test_cifar_resnet_counts_match_the_paper(name):
    assert (
        round(_params(create_model(name, num_classes=10)) / 1e6, 2 if name != "resnet110" else 1)
        == PAPER_COUNTS_M[name]
    )


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_imagenet_counts_match_torchvision(name):
    assert _params(create_model(name, num_classes=1000)) == TORCHVISION_COUNTS[name]


def test_imagenet_counts_match_torchvision_models_themselves():
    import torchvision

    assert _params(torchvision.models.resnet50()) == TORCHVISION_COUNTS["resnet50"]
    assert _params(torchvision.models.mobilenet_v3_large()) == TORCHVISION_COUNTS["mobilenetv3_large"]


def test_registry_rejects_unknown_and_duplicate_names():
    from stimulative.models.registry import register_model

    with pytest.raises(ValueError, match="unknown model 'resnet7'; choose from"):
        create_model("resnet7")

    def resnet20(**kw):
        return None

    with pytest.raises(ValueError, match="registered twice"):
        register_model(resnet20)


@pytest.mark.parametrize("name", [n for n in list_models() if "101" not in n and n != "resnet110"])
def test_every_model_runs_sampled_subnets_on_digit_shaped_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1)
    x = (
        torch.randn(2, 1, 8, 8)
        if "cifar" in name or name.startswith("resnet") and name[6:].isdigit()
        else torch.randn(2, 1, 32, 32)
    )
    arch = model.architecture
    space = SamplingSpace.default(arch)
    gen = torch.Generator().manual_seed(0)
    model.eval()
    for sampler in ("ordered", "stochastic", "raw"):
        spec = sample_subnet(space, arch, sampler, gen)
        assert model(x, spec).shape == (2, 10)
    # the full spec is the plain forward
    assert torch.equal(model(x, arch.full()), model(x))


def test_only_identity_blocks_are_skippable():
    arch = create_model("resnet20").architecture
    assert arch.skippable == ((True, True, True), (False, True, True), (False, True, True))
    mbv3 = create_model("mobilenetv3_large").architecture
    assert [s[0] for s in mbv3.skippable] == [True, False, False, False, False, False]
    assert create_model("resnet50").architecture.skippable[0][0] is False  # 64 -> 256 channels


def test_subnet_spec_changes_the_computation():
    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1).eval()
    x = torch.randn(3, 1, 8, 8)
    specs = list(enumerate_subnets(SamplingSpace.default(model.architecture), model.architecture))
    outs = {s.to_text(): model(x, s) for s in specs}
    assert not torch.allclose(outs["1,1,1"], outs["3,3,3"])
