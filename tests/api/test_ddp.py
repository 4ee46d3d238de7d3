"""Stimulative.ddp(): two gloo processes on the CPU, each with its half of every global batch,
take the same steps as one process with ``ghost_batches=2`` (BN over each half, as each rank
normalises its share; see tests/runtime/test_distributed.py for why that is the reference).
In float64 the weights agree to rounding (the all-reduce sums in another order: ~1e-16)."""

from __future__ import annotations

import os
import socket

import torch

import stimulative
from stimulative.data import load_digits_data

STEPS = 3


def _train(rank: int, world: int, port: int, path: str) -> None:
    import torch.distributed as dist

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_all, y_all = load_digits_data(0, 0.2).train.tensors
    model = stimulative.create_model("resnet20", num_classes=10, in_chans=1).double()
    st = stimulative.Stimulative(model, subnets_per_step=2, ghost_batches=1 if world > 1 else 2)
    if world > 1:
        st.ddp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    snapshots = []
    for step in range(STEPS):
        x, y = x_all[64 * step : 64 * (step + 1)].double(), y_all[64 * step : 64 * (step + 1)]
        if world > 1:  # this rank's contiguous share of the global batch
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        optimizer.zero_grad()
        out = st(x, y, step)
        out.loss.backward()
        optimizer.step()
        snapshots.append([p.detach().clone() for p in model.parameters()])
    if rank == 0:
        torch.save(snapshots, path)
    if world > 1:
        dist.destroy_process_group()


def test_ddp_steps_equal_one_process_with_ghost_batches_in_float64(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_train, args=(2, port, str(tmp_path / "two.pt")), nprocs=2)
    _train(0, 1, 0, str(tmp_path / "one.pt"))
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert len(two) == len(one) == STEPS
    for a, b in zip(two, one, strict=True):
        assert max((u - v).abs().max().item() for u, v in zip(a, b, strict=True)) < 1e-12
    assert max((u - v).abs().max().item() for u, v in zip(two[-1], two[0], strict=True)) > 1e-3  # weights moved
