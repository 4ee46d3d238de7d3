"""``stimulative bench``, part e: the real trainer against a bare loop.

The trainer (:class:`~stimulative.training.loop.Trainer`, default training options: its data
path, checkpoints, per-epoch validation) trains resnet20 on the digits; the bare loop trains
the same model on the same tensors with the same optimizer (SGD, no decay on BN and biases)
and cosine schedule, written in plain PyTorch. After each epoch the bare loop does the work
the trainer's defaults do: it re-estimates the full network's BN statistics on the same
calibration images, takes the validation top-1, restores the running statistics and saves
its weights and optimizer state. A round starts one run of each kind and advances them in
lockstep: the e-th epochs of the CT trainer, the bare loop and the ST trainer run back to back
(a chain with the CT trainer in the middle, reversed every epoch), so they form a triple
taken within seconds of each other, and a slow spell of the machine (here they last from a
second to whole minutes) hits all three.

Every step is clocked (between step hooks in the trainer; the data path included), and the
epoch-end work as a whole. Per epoch:

- ``steps``: the epoch's median step times its steps (ST, whose steps differ by the
  sub-networks drawn: the median seconds per FLOP times the epoch's FLOPs, every step
  counted). The machines here stall now and then (a step of 20 ms taking 50-60 ms, a few
  times an epoch, on either side), and a sum would let those stalls decide a pair; the
  plain sums are kept too (``steps_sum``, ``whole_sum``);
- ``whole``: ``steps`` plus the epoch-end work (``end``).

The ratios: the CT trainer's images/s over the bare loop's, steps against steps and whole
against whole (target 0.95 each); the bare loop's steps over the trainer's whole epoch (no
target: what validating every epoch costs, the lever being ``--val-every``); ST trainer over
CT trainer step time per FLOP, each epoch over its own FLOPs (target 1.10). The bench's runs
stop after their last epoch: the final evaluation is not part of the comparison and is not
run.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import load_digits_data
from ..models import create_model
from ..runtime import distributed
from ..runtime.measure import set_up_objects_frozen, synchronize
from ..training.callbacks import Callback
from ..training.config import TrainConfig
from ..training.flops import step_flops
from ..training.loop import Trainer
from ..training.optim import make_optimizer, make_scheduler
from .bench_stats import (
    Ratio,
    any_undecided,
    median,
    once_per_round,
    open_on_few_pairs,
    paired_ratio,
    repeat_until_precise,
    verdict,
)

CT_OVER_BARE_TARGET = 0.95  # CT trainer images/s at least 0.95x the bare loop's
ST_WALL_OVER_FLOPS_TARGET = 1.10  # ST trainer / CT trainer time within 1.10x of their FLOP ratio
KINDS = ("ct", "bare", "st")
CHAIN = ("bare", "ct", "st")  # an epoch's order: CT beside the bare loop and beside ST, its two comparisons


@dataclass
class TrainerWork:
    """The runs compared: resnet20 on the digits, ``epochs`` epochs."""

    epochs: int = 4
    train_fraction: float = 1.0
    batch_size: int = 64
    seed: int = 0


EpochRun = Callable[[], tuple[list[float], float]]  # the next epoch: every step's seconds, the whole epoch's


class StepClock(Callback):
    """Every step's seconds, from :meth:`begin` (the epoch's start) on. Put it first among the
    callbacks, so a step ends before the others' step work."""

    def __init__(self) -> None:
        self.each: list[float] = []

    def begin(self) -> None:
        self.each, self.last = [], time.perf_counter()

    def on_step_end(self, trainer, step: int, sums: dict) -> None:
        synchronize(trainer.device)
        now = time.perf_counter()
        self.each.append(now - self.last)
        self.last = now


StepFlops = dict[str, list[list[float]]]  # per kind, per epoch, every step's FLOPs


def epoch_times(each: list[list[float]], whole: list[float], flops: list[list[float]] | None = None) -> dict:
    """Per epoch: ``steps`` (its median step's seconds times its steps: a typical epoch's
    steps, so that a stall of the machine, 2-3 steps long and seen on both sides here, does
    not decide a pair; with ``flops``, every step's FLOPs, the median seconds per FLOP times
    the epoch's FLOPs, as ST's steps differ by the sub-networks drawn), ``end`` (the
    epoch-end work, as timed), ``whole`` (the two added), and the plain sums ``steps_sum``
    and ``whole_sum`` as measured."""
    steps = [_typical_steps(e, flops[i] if flops else None) for i, e in enumerate(each)]
    end = [w - sum(e) for e, w in zip(each, whole)]
    return {
        "steps": steps,
        "end": end,
        "whole": [s + x for s, x in zip(steps, end)],
        "steps_sum": [sum(e) for e in each],
        "whole_sum": whole,
    }


