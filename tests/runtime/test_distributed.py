"""Multi-process training: data shares, ghost batches, and a real 2-process gloo run started
with ``torchrun --standalone --nproc_per_node=2`` that trains, evaluates and resumes.

Why ghost batches in the single-process reference. With DDP each rank runs BatchNorm in
train mode on its own share of the global batch, so its batch statistics are those of B/2
images, not of the global B; a plain single-process run on the global batch therefore
differs from the 2-process run from the first step on (measured on the digits: max |Δ
weight| ~3e-2 after four steps), not because of a bug but because it is another model of
BatchNorm. SyncBatchNorm would make the 2-process run match the plain one, but it needs
NCCL and GPUs. So the reference is one process with ``--ghost-batches 2``: BN normalises
each half of the global batch on its own, exactly the per-rank semantics, and only the first
half updates the running statistics, as DDP keeps rank 0's. Everything else (global batch,
learning rate, sub-networks drawn from (seed, step), gradient = mean over the global batch)
is the same, so the weights agree up to rounding: in float64 to ~1e-16 after every step
(:func:`test_ddp_steps_equal_single_process_ghost_batch_steps_in_float64`). In float32 the
all-reduce sums in another order; the ~1e-8 differences of the first step are then amplified
by training, more so at a high learning rate (measured on these runs, max |Δ parameter|
after 6 steps: 1e-3 at lr 0.05, 2e-5 at lr 0.01, 3e-8 at lr 0.002), so the float32 runs
below use lr 0.002.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from stimulative.cli import main as cli
from stimulative.core.sampling import parse_spec, step_generator
from stimulative.data import EpochSampler, TensorData, load_digits_data, random_shift
from stimulative.models import create_model
from stimulative.runtime.distributed import rank_generator, shard_bounds, shard_dataset
from stimulative.training.config import TrainConfig
from stimulative.training.steps import training_step

from ..tiny import tiny_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 270 training images, global batch 64: 4 steps per epoch, 8 in all; checkpoints every 3
# steps counted below assume the whole training split (no validation split)
TINY = tiny_flags(val_fraction=0, model="resnet20", dataset="digits", train_fraction=0.2, batch_size=64, epochs=2,
                  lr=0.002, checkpoint_every=3, eval_subnets=3, calib_images=64, eval_batch_size=500, workers=0,
                  device="cpu", log_every=2)  # fmt: skip
# Two float32 runs that are equal in exact arithmetic (gradients summed in another order,
# across processes) drift apart by rounding: about 1e-5 of a tensor's scale after 8 steps
# here (an Intel Xeon; BN running variances near 3.5 differed by 1.7e-5 absolute, so any
# absolute bound breaks on the tensors of largest magnitude). A real fault (a lost or
# repeated step, a wrong gradient average, the wrong BN share) moves weights by a step's
# update, lr 0.05 x gradient: a few percent of a tensor's scale. 1e-3 of each tensor's
# largest magnitude sits between the two, two orders of magnitude from each.
WEIGHT_RTOL = 1e-3


# ---------------------------------------------------------------- data shares, pure pieces


@pytest.mark.parametrize("world", [2, 4])
def test_rank_shares_make_up_each_global_batch(world):
    data = load_digits_data(0, 0.2, augment=True)
    data.augment = random_shift(1)
    whole = list(data.train_batches(64, 0, 1, start=1))
    shares = [list(data.train_batches(64, 0, 1, start=1, rank=r, world_size=world)) for r in range(world)]
    assert all(len(s) == len(whole) for s in shares)
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([s[b][0] for s in shares]), x)  # augmented as in one process
        assert torch.equal(torch.cat([s[b][1] for s in shares]), y)


def test_epoch_sampler_shards_like_a_distributed_sampler_without_padding():
    n, batch = 103, 12  # 8 complete global batches, 7 images left over
    whole = EpochSampler(n, 3, 2).order
    shares = [EpochSampler(n, 3, 2, 0, batch, r, 3).order for r in range(3)]
    assert all(len(s) == 8 * 4 for s in shares)
    for b in range(8):
        assert sum((s[b * 4 : (b + 1) * 4] for s in shares), []) == whole[b * batch : (b + 1) * batch]
    assert len({i for s in shares for i in s}) == 8 * batch  # every image at most once
    # resuming at global batch 5 gives each rank the tail of its own share
    assert EpochSampler(n, 3, 2, 5 * batch, batch, 1, 3).order == shares[1][5 * 4 :]


def test_shards_of_the_test_set_count_each_image_once():
    for n, world in [(450, 2), (7, 3), (2, 4)]:
        bounds = [shard_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    data = TensorData(torch.arange(7.0)[:, None], torch.arange(7))
    assert torch.cat([shard_dataset(data, r, 3).tensors[1] for r in range(3)]).tolist() == list(range(7))


def test_rank_generators():
    assert torch.equal(
        torch.randint(99, (5,), generator=rank_generator(1, 7, 0)),
        torch.randint(99, (5,), generator=step_generator(1, 7)),
    )
    draws = [torch.randint(1 << 30, (4,), generator=rank_generator(1, 7, r)).tolist() for r in range(4)]
    assert len({tuple(d) for d in draws}) == 4
    assert draws[2] == torch.randint(1 << 30, (4,), generator=rank_generator(1, 7, 2)).tolist()  # a pure function


def test_ghost_batches_give_the_mean_of_per_rank_gradients():
    """What DDP computes with two ranks (the mean of each rank's gradient on its half, BN on
    that half) is what one process computes with --ghost-batches 2."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).train()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    subnets = [parse_spec("1,2,3"), parse_spec("3,1,1")]

    def grads(xs, ys, ghost):
        model.zero_grad()
        training_step(model, xs, ys, subnets, 1.0, ghost_batches=ghost).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ghost = grads(x, y, 2)
    halves = [grads(x[:8], y[:8], 1), grads(x[8:], y[8:], 1)]
    plain = grads(x, y, 1)
    for g, a, b in zip(ghost, *halves, strict=False):
        torch.testing.assert_close(g, (a + b) / 2, rtol=1e-4, atol=1e-6)
    assert (
        max((g - p).abs().max() for g, p in zip(ghost, plain, strict=False)) > 1e-3
    )  # BN over 16 images is another model


