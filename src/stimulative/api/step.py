"""Stimulative training in your own loop: :class:`Stimulative` turns an :class:`ElasticNet`
into a step function ``st(x, y, step) -> StepOutput(loss, ce, kl)`` (paper Eq. 1).

It is a thin constructor around :class:`stimulative.training.steps.TrainStep`, the same
step the command-line trainer runs (:class:`StepPolicy` decides the sub-networks,
:func:`run_step` computes the loss), so the two cannot drift apart."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import fields

import torch
import torch.distributed as dist
from torch import nn

from ..core.elastic import ElasticNet
from ..core.resolution import parse_resolution
from ..core.sampling import SAMPLERS, SamplingSpace
from ..core.spaces import build_space, shallowest
from ..runtime.distributed import DistEnv
from ..training.ddp import JointForward, freeze_unused, wrap_ddp
from ..training.steps import LossOptions, StepOutput, StepPolicy, TrainStep, joint_forward

# StepPolicy settings a user may pass by name (the others are derived from the arguments)
POLICY_OPTIONS = (
    "total_steps",
    "kl_start",
    "kl_schedule",
    "sandwich",
    "resolution",
    "drop_path_rate",
    "same_subnets_across_ranks",
)
AMP_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    torch.bfloat16: torch.bfloat16,
    torch.float16: torch.float16,
}


class Stimulative:
    """Eq. 1 for one batch: ``CE(main(x), y) + kl_weight * sum_k KL(p_main || p_sub_k)``,
    with ``subnets_per_step`` sub-networks drawn by ``sampler`` from the space ``min_depths``,
    computed by one joint forward that leaves the BN running statistics to the full network.

    ``st(x, y, step)`` returns ``StepOutput(loss, ce, kl)`` (device scalars; call ``.item()``
    only when logging). Take one backward of ``loss``. The sub-networks are a pure function of
    ``(seed, step)``: pass a global step counter (it also drives ``kl_schedule``), and a
    resumed run draws the same ones. With ``subnets_per_step`` = n each KL term has weight
    ``kl_weight`` and the terms are summed (the official ST++ recipe: n = 6, weight 1)::

        st = stimulative.Stimulative(model, kl_weight=1.0)
        for step, (x, y) in enumerate(loader):
            optimizer.zero_grad()  # before the step: low_memory accumulates gradients in it
            out = st(x, y, step)
            out.loss.backward()
            optimizer.step()

    Mixed precision: ``autocast="bf16"`` (or ``torch.bfloat16``) runs the networks under
    ``torch.autocast`` while the losses stay fp32. fp16 needs a gradient scaler in your loop::

        st = stimulative.Stimulative(model, autocast="fp16")
        scaler = torch.amp.GradScaler("cuda")
        out = st(x, y, step)
        scaler.scale(out.loss).backward(); scaler.step(optimizer); scaler.update()

    channels-last and ``torch.compile``: apply :func:`stimulative.prepare_model` to the
    model first (it compiles block by block, so changing sub-networks does not recompile).
    DDP: call :meth:`ddp` once after ``init_process_group``; see there.

    Options by name (``**options``): ``temperature``, ``kl`` (``"kl"`` or ST++'s
    ``"kl-direction"``), ``kl_amplitude``, ``label_smoothing`` and any other field of
    :class:`LossOptions`; ``kl_schedule`` / ``kl_start`` / ``total_steps`` (lambda's schedule,
    in steps), ``sandwich=True`` (add the shallowest sub-network every step), ``resolution``
    (ST++'s smaller sub-network inputs, e.g. ``"0.43,1"``), ``drop_path_rate``.
    ``ghost_batches``: BN normalises each of that many equal parts of the batch on its own.
    ``low_memory``: each sub-network back-propagated at once (peak memory about one
    sub-network's); not with a gradient scaler, since those backward passes are unscaled."""

    def __init__(
        self,
        model: ElasticNet,
        kl_weight: float = 1.0,
        subnets_per_step: int = 1,
        sampler: str = "ordered",
        min_depths: str | SamplingSpace = "",
        seed: int = 0,
        autocast: str | torch.dtype | None = None,
        ghost_batches: int = 1,
        low_memory: bool = False,
        **options,
    ) -> None:
        if not isinstance(model, ElasticNet):
            raise TypeError(
                f"Stimulative needs an ElasticNet, not {type(model).__name__}: make one with "
                "stimulative.create_model(model)"
            )
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
        if autocast is not None and autocast not in AMP_DTYPES:
            raise ValueError(f"autocast={autocast!r}: choose from 'bf16', 'fp16', torch.bfloat16, torch.float16, None")
        arch = model.architecture
        space = min_depths if isinstance(min_depths, SamplingSpace) else build_space(arch, min_depths, "min_depths")
        policy_options, loss_options = _route_options(options)
        if policy_options.pop("sandwich", False):
            policy_options["sandwich"] = shallowest(space, arch, sampler)
        if isinstance(policy_options.get("resolution"), str):
            policy_options["resolution"] = parse_resolution(policy_options["resolution"])
        policy = StepPolicy(
            arch, space, seed, kl_weight=kl_weight, sampler=sampler, subnets_per_step=subnets_per_step, **policy_options
        )
        amp = DeviceAutocast(model, AMP_DTYPES[autocast]) if autocast is not None else nullcontext
        self.train_step = TrainStep(model, policy, LossOptions(**loss_options), amp, ghost_batches, None, low_memory)

    @property
    def model(self) -> ElasticNet:
        """The network trained (give its parameters to the optimizer; save it, not a wrapper)."""
        return self.train_step.model

    @property
    def policy(self) -> StepPolicy:
        """What each step trains: ``st.policy.plan(step, x).subnets`` are step's sub-networks."""
        return self.train_step.policy

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        """Eq. 1 for the batch ``x`` ``(B, C, H, W)``, labels ``y`` ``(B,)``, at global ``step``."""
        return self.train_step(x, y, step)

    def ddp(self) -> nn.Module:
        """Run every step's joint forward (the network and its sub-networks) as ONE forward of
        a ``DistributedDataParallel`` module, as DDP requires one forward per backward. Call it
        once, after ``torch.distributed.init_process_group`` and with the model on its device;
        keep training ``st.model``'s parameters with your optimizer (DDP averages their
        gradients in the backward). Each rank draws the same sub-networks from ``(seed, step)``
        and BN normalises each rank's share (as ``ghost_batches`` does in one process). Returns
        the DDP module (for ``no_sync()`` in gradient accumulation); save ``st.model``."""
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "Stimulative.ddp(): start the process group first (torch.distributed.init_process_group)"
            )
        if self.train_step.low_memory:
            raise ValueError("low_memory back-propagates each sub-network on its own, which DDP does not allow")
        model, policy = self.model, self.policy
        device = next(model.parameters()).device
        env = DistEnv(dist.get_rank(), dist.get_world_size(), device.index or 0, device)
        if policy.fixed is not None:
            freeze_unused(model, [(s, b) for s, b, _ in policy.fixed.flat()])
        policy.rank = env.rank  # only read for per-rank draws (stochastic depth, different sub-networks)
        self.train_step.runner = wrap_ddp(JointForward(model, joint_forward), env)
        return self.train_step.runner


class DeviceAutocast:
    """``torch.autocast`` on the model's current device type (a class, not a lambda, so a
    :class:`Stimulative` can be pickled, e.g. by spawn-based launchers)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype

    def __call__(self) -> torch.autocast:
        device = next(self.model.parameters()).device
        return torch.autocast(device.type, dtype=self.dtype)


def _route_options(options: dict) -> tuple[dict, dict]:
    """Split ``**options`` into StepPolicy settings and LossOptions fields (so a loss option
    added to LossOptions is accepted here without a change)."""
    loss_names = [f.name for f in fields(LossOptions)]
    unknown = sorted(set(options) - set(loss_names) - set(POLICY_OPTIONS))
    if unknown:
        valid = ", ".join([*POLICY_OPTIONS, *loss_names])
        raise TypeError(f"Stimulative: unknown option(s) {', '.join(unknown)}; choose from {valid}")
    policy = {k: v for k, v in options.items() if k in POLICY_OPTIONS}
    return policy, {k: v for k, v in options.items() if k in loss_names}