def _typical_steps(each: list[float], flops: list[float] | None) -> float:
    if flops is None:
        return median(each) * len(each)
    if len(flops) != len(each):
        raise ValueError(f"an epoch of {len(each)} timed steps against {len(flops)} counted ones")
    return median([t / f for t, f in zip(each, flops)]) * sum(flops)


def trainer_config(work: TrainerWork, mode: str, out: str, device: str) -> TrainConfig:
    """Default training options (the progress bar off)."""
    return TrainConfig(mode=mode, model="resnet20", dataset="digits", epochs=work.epochs,
                       train_fraction=work.train_fraction, batch_size=work.batch_size, seed=work.seed, out=out,
                       device=device, progress=False)  # fmt: skip


@contextlib.contextmanager
def trainer_epochs(work: TrainerWork, mode: str, device: str) -> Iterator[EpochRun]:
    """A real training run in a temporary folder, advanced one epoch at a time (its console
    report, which would bury the bench's log, swallowed); no final evaluation."""
    with (
        tempfile.TemporaryDirectory(prefix="stimulative-bench-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),
        distributed.distributed_session(torch.device(device)) as env,
    ):
        trainer = Trainer(trainer_config(work, mode, f"{tmp}/run", device), env)
        clock = StepClock()
        trainer.callbacks = [clock, *trainer.callbacks]
        trainer.start()

        def epoch() -> tuple[list[float], float]:
            synchronize(trainer.device)
            clock.begin()
            start = clock.last
            trainer.train_epoch()
            synchronize(trainer.device)
            return clock.each, time.perf_counter() - start

        yield epoch
        trainer.close()


@torch.no_grad()
def bare_validation(model: torch.nn.Module, calibration: list, val: tuple) -> float:
    """The trainer's per-epoch validation in plain PyTorch: BN statistics re-estimated on the
    calibration images (cumulative average), top-1 on the validation tensors, statistics restored."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in calibration:
        model(x)
    model.eval()
    x_val, y_val = val
    top1 = sum((model(x_val[i : i + 500]).argmax(1) == y_val[i : i + 500]).sum() for i in range(0, len(y_val), 500))
    for m, (momentum, mean, var, count) in zip(bns, saved):
        m.momentum = momentum
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
    model.train()
    return float(top1) / len(y_val)


@contextlib.contextmanager
def bare_epochs(work: TrainerWork, device: str) -> Iterator[EpochRun]:
    """The same training with nothing around it, one epoch at a time: shuffled index batches
    of the training tensors, forward, cross-entropy, backward, SGD step, cosine schedule step;
    after each epoch the same validation and a saved state."""
    torch.manual_seed(work.seed)
    dev = torch.device(device)
    data = load_digits_data(work.seed, work.train_fraction, val_fraction=0.1)
    cfg = trainer_config(work, "ct", "", device)
    (x_all, y_all), val = (t.to(dev) for t in data.train.tensors), [t.to(dev) for t in data.val.tensors]
    calibration = data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, work.seed, 0, device)
    model = create_model("resnet20", num_classes=10, in_chans=x_all.shape[1]).to(dev)
    optimizer = make_optimizer(model, cfg)  # the trainer's: decay on weights only, SGD lr 0.05 momentum 0.9
    steps_per_epoch = len(y_all) // work.batch_size
    scheduler = make_scheduler(optimizer, work.epochs * steps_per_epoch, 0)
    gen = torch.Generator().manual_seed(work.seed)
    model.train()

    def epoch(tmp: str) -> tuple[list[float], float]:
        each: list[float] = []
        synchronize(dev)
        start = last = time.perf_counter()
        order = torch.randperm(len(y_all), generator=gen).to(dev)
        for i in range(steps_per_epoch):
            idx = order[i * work.batch_size : (i + 1) * work.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            optimizer.step()
            scheduler.step()
            synchronize(dev)
            now = time.perf_counter()
            each.append(now - last)
            last = now
        bare_validation(model, calibration, val)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, f"{tmp}/state.pt")
        return each, time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="stimulative-bench-") as tmp:
        yield lambda: epoch(tmp)


def start_run(work: TrainerWork, device: str) -> Callable[[str], contextlib.AbstractContextManager[EpochRun]]:
    """``start(kind)``: a run of the CT trainer, the ST trainer or the bare loop."""
    return lambda kind: bare_epochs(work, device) if kind == "bare" else trainer_epochs(work, kind, device)


def lockstep_round(
    start: Callable[[str], contextlib.AbstractContextManager[EpochRun]],
    epochs: int,
    round_index: int,
    flops: StepFlops | None = None,
) -> dict[str, dict]:
    """One run of each kind, advanced in lockstep: epoch e of the three back to back, so the
    three e-th epochs are a triple taken within seconds of each other and a slow spell of the
    machine hits all of them. The order is a chain with the CT trainer in the middle, next to
    both kinds it is compared with, reversed with every epoch and round (neither neighbour
    always first). ``flops``: the trainers' steps' FLOPs (:func:`trainer_step_flops`)."""
    each: dict[str, list[list[float]]] = {k: [] for k in KINDS}
    whole: dict[str, list[float]] = {k: [] for k in KINDS}
    with contextlib.ExitStack() as stack:
        runs = {k: stack.enter_context(start(k)) for k in KINDS}
        stack.enter_context(set_up_objects_frozen())  # the runs' set-up is not collected in their epochs
        for e in range(epochs):
            for kind in CHAIN if (round_index + e) % 2 == 0 else CHAIN[::-1]:
                steps, seconds = runs[kind]()
                each[kind].append(steps)
                whole[kind].append(seconds)
    flops = flops or {}
    return {k: {**epoch_times(each[k], whole[k], flops.get(k)), "step_count": sum(map(len, each[k]))} for k in KINDS}


def _per_epoch(runs: list[dict], key: str) -> list[float]:
    """The ``key`` seconds of every epoch of every run, in order (run by run)."""
    return [s for r in runs for s in r[key]]


def trainer_comparisons(runs: dict[str, list[dict]], flops: StepFlops, seed: int = 0) -> dict[str, Ratio]:
    """Paired per-epoch ratios (images/s ratio = seconds ratio upside down, epochs being the
    same size); ST over CT per FLOP with each epoch's own FLOPs (``flops``:
    :func:`trainer_step_flops`), as the sub-networks an epoch draws differ."""
    ct_steps, ct_whole = _per_epoch(runs["ct"], "steps"), _per_epoch(runs["ct"], "whole")
    bare_steps, bare_whole = _per_epoch(runs["bare"], "steps"), _per_epoch(runs["bare"], "whole")

    def per_flop(kind: str, seconds: list[float]) -> list[float]:  # runs one after another: epoch i % epochs
        epochs = [sum(f) for f in flops[kind]]
        return [t / epochs[i % len(epochs)] for i, t in enumerate(seconds)]

    return {
        "ct_trainer_over_bare_steps": paired_ratio(bare_steps, ct_steps, seed),
        "ct_trainer_over_bare_same_work": paired_ratio(bare_whole, ct_whole, seed),
        "ct_trainer_over_bare_without_validation": paired_ratio(bare_steps, ct_whole, seed),
        # the same as the second, from the plain sums: stalls included
        "ct_trainer_over_bare_same_work_sums": paired_ratio(
            _per_epoch(runs["bare"], "whole_sum"), _per_epoch(runs["ct"], "whole_sum"), seed
        ),
        "st_over_ct_trainer_wall_over_flops": paired_ratio(
            per_flop("st", _per_epoch(runs["st"], "steps")), per_flop("ct", ct_steps), seed
        ),
    }


def trainer_step_flops(work: TrainerWork) -> StepFlops:
    """FLOPs of every step of the CT and the ST trainer's runs, by epoch: the bench's runs
    share one seed, so epoch e draws the same sub-networks in every round (a mean over 8
    sampled steps put the ST run's FLOPs 5 % above its steps' at 3 epochs, 4 % below at 5)."""
    out = {}
    for mode in ("ct", "st"):
        each = step_flops(trainer_config(work, mode, "", "cpu").to_dict())
        n = len(each) // work.epochs
        out[mode] = [[float(f) for f in each[e * n : (e + 1) * n]] for e in range(work.epochs)]
    return out


def bench_trainer(
    work: TrainerWork,
    device: str,
    time_cap: float,
    log: Callable[[str], None],
    start: Callable[[str], contextlib.AbstractContextManager[EpochRun]] | None = None,
    flops: StepFlops | None = None,
) -> dict:
    """Rounds of the CT trainer, the bare loop and the ST trainer in lockstep, repeated until
    the ratios' intervals are within 5 % and their verdicts decided, or ``time_cap`` seconds
    have passed and :func:`open_at_cap` is false (at most three times the cap). ``start(kind)``:
    a context manager giving a run's next-epoch function (default: the real runs; tests pass
    fakes, and their steps' FLOPs)."""
    start = start or start_run(work, device)
    flops = flops or trainer_step_flops(work)
    lockstep_round(start, 1, 0, flops)  # warm-up (first-use costs: imports, allocator, oneDNN kernels)
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}

    def one_round() -> None:
        for kind, run in lockstep_round(start, work.epochs, len(runs["ct"]), flops).items():
            runs[kind].append(run)
        ct, bare = runs["ct"][-1], runs["bare"][-1]
        log(f"  trainer round {len(runs['ct'])}: CT steps {sum(ct['steps']):.2f} s, whole {sum(ct['whole']):.2f} s; "
            f"bare steps {sum(bare['steps']):.2f} s, whole {sum(bare['whole']):.2f} s")  # fmt: skip

    clock = time.perf_counter()
    ratios = once_per_round(lambda: trainer_comparisons(runs, flops), lambda: len(runs["ct"]))
    stop = repeat_until_precise(
        one_round,
        lambda: [r for k, r in ratios().items() if k in TARGETS],
        lambda: time.perf_counter() - clock,
        time_cap,
        decided=lambda: not any_undecided(judged(ratios())),
        open_at_cap=lambda: open_at_cap(ratios()),
    )
    return trainer_report(runs, flops, stop, work)