def _train_float64(rank: int, world: int, port: int, path: str, steps: int = 6) -> None:
    """``steps`` ST steps in float64 on the digits, global batch 64: with ``world`` = 2
    processes, DDP around the joint forward on each rank's share (BN on 32 images); with
    ``world`` = 1, one process with two ghost batches. Rank 0 saves the weights after each
    step to ``path``."""
    import torch.distributed as dist

    from stimulative.core.sampling import SamplingSpace, sample_subnet
    from stimulative.core.schedules import cosine_lr
    from stimulative.runtime.distributed import DistEnv
    from stimulative.training.ddp import JointForward, wrap_ddp
    from stimulative.training.optim import make_optimizer
    from stimulative.training.steps import joint_forward

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_digits_data(0, 0.2)
    data.train.tensors = (data.train.tensors[0].double(), data.train.tensors[1])
    model = create_model("resnet20", num_classes=10, in_chans=1).double()
    optimizer = make_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, 8, 0))
    space = SamplingSpace.default(model.architecture)
    runner = wrap_ddp(JointForward(model, joint_forward), DistEnv(rank, world)) if world > 1 else None
    snapshots = []
    for step, (x, y) in enumerate(data.train_batches(64, 0, 0, 0, 0, "cpu", rank, world)):
        if step == steps:
            break
        subnets = [sample_subnet(space, model.architecture, "ordered", step_generator(0, step)) for _ in range(2)]
        out = training_step(model, x, y, subnets, 1.0, ghost_batches=1 if world > 1 else 2, runner=runner)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    if rank == 0:
        torch.save(snapshots, path)
    if world > 1:
        dist.destroy_process_group()


