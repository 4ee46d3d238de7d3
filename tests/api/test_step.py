"""stimulative.Stimulative: the public training step. It is Eq. 1 as the naive composition
computes it (compared in float64, where only the order of summation differs), it builds the
same StepPolicy as the command-line trainer, and it runs under bf16/fp16 autocast,
channels-last, per-block compile and a 2-process DDP.

Tolerances. In float64 two computations of the same sums in another order differ by a few
units of 2^-52 ~ 2.2e-16 per operation, relative; a network of ~20 layers and a backward
through it stay far below 1e-10, while any real difference (a missing KL term, a
sub-network's statistics in BN) changes the loss by more than 1e-4 (asserted below where the
point is that something differs)."""

from __future__ import annotations

import copy

import pytest
import torch

import stimulative
from stimulative.core.batchnorm import bn_state
from stimulative.core.sampling import SamplingSpace
from stimulative.core.spaces import build_space
from stimulative.models.cifar_resnet import CifarResNet
from stimulative.training.accelerate import compile_blocks
from stimulative.training.config import TrainConfig
from stimulative.training.steps import LossOptions, StepPolicy, TrainStep

F64_RTOL = 1e-10


def small_model(dtype=torch.float32) -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet(14, width=4).to(dtype).train()  # 3 stages of 2 blocks


def batch(dtype=torch.float32, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=gen, dtype=dtype), torch.randint(10, (n,), generator=gen)


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_step_is_eq1_as_the_guarded_naive_loop_computes_it():
    model, (x, y) = small_model(torch.float64), batch(torch.float64)
    reference = copy.deepcopy(model)
    st = stimulative.Stimulative(model, kl_weight=0.7, subnets_per_step=2, seed=3, temperature=2.0)
    out = st(x, y, step=5)
    out.loss.backward()
    specs = st.policy.plan(5, x).subnets
    assert len(specs) == 2
    main = reference(x)
    with stimulative.frozen_bn_stats(reference):
        subs = [reference(x, s) for s in specs]
    loss, ce, kl = stimulative.stimulative_loss(main, subs, y, 0.7, stimulative.LossOptions(temperature=2.0))
    loss.backward()
    for a, b in ((out.loss, loss), (out.ce, ce), (out.kl, kl)):
        torch.testing.assert_close(a, b, rtol=F64_RTOL, atol=0)
    torch.testing.assert_close(grads(model), grads(reference), rtol=F64_RTOL, atol=1e-14)
    assert all(torch.equal(u, v) for a, b in zip(bn_state(model), bn_state(reference)) for u, v in zip(a, b))
    assert out.kl.item() > 1e-4  # the KL term is really there


def test_the_api_builds_the_trainers_policy_and_step():
    cfg = TrainConfig(
        mode="st",
        kl_weight=0.5,
        subnets_per_step=2,
        sampler="stochastic",
        min_depths="1,2,1",
        sandwich=True,
        kl_schedule="cosine-up",
        kl_start_epoch=1,
        epochs=3,
        seed=4,
        temperature=2.0,
        kl="kl-direction",
        kl_amplitude=3.0,
        label_smoothing=0.1,
    )
    model, steps_per_epoch = small_model(torch.float64), 10
    arch = model.architecture
    policy = StepPolicy.from_config(cfg, arch, build_space(arch, cfg.min_depths), steps_per_epoch)
    trainer_step = TrainStep(model, policy, LossOptions.from_config(cfg))  # the trainer's step_fn
    st = stimulative.Stimulative(
        model,
        kl_weight=0.5,
        subnets_per_step=2,
        sampler="stochastic",
        min_depths="1,2,1",
        seed=4,
        sandwich=True,
        kl_schedule="cosine-up",
        kl_start=10,
        total_steps=30,
        temperature=2.0,
        kl="kl-direction",
        kl_amplitude=3.0,
        label_smoothing=0.1,
    )
    assert st.policy == policy and st.train_step.loss == trainer_step.loss
    x, y = batch(torch.float64)
    for step in (0, 15, 29):
        a, b = st(x, y, step), trainer_step(x, y, step)
        assert (a.loss.item(), a.kl.item()) == (b.loss.item(), b.kl.item())
    assert st(x, y, 0).kl.item() == 0.0 and st(x, y, 29).kl.item() > 0  # lambda is 0 before kl_start


def test_the_step_index_decides_the_sub_networks():
    model, (x, _) = small_model(), batch()
    a, b = stimulative.Stimulative(model, seed=0), stimulative.Stimulative(model, seed=1)
    draws = lambda st: [st.policy.plan(step, x).subnets for step in range(20)]  # noqa: E731
    assert draws(a) == draws(stimulative.Stimulative(model, seed=0))
    assert draws(a) != draws(b)
    assert len({s[0] for s in draws(a)}) > 1  # steps draw different sub-networks