TARGETS = {  # ratio: (target, higher is better); the others are reported without a verdict
    "ct_trainer_over_bare_steps": (CT_OVER_BARE_TARGET, True),
    "ct_trainer_over_bare_same_work": (CT_OVER_BARE_TARGET, True),
    "st_over_ct_trainer_wall_over_flops": (ST_WALL_OVER_FLOPS_TARGET, False),
}


def judged(ratios: dict[str, Ratio]) -> list[tuple[Ratio, float, bool]]:
    """The ratios with a target: ``(ratio, target, higher is better)``."""
    return [(ratios[k], *goal) for k, goal in TARGETS.items()]


def open_at_cap(ratios: dict[str, Ratio]) -> bool:
    """At the time cap the rounds go on (up to the hard cap) while a verdict is undecided,
    whatever its pairs, or decided on fewer than 48 pairs by an interval wider than +-5 %: in
    a quick bench, 57 pairs of whole epochs left 0.99 [0.94, 1.02] undecided at the cap."""
    return any_undecided(judged(ratios)) or open_on_few_pairs(judged(ratios))


def trainer_verdicts(ratios: dict[str, Ratio]) -> dict[str, str]:
    return {k: verdict(ratios[k], target, higher) for k, (target, higher) in TARGETS.items()}


def trainer_report(runs: dict[str, list[dict]], flops: StepFlops, stop: dict, work: TrainerWork) -> dict:
    r = trainer_comparisons(runs, flops)
    return {
        "work": {"model": "resnet20", "dataset": "digits", **work.__dict__},
        "st_over_ct_flops": sum(map(sum, flops["st"])) / sum(map(sum, flops["ct"])),
        "epoch_flops": {k: [sum(f) for f in v] for k, v in flops.items()},
        "ratios": {k: v.to_dict() for k, v in r.items()},
        "verdicts": trainer_verdicts(r),
        "runs": runs,
        "repeats": stop,
        "note": "pairs are epochs (the e-th epoch of the r-th run of each kind, run back to back: the runs "
        "advance in lockstep); steps: the median step times the steps (the data path included; ST: the "
        "median seconds per FLOP times the epoch's FLOPs); whole: "
        "steps + epoch-end work (trainer: checkpoint, validation with BN re-estimation, metrics record; "
        "bare loop: the same validation in plain PyTorch and a saved state); without_validation: the bare "
        "loop's steps over the trainer's whole epochs, what validating every epoch costs (see --val-every); "
        "same_work_sums: whole epochs from the plain sums, stalls included",
    }