def test_ddp_steps_equal_single_process_ghost_batch_steps_in_float64(tmp_path):
    """The equivalence itself, free of float32 rounding: 2 gloo processes under DDP and one
    process with --ghost-batches 2 agree to ~1e-16 after every one of 4 steps (same global
    batch, same two sub-networks per step, BN over each rank's 32 images). In float32 the
    same runs drift apart by rounding amplified by training (see the module docstring)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_train_float64, args=(2, port, str(tmp_path / "two.pt"), 4), nprocs=2)
    _train_float64(0, 1, 0, str(tmp_path / "one.pt"), 4)
    two, one = torch.load(tmp_path / "two.pt"), torch.load(tmp_path / "one.pt")
    assert len(two) == len(one) == 4
    for a, b in zip(two, one, strict=False):
        assert _max_diff(a, b) < 1e-12
    assert _max_diff(two[-1], two[0]) > 1e-3  # and the weights did move


def test_distribution_options_fail_clearly(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", *TINY, "--out", str(out), "--sync-bn"]) == 2
    err = capsys.readouterr().err
    assert "--sync-bn" in err and "CPU" in err
    assert not out.exists()
    assert cli(["train", *TINY, "--out", str(out), "--ghost-batches", "3"]) == 2
    assert "must split evenly" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="--sync-bn"):
        TrainConfig(sync_bn=True, ghost_batches=2).validate()


# ---------------------------------------------------------------- a real 2-process run


def _torchrun(args: list[str], tmp_path, kill_after_step: int = 0) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m stimulative train ARGS`` on CPU (gloo).
    ``kill_after_step``: every rank SIGKILLs itself right after that optimizer step."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    launcher = [torchrun] if os.path.exists(torchrun) else [sys.executable, "-m", "torch.distributed.run"]
    if kill_after_step:
        script = tmp_path / "killed.py"
        script.write_text(
            "import os, signal, sys, torch\n"
            "from stimulative.cli import main\n"
            "step, count = torch.optim.SGD.step, [0]\n"
            "def killing_step(self, *a, **kw):\n"
            "    out = step(self, *a, **kw)\n"
            "    count[0] += 1\n"
            f"    if count[0] == {kill_after_step}:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return out\n"
            "torch.optim.SGD.step = killing_step\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        target = [str(script), "train"]
    else:
        target = ["-m", "stimulative", "train"]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", *target, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _weights(run: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(run, "checkpoint", "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _max_rel_diff(a: dict, b: dict) -> float:
    """Largest difference of two state dicts, relative to each tensor's largest magnitude
    (counters such as num_batches_tracked must be equal)."""
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if not a[k].is_floating_point())
    return max(
        ((a[k].double() - b[k].double()).abs().max() / b[k].double().abs().max().clamp_min(1e-12)).item()
        for k in a
        if a[k].is_floating_point()
    )


def _step(run: str) -> int:
    with open(os.path.join(run, "checkpoint", "meta.json")) as fh:
        return json.load(fh)["step"]


def test_two_processes_train_evaluate_and_resume_across_world_sizes(tmp_path):
    """2 gloo processes vs one process with the same global batch and per-rank BN semantics
    (--ghost-batches 2; see the module docstring):

    1. a 2-process run is killed after step 7; its checkpoint (step 6, mid-epoch) equals,
       within float tolerance, that of a 1-process run interrupted at the same step;
    2. each is resumed by the other world size: the 2-process run finishes in 1 process,
       the 1-process run in 2 processes (training, then the evaluation split across ranks);
    3. both end with the same weights and the same results.json."""
    two, one = str(tmp_path / "two"), str(tmp_path / "one")
    # one thread, as each torchrun rank (OMP_NUM_THREADS=1): another thread count reduces in
    # another order, and these tiny networks amplify rounding (2 threads: 3e-5 after 6 steps)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _two_processes_then_one(tmp_path, two, one)
    finally:
        torch.set_num_threads(threads)


def _two_processes_then_one(tmp_path, two: str, one: str) -> None:

    p = _torchrun([*TINY, "--out", two], tmp_path, kill_after_step=7)
    assert p.returncode != 0, p.stderr[-2000:]
    assert _step(two) == 6 and not os.path.exists(os.path.join(two, "results.json"))

    real_step = torch.optim.SGD.step
    count = [0]

    def interrupting_step(self, *a, **kw):
        out = real_step(self, *a, **kw)
        count[0] += 1
        if count[0] == 7:
            raise KeyboardInterrupt
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", interrupting_step)
        assert cli(["train", *TINY, "--out", one, "--ghost-batches", "2"]) == 130
    assert _step(one) == 6
    assert _max_rel_diff(_weights(two), _weights(one)) < WEIGHT_RTOL  # 6 steps, 2 processes vs 1

    # resume the 2-process run in 1 process, and the 1-process run in 2 processes
    assert cli(["train", *TINY, "--out", two, "--resume", "--ghost-batches", "2"]) == 0
    p = _torchrun([*TINY, "--out", one, "--resume"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("BN protocol") == 1  # only rank 0 prints the summary
    assert _step(two) == _step(one) == 8
    assert _max_rel_diff(_weights(two), _weights(one)) < WEIGHT_RTOL

    r_two = json.load(open(os.path.join(two, "results.json")))  # evaluated by 1 process
    r_one = json.load(open(os.path.join(one, "results.json")))  # evaluated by 2 processes
    for bn in ("subnet", "running"):
        a, b = r_two["by_bn"][bn], r_one["by_bn"][bn]
        assert a["main"]["top1"] == pytest.approx(b["main"]["top1"], abs=0.3)  # one image of 450 may flip
        assert [s["spec"] for s in a["subnets"]["per_subnet"]] == [s["spec"] for s in b["subnets"]["per_subnet"]]
        assert a["subnets"]["count"] == b["subnets"]["count"] == 3
        for s, t in zip(a["subnets"]["per_subnet"], b["subnets"]["per_subnet"], strict=False):
            assert s["top1"] == pytest.approx(t["top1"], abs=0.3)
    m_two = [json.loads(line) for line in open(os.path.join(two, "metrics.jsonl"))]
    m_one = [json.loads(line) for line in open(os.path.join(one, "metrics.jsonl"))]
    assert [m["step"] for m in m_two] == [m["step"] for m in m_one] == [4, 8]
    for a, b in zip(m_two, m_one, strict=False):  # losses averaged over all ranks
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert sorted(os.listdir(one)) == sorted(os.listdir(two))  # rank 0 alone writes: no strays
