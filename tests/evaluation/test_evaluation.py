"""The shared walk equals the naive one-sub-network-at-a-time evaluation, sub-network by
sub-network, for every kind of spec and both BN modes (no timing here: see `stimulative bench`)."""

from __future__ import annotations

import pytest
import torch

from stimulative.core.batchnorm import bn_state
from stimulative.core.sampling import (
    SamplingSpace,
    SubnetSpec,
    delete_blocks,
    enumerate_subnets,
    permute_blocks,
    select_subnets,
    skippable_blocks,
)
from stimulative.evaluation.scores import evaluate_subnets
from stimulative.evaluation.walk import SubnetWalk, naive_subnet_logits, subnet_logits
from stimulative.models import create_model

TOL = 1e-5


def trained_like(name: str, size: int = 8) -> torch.nn.Module:
    """A model whose BN running statistics are not the initial 0/1 (a few train-mode passes)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size) * 2 + 0.5)
    return model.eval()


def data(size: int = 8) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    inputs = list(torch.randn(10, 3, size, size, generator=g).split(4))  # chunks of 4, 4, 2
    calibration = list(torch.randn(12, 3, size, size, generator=g).split(5))  # 5, 5, 2: averaging over batches
    return inputs, calibration


def specs_of(kind: str, arch) -> list:
    space = SamplingSpace.default(arch)
    if kind == "ordered":
        return list(enumerate_subnets(space, arch))
    if kind in ("stochastic", "raw"):
        return select_subnets(space, arch, 12, seed=3, sampler=kind)
    if kind == "deletion":
        blocks = skippable_blocks(arch)
        return [delete_blocks(arch, [b]) for b in blocks] + [
            delete_blocks(arch, blocks[i : i + 2]) for i in range(0, len(blocks) - 1, 2)
        ]
    if kind == "permutation":
        out = []
        for s, skip in enumerate(arch.skippable):
            optional = [b for b, k in enumerate(skip) if k]
            if len(optional) > 1:
                out += [permute_blocks(arch, s, optional[::-1]), permute_blocks(arch, s, optional[1:] + optional[:1])]
        return out
    raise AssertionError(kind)


def check_equal(model, specs, bn: str, size: int = 8) -> None:
    inputs, calibration = data(size)
    before = bn_state(model)
    shared: dict[int, list[torch.Tensor]] = {}
    for chunk, indices, logits in subnet_logits(model, specs, inputs, calibration, bn):
        for i in indices:
            assert len(shared.setdefault(i, [])) == chunk
            shared[i].append(logits)
    assert sorted(shared) == list(range(len(specs)))
    for i, spec in enumerate(specs):
        naive = naive_subnet_logits(model, spec, inputs, calibration, bn)
        for a, b in zip(naive, shared[i], strict=True):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= TOL, f"{spec} ({bn} BN)"
    # evaluation leaves the model's own statistics as they were
    for (m0, v0, n0), (m1, v1, n1) in zip(before, bn_state(model)):
        assert torch.equal(m0, m1) and torch.equal(v0, v1) and torch.equal(n0, n1)


@pytest.mark.parametrize("bn", ["full", "subnet", "running"])
@pytest.mark.parametrize("kind", ["ordered", "stochastic", "raw", "deletion", "permutation"])
def test_shared_equals_naive_resnet20(kind: str, bn: str) -> None:
    model = trained_like("resnet20")
    specs = specs_of(kind, model.architecture)
    assert len(specs) > 1
    check_equal(model, specs, bn)


@pytest.mark.parametrize("bn", ["full", "subnet", "running"])
@pytest.mark.parametrize("name", ["resnet50_cifar", "mobilenetv3_large_cifar"])
def test_shared_equals_naive_other_families(name: str, bn: str) -> None:
    model = trained_like(name)
    arch = model.architecture
    ordered = list(enumerate_subnets(SamplingSpace.default(arch), arch))
    specs = ordered[:: max(1, len(ordered) // 8)] + specs_of("deletion", arch)[:3] + [arch.full()]
    check_equal(model, specs, bn)


def test_repeated_and_unsorted_specs() -> None:
    """The same sub-network listed twice gets both indices; any order of specs works."""
    model = trained_like("resnet20")
    arch = model.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))[::-3]
    specs = specs + specs[:2] + [arch.full()]
    check_equal(model, specs, "subnet")


def test_full_network_first_in_walk_order() -> None:
    model = trained_like("resnet20")
    arch = model.architecture
    specs = [arch.full(), *enumerate_subnets(SamplingSpace.default(arch), arch)]
    inputs, calibration = data()
    with SubnetWalk(model, specs, calibration, "subnet") as walk:
        first, _ = next(iter(walk(inputs[0])))
    assert 0 in first


def test_evaluate_subnets_matches_naive_scores() -> None:
    model = trained_like("resnet20")
    arch = model.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))[:6]
    inputs, calibration = data()
    labels = [torch.randint(10, (len(x),), generator=torch.Generator().manual_seed(i)) for i, x in enumerate(inputs)]
    scores = evaluate_subnets(model, specs, list(zip(inputs, labels)), calibration, "subnet")
    y = torch.cat(labels)
    for spec, score in zip(specs, scores):
        logits = torch.cat(naive_subnet_logits(model, spec, inputs, calibration, "subnet"))
        assert score.spec == spec.to_text()
        assert score.top1 == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
        assert score.ce == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_bn_protocols_differ_only_where_they_should() -> None:
    """``full`` and ``subnet`` re-estimate the full network identically; a sub-network sees
    the full network's statistics under ``full`` and its own under ``subnet``."""
    model = trained_like("resnet20").double()
    inputs, calibration = data(8)
    inputs, calibration = [x.double() for x in inputs], [x.double() for x in calibration]
    arch = model.architecture
    small = SubnetSpec.ordered([1, 1, 1])

    def logits(spec, bn):
        return torch.cat(naive_subnet_logits(model, spec, inputs, calibration, bn))

    assert torch.allclose(logits(arch.full(), "full"), logits(arch.full(), "subnet"), rtol=0, atol=1e-12)
    assert not torch.allclose(logits(small, "full"), logits(small, "subnet"), atol=1e-6)
    assert not torch.allclose(logits(small, "full"), logits(small, "running"), atol=1e-6)


def test_full_protocol_uses_the_plain_average_of_batch_statistics() -> None:
    """One BN layer fed two calibration batches: the running mean is the mean of the batch
    means, the running variance the mean of the (unbiased) batch variances."""
    from stimulative.core.batchnorm import reestimate_full_network

    bn = torch.nn.BatchNorm2d(1).double()
    bn.running_mean.fill_(100.0)  # whatever was there before is replaced, not averaged in
    batches = [torch.tensor([0.0, 2.0]).double().view(2, 1, 1, 1), torch.tensor([4.0, 8.0]).double().view(2, 1, 1, 1)]
    reestimate_full_network(bn, batches)
    assert bn.running_mean.item() == pytest.approx(3.5)  # (1 + 6) / 2
    assert bn.running_var.item() == pytest.approx(5.0)  # (2 + 8) / 2: unbiased batch variances


def test_legacy_bn_name_and_unknown_protocol() -> None:
    from stimulative.core.batchnorm import bn_protocol

    assert bn_protocol("recalibrated") == "subnet" and bn_protocol("full") == "full"
    with pytest.raises(ValueError, match="choose from full, subnet, running"):
        bn_protocol("both")
