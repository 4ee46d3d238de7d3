"""Processes started by ``torchrun``: the process group, ranks, shares and collectives, used by
both training (:mod:`stimulative.training.ddp`) and evaluation (:mod:`stimulative.evaluation.sharded`).

Outside ``torchrun`` every helper here is a no-op for one process, so the training loop has
one code path. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment):

* :func:`distributed_session` starts the process group, NCCL on GPUs (each rank on
  ``cuda:LOCAL_RANK``) and gloo on CPU, and tears it down at the end;
* :class:`stimulative.training.ddp.JointForward` puts the full network and the sampled sub-networks into ONE forward
  call of the module that DDP wraps. DDP expects one forward per backward; every parameter
  is used by the full network, so all of them get their gradient in the step and
  ``find_unused_parameters`` is not needed;
* the data are sharded per global batch (see :meth:`DataSource.train_batches`): every rank
  takes its contiguous ``1/world`` of each global batch of the ``(seed, epoch)`` permutation,
  as ``DistributedSampler`` with ``set_epoch`` would, without padding duplicates;
* evaluation (:mod:`stimulative.evaluation.sharded`) splits the sub-networks across ranks and
  the test images across ranks for the full network, then gathers: every sub-network is
  evaluated once, every test image counted once.

Sub-networks per rank. By default every rank draws the same sub-networks from
:func:`stimulative.core.sampling.step_generator` ``(seed, step)``, with no communication: the DDP
step is then exactly one process's step on the global batch (up to BatchNorm, see below).
With ``same_subnets_across_ranks=False`` rank ``r > 0`` draws from :func:`rank_generator`
instead. The gradient DDP averages is then ``grad CE(global batch) + lambda/world *
sum_r grad KL(main || sub_r)`` on rank r's share of the batch: each sub-network's KL
gradient weighs ``1/world`` of the same-sub-network case, so the KL term has the same
expectation but mixes ``world x subnets_per_step`` sub-networks per step (lower variance,
more of the space covered), and the run no longer equals a single-process run.

BatchNorm. In train mode each rank normalises with its own share's statistics, exactly as
one process would with "ghost batches" of the per-rank size (``--ghost-batches``), and DDP
broadcasts rank 0's running statistics at every forward; :func:`broadcast_buffers` does the
same before evaluation and checkpoints. ``--sync-bn`` (GPU only) normalises over the global
batch instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from ..core.sampling import step_generator
from ..data import TensorData


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when started as a plain process)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def setup(device: torch.device) -> DistEnv:
    """Start the process group if launched by torchrun with more than one process.

    ``device`` is the one asked for; on GPUs each rank takes ``cuda:LOCAL_RANK``."""
    world = launched_world_size()
    if world <= 1:
        return DistEnv(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank:
            raise ValueError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; start at most that many "
                "processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return DistEnv(rank, world, local_rank, device)


def teardown() -> None:
    global _local_group
    _local_group = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: torch.device) -> Iterator[DistEnv]:
    """:func:`setup` on entry, :func:`teardown` on exit (also on an error)."""
    env = setup(device)
    try:
        yield env
    finally:
        if env.enabled:
            teardown()


@contextmanager
def main_process_output(env: DistEnv) -> Iterator[None]:
    """Inside, only rank 0 prints to stdout (errors still reach stderr from every rank)."""
    if env.is_main:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def shard_bounds(n: int, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """The contiguous ``[lo, hi)`` share of ``n`` items of ``rank``: shares differ by at
    most one item, cover ``0..n`` exactly once, and are never padded."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    return n * rank // world, n * (rank + 1) // world


def shard_dataset(dataset: Dataset, rank: int | None = None, world: int | None = None) -> Dataset:
    """This rank's contiguous share of ``dataset`` (see :func:`shard_bounds`)."""
    lo, hi = shard_bounds(len(dataset), rank, world)
    if isinstance(dataset, TensorData):
        x, y = dataset.tensors
        return TensorData(x[lo:hi], y[lo:hi])
    return Subset(dataset, range(lo, hi))


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (just ``[obj]`` in one process)."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``t`` over the ranks (``t`` itself in one process). ``op``: sum, min, max."""
    if not is_dist():
        return t
    t = t.clone()
    dist.all_reduce(t, {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t


@torch.no_grad()
def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running statistics), as DDP does at each forward."""
    if is_dist():
        for b in model.buffers():
            dist.broadcast(b, 0)


def rank_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The sampler's generator of ``rank`` at ``step`` when ranks draw different
    sub-networks: rank 0 keeps :func:`step_generator` (so one process is unchanged), the
    others get independent streams, a pure function of (seed, step, rank)."""
    if rank == 0:
        return step_generator(seed, step)
    state = np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


# one single-rank group per rank, created collectively when SyncBatchNorm is set up: during
# evaluation the ranks run different sub-networks and must not synchronise BN statistics
_local_group = None


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm (statistics over the global batch). GPUs only."""
    global _local_group
    if device.type != "cuda":
        raise ValueError(
            "--sync-bn synchronises BatchNorm statistics over NCCL between GPUs and does not run on CPU; "
            "drop it (on CPU each process normalises its own share of the batch, like --ghost-batches)"
        )
    if is_dist() and _local_group is None:
        _local_group, _ = dist.new_subgroups(group_size=1)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


@contextmanager
def local_batchnorm(model: nn.Module) -> Iterator[None]:
    """Inside, SyncBatchNorm layers in train mode (BN recalibration) use only this rank's
    batch, as plain BatchNorm does; outside evaluation they synchronise again."""
    layers = [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    if not layers or _local_group is None:
        yield
        return
    groups = [m.process_group for m in layers]
    for m in layers:
        m.process_group = _local_group
    try:
        yield
    finally:
        for m, g in zip(layers, groups, strict=True):
            m.process_group = g
