"""The training step, defined once for the trainer, the bench and FLOP counting.

:class:`StepPolicy` decides what a step trains (which sub-networks, on which inputs, with
which lambda, which blocks stochastic depth drops); :func:`run_step` computes Eq. 1 for that
plan with the joint forward (:func:`training_step`), the per-sub-network backward
(:func:`low_memory_step`) or, for individual training, one fixed sub-network
(:func:`individual_step`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from ..core.batchnorm import frozen_bn_stats
from ..core.elastic import ElasticNet, drop_path_scales, shared_prefix, subnet_bn_updates
from ..core.loss import LossOptions, main_outputs, stimulative_loss, sub_network_loss
from ..core.resolution import parse_resolution, resize_batch, subnet_sides
from ..core.sampling import Architecture, SamplingSpace, SubnetSpec, parse_spec, sample_subnet, step_generator
from ..core.schedules import kl_weight_at
from ..core.spaces import shallowest
from ..runtime.distributed import rank_generator
from .config import TrainConfig


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalars on the device: read them only when logging
    ce: torch.Tensor
    kl: torch.Tensor


@dataclass
class StepPlan:
    """What one step trains: the sampled sub-networks, lambda, each sub-network's own input
    (ST++'s smaller inputs) or None, and stochastic depth's per-sample branch scales."""

    subnets: list[SubnetSpec] = field(default_factory=list)
    kl_weight: float = 0.0
    sub_inputs: list[torch.Tensor | None] | None = None
    keep: torch.Tensor | None = None


@dataclass
class StepPolicy:
    """Which sub-networks, inputs, lambda and dropped blocks each training step uses, as a
    pure function of (seed, step[, rank]): CT, ST, ST++ and stochastic depth are settings of
    this one policy. ``fixed`` is individual training's one sub-network."""

    arch: Architecture
    space: SamplingSpace
    seed: int = 0
    total_steps: int = 1
    kl_weight: float = 0.0
    kl_start: int = 0  # in steps
    kl_schedule: str = "constant"
    sampler: str = "ordered"
    subnets_per_step: int = 1
    sandwich: SubnetSpec | None = None  # the shallowest sub-network, added at every step
    resolution: tuple[float, float] | None = None
    drop_path_rate: float = 0.0  # > 0: stochastic depth
    rank: int = 0
    same_subnets_across_ranks: bool = True
    fixed: SubnetSpec | None = None

    @classmethod
    def from_config(
        cls, cfg: TrainConfig, arch: Architecture, space: SamplingSpace, steps_per_epoch: int, rank: int = 0
    ) -> StepPolicy:
        return cls(
            arch=arch,
            space=space,
            seed=cfg.seed,
            total_steps=cfg.epochs * steps_per_epoch,
            kl_weight=cfg.effective_kl_weight(),
            kl_start=int(cfg.kl_start_epoch * steps_per_epoch),
            kl_schedule=cfg.kl_schedule,
            sampler=cfg.sampler,
            subnets_per_step=cfg.subnets_per_step,
            sandwich=shallowest(space, arch, cfg.sampler) if cfg.sandwich else None,
            resolution=parse_resolution(cfg.subnet_resolution),
            drop_path_rate=cfg.drop_path_rate if cfg.mode == "stochastic-depth" else 0.0,
            rank=rank,
            same_subnets_across_ranks=cfg.same_subnets_across_ranks,
            fixed=parse_spec(cfg.subnet) if cfg.mode == "individual" else None,
        )

    def plan(self, step: int, x: torch.Tensor) -> StepPlan:
        """The plan of ``step`` for the batch ``x`` ``(B, C, H, W)``."""
        plan = StepPlan()
        if self.fixed is not None:
            return plan
        plan.kl_weight = kl_weight_at(self.kl_weight, step, self.total_steps, self.kl_start, self.kl_schedule)
        if plan.kl_weight > 0:
            same = self.same_subnets_across_ranks
            gen = step_generator(self.seed, step) if same else rank_generator(self.seed, step, self.rank)
            plan.subnets = [
                sample_subnet(self.space, self.arch, self.sampler, gen) for _ in range(self.subnets_per_step)
            ]
            if self.sandwich is not None:
                plan.subnets.append(self.sandwich)
            if self.resolution is not None:  # ST++: each sub-network on a random smaller input
                sides = subnet_sides(gen, len(plan.subnets), x.shape[-1], *self.resolution)
                plan.sub_inputs = [resize_batch(x, side) for side in sides]
        if self.drop_path_rate > 0:  # blocks dropped per sample, seeded by (seed, step[, rank])
            gen = rank_generator(self.seed, step, self.rank)  # rank 0: step_generator(seed, step)
            plan.keep = drop_path_scales(self.arch, self.drop_path_rate, x.shape[0], gen)
        return plan


def run_step(
    model: ElasticNet,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: StepPlan,
    loss: LossOptions,
    fixed: SubnetSpec | None = None,
    autocast: Callable = nullcontext,
    ghost_batches: int = 1,
    runner=None,
    low_memory: bool = False,
    subnet_bn_update: bool = False,
) -> StepOutput:
    """Eq. 1 for one batch and its plan (the caller takes one backward of the loss).
    ``subnet_bn_update``: the sub-network passes update the BN running statistics (the
    official code's behaviour; see :func:`joint_forward`)."""
    if fixed is not None:
        return individual_step(model, x, y, fixed, loss.label_smoothing, autocast, ghost_batches, runner)
    if low_memory and plan.subnets:
        return low_memory_step(model, x, y, plan.subnets, plan.kl_weight, loss, autocast, plan.sub_inputs)
    return training_step(
        model, x, y, plan.subnets, plan.kl_weight, loss, autocast, ghost_batches, runner, plan.sub_inputs, plan.keep,
        subnet_bn_update,
    )  # fmt: skip


def joint_forward(
    model: ElasticNet,
    x: torch.Tensor,
    subnets: list[SubnetSpec],
    ghost_batches: int = 1,
    main_spec: SubnetSpec | None = None,
    sub_inputs: list[torch.Tensor | None] | None = None,
    keep: torch.Tensor | None = None,
    subnet_bn_update: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of the main network (the full one, or ``main_spec``) and of each sub-network,
    ``((B, classes), [(B, classes), ...])``. Each sub-network continues from the main
    network's activation at the end of their shared prefix (in train mode both compute
    exactly the same there), with BN running statistics frozen.

    With ``ghost_batches`` > 1, BN normalises each equal part of the batch on its own, as
    each rank of a DDP run normalises its share; only the first part updates the running
    statistics (DDP keeps rank 0's). Under DDP this whole function is the forward of the
    wrapped module (:class:`stimulative.distributed.JointForward`): every network or
    sub-network pass of a step belongs in here (DDP wants one forward per backward).

    ``sub_inputs[i]``, if given and not None, is sub-network ``i``'s own input (ST++'s
    smaller inputs): it then runs from its stem, sharing nothing with the main network.

    ``keep`` ``(B, blocks)``: stochastic depth's per-sample branch scales for the main
    network (:func:`stimulative.elastic.drop_path_scales`).

    ``subnet_bn_update``: as the official code, the sub-network passes update the BN running
    statistics (of the first ghost batch), and each sub-network then runs whole from its
    stem, as the official code's separate forward does (sharing the prefix would update
    those layers once instead of once per pass)."""
    main_spec = main_spec or model.architecture.full()
    main_steps = main_spec.flat()
    mains, subs = [], [[] for _ in subnets]
    for g, xg in enumerate(x.chunk(ghost_batches) if ghost_batches > 1 else [x]):
        kg = None if keep is None else keep.chunk(ghost_batches)[g] if ghost_batches > 1 else keep
        with frozen_bn_stats(model) if g else nullcontext():
            main, trace = model.forward_trace(xg, main_spec, keep=kg)
        mains.append(main)
        if subnets:
            update = subnet_bn_update and g == 0
            with subnet_bn_updates(model) if update else frozen_bn_stats(model):
                for i, spec in enumerate(subnets):
                    own = sub_inputs[i] if sub_inputs is not None else None
                    if own is not None:
                        subs[i].append(model(own.chunk(ghost_batches)[g] if ghost_batches > 1 else own, spec))
                        continue
                    k = 0 if update else shared_prefix(main_steps, spec.flat())
                    subs[i].append(model.forward_trace(xg, spec, start=(k, trace[k]) if k else None)[0])
    cat = lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts)  # noqa: E731
    return cat(mains), [cat(p) for p in subs]


def training_step(
    model: ElasticNet,
    x: torch.Tensor,
    y: torch.Tensor,
    subnets: list[SubnetSpec],
    kl_weight: float,
    loss: LossOptions | None = None,
    autocast=nullcontext,
    ghost_batches: int = 1,
    runner=None,
    sub_inputs: list[torch.Tensor | None] | None = None,
    keep: torch.Tensor | None = None,
    subnet_bn_update: bool = False,
) -> StepOutput:
    """Forward of Eq. 1 for one batch (:func:`joint_forward`, or ``runner``, the
    DDP-wrapped :func:`joint_forward`, called as ``runner(x, subnets, ghost_batches)``).
    ``sub_inputs``: per sub-network, its own resized input or None (see joint_forward);
    ``keep``: stochastic depth's per-sample branch scales of the main network, or None.
    The caller takes one backward of the returned loss."""
    loss = loss or LossOptions()
    with autocast():
        extra = {"sub_inputs": sub_inputs} if sub_inputs is not None else {}
        if keep is not None:
            extra["keep"] = keep
        if subnet_bn_update:
            extra["subnet_bn_update"] = True
        main, subs = (runner or partial(joint_forward, model))(x, subnets, ghost_batches, **extra)
    total, ce, kl_sum = stimulative_loss(main, subs, y, kl_weight, loss)
    return StepOutput(total, ce, kl_sum)


def low_memory_step(
    model: ElasticNet,
    x: torch.Tensor,
    y: torch.Tensor,
    subnets: list[SubnetSpec],
    kl_weight: float,
    loss: LossOptions | None = None,
    autocast=nullcontext,
    sub_inputs: list[torch.Tensor | None] | None = None,
) -> StepOutput:
    """:func:`training_step` with the peak memory of about CT plus one sub-network: each
    sub-network's KL term is back-propagated right after its forward, down to its branch
    point on the full network (the end of their shared prefix), and its graph freed; the
    gradients arriving at each branch point are summed. The returned loss has Eq. 1's value,
    and its backward (the caller's, as usual) carries the cross-entropy and those summed
    gradients through the full network once. Same gradients as the joint backward up to
    rounding. The sub-networks' parameter gradients are accumulated here, so the caller
    zeroes gradients before the step, not between it and the backward."""
    loss = loss or LossOptions()
    full = model.architecture.full()
    full_steps = full.flat()
    with autocast():
        main, trace = model.forward_trace(x, full)
    z, teacher, scale = main_outputs(main, loss)  # normalised first under --norm-kd
    ce = F.cross_entropy(z, y, label_smoothing=loss.label_smoothing)
    kl_sum = torch.zeros((), dtype=torch.float32, device=main.device)
    at_branch: dict[int, torch.Tensor] = {}
    with frozen_bn_stats(model):
        for i, spec in enumerate(subnets):
            own = sub_inputs[i] if sub_inputs is not None else None
            k = 0 if own is not None else shared_prefix(full_steps, spec.flat())
            h = None if own is not None else trace[k].detach().requires_grad_()
            with autocast():
                logits = model(own, spec) if own is not None else model.forward_trace(x, spec, start=(k, h))[0]
            term = sub_network_loss(teacher, logits, y, loss, scale)
            (kl_weight * term).backward()
            kl_sum = kl_sum + term.detach()
            if h is not None:
                at_branch[k] = at_branch[k] + h.grad if k in at_branch else h.grad
    # the branch points' gradients enter through a term of value 0: <trace[k], g> - its value
    carry = sum(
        ((trace[k] * g.to(trace[k].dtype)).float().sum() for k, g in at_branch.items()),
        torch.zeros((), device=main.device),
    )
    total = loss.main_coef * ce + (carry - carry.detach()) + kl_weight * kl_sum
    return StepOutput(total, ce, kl_sum)


def individual_step(
    model: ElasticNet,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: SubnetSpec,
    label_smoothing: float = 0.0,
    autocast=nullcontext,
    ghost_batches: int = 1,
    runner=None,
) -> StepOutput:
    """Train one fixed sub-network alone (its BN statistics are its own)."""
    with autocast():
        logits, _ = (runner or partial(joint_forward, model))(x, [], ghost_batches, spec)
    ce = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    return StepOutput(ce, ce, torch.zeros_like(ce))


@dataclass
class TrainStep:
    """One training step as a callable, ``step(x, y, index) -> StepOutput``: the plan of
    ``policy`` for step ``index`` run by :func:`run_step`. The command-line trainer's
    ``step_fn`` and the public :class:`stimulative.Stimulative` are both this, so there is one
    implementation of the step. ``runner``: the DDP-wrapped joint forward, or None."""

    model: ElasticNet
    policy: StepPolicy
    loss: LossOptions = field(default_factory=LossOptions)
    autocast: Callable = nullcontext
    ghost_batches: int = 1
    runner: Callable | None = None
    low_memory: bool = False
    subnet_bn_update: bool = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> StepOutput:
        plan = self.policy.plan(step, x)
        return run_step(
            self.model,
            x,
            y,
            plan,
            self.loss,
            self.policy.fixed,
            self.autocast,
            self.ghost_batches,
            self.runner,
            self.low_memory,
            self.subnet_bn_update,
        )