def test_bf16_autocast_on_cpu():
    model, (x, y) = small_model(), batch()
    reference = stimulative.Stimulative(copy.deepcopy(model), subnets_per_step=2)(x, y, 0)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = stimulative.Stimulative(model, subnets_per_step=2, autocast="bf16")(x, y, 0)
    assert seen == [torch.bfloat16] * 3  # the network and both sub-networks ran in bf16
    assert out.loss.dtype == out.kl.dtype == torch.float32
    # bf16 keeps 8 bits: 2^-8 ~ 0.4 % relative per rounding; through ~15 layers they add up
    # to a few percent of the loss at most
    assert abs(out.loss.item() - reference.loss.item()) < 0.05 * reference.loss.item()
    out.loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_fp16_autocast_with_a_grad_scaler_on_cpu():
    model, (x, y) = small_model(), batch()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    st = stimulative.Stimulative(model, autocast=torch.float16)
    out = st(x, y, 0)
    scaler.scale(out.loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(out.loss) and out.kl.item() > 0
    assert scaler.get_scale() == 2.0**10  # no inf/nan gradient: the step was taken, not skipped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_channels_last_and_compiled_models_give_the_plain_loss_in_float64():
    x, y = batch(torch.float64)
    plain = stimulative.Stimulative(small_model(torch.float64), subnets_per_step=2, sampler="raw")
    nhwc = stimulative.prepare_model(small_model(torch.float64), channels_last=True)
    assert nhwc.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = small_model(torch.float64)
    compile_blocks(compiled, backend="eager")  # prepare_model(compile=True) with a fast backend
    try:
        reference = plain(x, y, 1)
        for model in (nhwc, compiled):
            out = stimulative.Stimulative(model, subnets_per_step=2, sampler="raw")(x, y, 1)
            torch.testing.assert_close(out.loss, reference.loss, rtol=F64_RTOL, atol=0)
            out.loss.backward()
    finally:
        torch._dynamo.reset()
    reference.loss.backward()
    torch.testing.assert_close(grads(compiled), grads(plain.model), rtol=F64_RTOL, atol=1e-14)


def test_low_memory_gives_the_joint_steps_loss_and_gradients():
    x, y = batch(torch.float64)
    joint, low = small_model(torch.float64), small_model(torch.float64)
    a = stimulative.Stimulative(joint, subnets_per_step=3)(x, y, 2)
    b = stimulative.Stimulative(low, subnets_per_step=3, low_memory=True)(x, y, 2)
    a.loss.backward()
    b.loss.backward()
    torch.testing.assert_close(b.loss, a.loss, rtol=F64_RTOL, atol=0)
    torch.testing.assert_close(grads(low), grads(joint), rtol=F64_RTOL, atol=1e-14)


def test_bad_arguments_fail_clearly():
    model = small_model()
    with pytest.raises(TypeError, match="create_model"):
        stimulative.Stimulative(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="ordered, stochastic, raw"):
        stimulative.Stimulative(model, sampler="random")
    with pytest.raises(TypeError, match="temprature.*temperature"):
        stimulative.Stimulative(model, temprature=2.0)
    with pytest.raises(ValueError, match="autocast"):
        stimulative.Stimulative(model, autocast="fp8")
    with pytest.raises(ValueError, match="min_depths"):
        stimulative.Stimulative(model, min_depths="9,9,9")
    with pytest.raises(RuntimeError, match="init_process_group"):
        stimulative.Stimulative(model).ddp()
    space = SamplingSpace.from_min_depths(model.architecture, [2, 1, 2])
    assert stimulative.Stimulative(model, min_depths=space).policy.space == space


def test_the_command_line_trainers_step_is_the_apis(tmp_path):
    from stimulative.runtime.distributed import DistEnv
    from stimulative.training.loop import Trainer

    cfg = TrainConfig(
        out=str(tmp_path / "run"), epochs=1, subnets_per_step=2, sampler="stochastic", seed=5, temperature=1.5
    )
    trainer = Trainer(cfg, DistEnv())
    assert trainer.per_subnet  # --backward auto, two sub-networks: the API's low_memory step
    st = stimulative.Stimulative(
        trainer.model, subnets_per_step=2, sampler="stochastic", seed=5, temperature=1.5, low_memory=True
    )
    x, y = batch(n=16)
    x = x[:, :1]  # the digits' one channel
    for step in (0, 3, 7):
        a, b = trainer.step_fn(x, y, step), st(x, y, step)
        assert (a.loss.item(), a.ce.item(), a.kl.item()) == (b.loss.item(), b.ce.item(), b.kl.item())
