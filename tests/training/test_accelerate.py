"""Per-block torch.compile: changing the sub-network does not recompile, and the number of
compiled graphs stays within :func:`stimulative.training.accelerate.graph_bound`. Graphs are counted with
dynamo's counting backend (tracing only, fast); a real inductor build is a slow test."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from stimulative.core.sampling import SamplingSpace, enumerate_subnets, sample_subnet
from stimulative.evaluation.scores import evaluate_subnets
from stimulative.models.cifar_resnet import CifarResNet
from stimulative.training.accelerate import compile_blocks, graph_bound, prepare_model
from stimulative.training.steps import training_step


def small_model() -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet(14, width=4)  # 3 stages of 2 blocks


def steps(model, gen: torch.Generator, count: int, samplers=("ordered", "stochastic", "raw")) -> list[float]:
    arch, space = model.architecture, SamplingSpace.default(model.architecture)
    x, y = torch.randn(4, 3, 8, 8, generator=gen), torch.randint(10, (4,), generator=gen)
    losses = []
    for _ in range(count):
        out = training_step(model, x, y, [sample_subnet(space, arch, s, gen) for s in samplers], 1.0)
        out.loss.backward()
        losses.append(out.loss.item())
    return losses


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_changing_subnetworks_does_not_recompile() -> None:
    model, counter = small_model(), CompileCounter()
    bound = compile_blocks(model, backend=counter)
    assert bound == graph_bound(model)
    steps(model, torch.Generator().manual_seed(0), 8)  # meets every kind of block, path and BN state
    warm = counter.frame_count
    assert 0 < warm <= bound
    steps(model, torch.Generator().manual_seed(1), 8)  # other sub-networks, same shapes
    assert counter.frame_count == warm


def test_graphs_stay_bounded_through_evaluation() -> None:
    model, counter = small_model(), CompileCounter()
    bound = compile_blocks(model, backend=counter)
    steps(model, torch.Generator().manual_seed(0), 8)
    arch = model.architecture
    specs = list(enumerate_subnets(SamplingSpace.default(arch), arch))
    batches = [(torch.randn(5, 3, 8, 8), torch.randint(10, (5,))), (torch.randn(3, 3, 8, 8), torch.randint(10, (3,)))]
    for bn in ("subnet", "running"):
        evaluate_subnets(model, specs, batches, [torch.randn(6, 3, 8, 8), torch.randn(2, 3, 8, 8)], bn)
    after_eval = counter.frame_count
    assert after_eval <= bound
    steps(model, torch.Generator().manual_seed(2), 4)
    for bn in ("subnet", "running"):
        evaluate_subnets(model, specs[::2], batches, [torch.randn(6, 3, 8, 8)], bn)
    assert counter.frame_count == after_eval


def test_compiled_steps_equal_eager_steps() -> None:
    eager, compiled = small_model(), small_model()
    compile_blocks(compiled, backend="eager")
    assert steps(eager, torch.Generator().manual_seed(0), 2) == pytest.approx(
        steps(compiled, torch.Generator().manual_seed(0), 2), rel=1e-6
    )


def test_channels_last_gives_the_same_logits() -> None:
    plain, nhwc = small_model(), prepare_model(small_model(), channels_last=True)
    assert nhwc.stages[0][0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8)
    spec = SamplingSpace.default(plain.architecture)
    spec = sample_subnet(spec, plain.architecture, "ordered", torch.Generator().manual_seed(0))
    torch.testing.assert_close(nhwc.eval()(x, spec), plain.eval()(x, spec), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_inductor_build_on_cpu() -> None:
    """A real inductor compile (needs a C++ compiler; about a minute on 2 cores)."""
    eager, compiled = small_model(), small_model()
    compile_blocks(compiled)
    assert steps(eager, torch.Generator().manual_seed(0), 2, ("ordered",)) == pytest.approx(
        steps(compiled, torch.Generator().manual_seed(0), 2, ("ordered",)), rel=1e-4
    )
