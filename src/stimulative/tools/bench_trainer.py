"""``stimulative bench``, part e: the real trainer against a bare loop.

The trainer (:func:`stimulative.training.loop.main`'s :class:`Trainer`, default options, its
data loader, checkpoints and per-epoch validation) trains resnet20 on the digits for a few
short epochs; the bare loop trains the same model on the same tensors with the same
optimizer (SGD, no decay on BN and biases) and cosine schedule, and nothing else. They run
interleaved (trainer CT, bare, trainer ST, trainer CT, bare, ...), so the i-th runs are paired.

Three seconds per trainer run, because they answer different questions:

- ``step_seconds``: the steps alone (data loader included), clocked by a callback between
  the step hooks, the epoch-end work (checkpoint, validation with BN re-estimation) excluded;
- ``train_seconds``: what the run records in results.json (steps + checkpoints + validation
  of all epochs but the last, whose checkpoint closes the clock);
- ``fit_seconds``: the whole :meth:`Trainer.fit` call including the final evaluation.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import load_digits_data
from ..models import create_model
from ..runtime import distributed
from ..runtime.measure import synchronize
from ..training.callbacks import Callback
from ..training.config import TrainConfig
from ..training.flops import training_flops
from ..training.loop import Trainer
from ..training.optim import make_optimizer, make_scheduler
from .bench_stats import Ratio, paired_ratio, repeat_until_precise, verdict

CT_OVER_BARE_TARGET = 0.95  # CT trainer images/s at least 0.95x the bare loop's
ST_WALL_OVER_FLOPS_TARGET = 1.10  # ST trainer / CT trainer time within 1.10x of their FLOP ratio


@dataclass
class TrainerWork:
    """The runs compared: resnet20 on the digits, ``epochs`` short epochs."""

    epochs: int = 2
    train_fraction: float = 1.0
    batch_size: int = 64
    seed: int = 0


class StepClock(Callback):
    """Seconds spent in the steps: from the start (or the end of the last epoch's work) to
    each step's end. :meth:`mark` must run after every other epoch-end hook."""

    def __init__(self) -> None:
        self.seconds, self.last, self.steps = 0.0, 0.0, 0

    def on_train_start(self, trainer) -> None:
        self.last = time.perf_counter()

    def on_step_end(self, trainer, step: int, sums: dict) -> None:
        synchronize(trainer.device)
        now = time.perf_counter()
        self.seconds += now - self.last
        self.last, self.steps = now, self.steps + 1

    def mark(self) -> None:
        self.last = time.perf_counter()


class _EpochEndMark(Callback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_epoch_end(self, trainer, epoch: int, sums: dict) -> None:
        self.clock.mark()


def trainer_config(work: TrainerWork, mode: str, out: str, device: str) -> TrainConfig:
    return TrainConfig(
        mode=mode,
        model="resnet20",
        dataset="digits",
        epochs=work.epochs,
        train_fraction=work.train_fraction,
        batch_size=work.batch_size,
        seed=work.seed,
        out=out,
        device=device,
        progress=False,
    )


def run_trainer(work: TrainerWork, mode: str, device: str) -> dict:
    """One real training run in a temporary folder: its step, train and fit seconds and images."""
    with tempfile.TemporaryDirectory(prefix="stimulative-bench-") as tmp:
        cfg = trainer_config(work, mode, f"{tmp}/run", device)
        # what training.loop.main does, plus the step clock (first and last among the callbacks)
        # the trainer's report goes to stderr: stdout carries the bench's table
        with contextlib.redirect_stdout(sys.stderr), distributed.distributed_session(torch.device(device)) as env:
            trainer = Trainer(cfg, env)
            clock = StepClock()
            trainer.callbacks = [clock, *trainer.callbacks, _EpochEndMark(clock)]
            t = time.perf_counter()
            results = trainer.fit()
            fit = time.perf_counter() - t
    return {
        "step_seconds": clock.seconds,
        "train_seconds": float(results["train_seconds"]),
        "fit_seconds": fit,
        "images": clock.steps * work.batch_size,
    }


def bare_loop(work: TrainerWork, device: str) -> dict:
    """The same training with nothing around it: shuffled index batches of the training
    tensors, forward, cross-entropy, backward, SGD step, cosine schedule step."""
    torch.manual_seed(work.seed)
    dev = torch.device(device)
    x_all, y_all = load_digits_data(work.seed, work.train_fraction, val_fraction=0.1).train.tensors
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    model = create_model("resnet20", num_classes=10, in_chans=x_all.shape[1]).to(dev)
    cfg = trainer_config(work, "ct", "", device)
    optimizer = make_optimizer(model, cfg)  # the trainer's: decay on weights only, SGD lr 0.05 momentum 0.9
    steps_per_epoch = len(y_all) // work.batch_size
    scheduler = make_scheduler(optimizer, work.epochs * steps_per_epoch, 0)
    gen = torch.Generator().manual_seed(work.seed)
    model.train()
    synchronize(dev)
    t = time.perf_counter()
    for _ in range(work.epochs):
        order = torch.randperm(len(y_all), generator=gen).to(dev)
        for i in range(steps_per_epoch):
            idx = order[i * work.batch_size : (i + 1) * work.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            optimizer.step()
            scheduler.step()
    synchronize(dev)
    return {"step_seconds": time.perf_counter() - t, "images": work.epochs * steps_per_epoch * work.batch_size}


def trainer_comparisons(runs: dict[str, list[dict]], flop_ratio: float, seed: int = 0) -> dict[str, Ratio]:
    """Paired ratios: CT trainer images/s over the bare loop's (its steps alone, and with its
    checkpoints and validation), and ST trainer / CT trainer step time over their FLOP ratio."""
    per_image = {k: [r["step_seconds"] / r["images"] for r in v] for k, v in runs.items()}
    train_per_image = {k: [r["train_seconds"] / r["images"] for r in v] for k, v in runs.items() if k != "bare"}
    return {
        # images/s ratio = seconds-per-image ratio upside down
        "ct_trainer_over_bare_steps": paired_ratio(per_image["bare"], per_image["ct"], seed),
        "ct_trainer_over_bare_train_seconds": paired_ratio(per_image["bare"], train_per_image["ct"], seed),
        "st_over_ct_trainer_wall_over_flops": paired_ratio(per_image["st"], per_image["ct"], seed).scaled(flop_ratio),
    }


def trainer_flop_ratio(work: TrainerWork) -> float:
    """FLOPs per step of the ST trainer over the CT trainer's (counted on real steps)."""
    flops = {m: training_flops(trainer_config(work, m, "", "cpu").to_dict())["per_step"] for m in ("st", "ct")}
    return flops["st"] / flops["ct"]


def bench_trainer(
    work: TrainerWork,
    device: str,
    time_cap: float,
    log: Callable[[str], None],
    run: Callable[[str], dict] | None = None,
    flop_ratio: float | None = None,
) -> dict:
    """Trainer CT, bare loop, trainer ST, interleaved, repeated until the ratios' intervals are
    within 5 % or ``time_cap`` seconds have passed. ``run(kind)``: one run of ``"ct"``,
    ``"st"`` or ``"bare"`` (default: the real ones; tests pass a fake, and the FLOP ratio)."""
    run = run or (lambda kind: bare_loop(work, device) if kind == "bare" else run_trainer(work, kind, device))
    flop_ratio = flop_ratio or trainer_flop_ratio(work)
    run("bare"), run("ct")  # warm-up (first-use costs: imports, allocator, oneDNN kernels)
    runs: dict[str, list[dict]] = {"ct": [], "bare": [], "st": []}

    def one_round() -> None:
        for kind in runs:
            runs[kind].append(run(kind))
        log(f"  trainer round {len(runs['ct'])}: CT {runs['ct'][-1]['step_seconds']:.2f} s steps, "
            f"bare {runs['bare'][-1]['step_seconds']:.2f} s")  # fmt: skip

    start = time.perf_counter()
    stop = repeat_until_precise(
        one_round,
        lambda: list(trainer_comparisons(runs, flop_ratio).values()),
        lambda: time.perf_counter() - start,
        time_cap,
    )
    return trainer_report(runs, flop_ratio, stop, work)


def trainer_report(runs: dict[str, list[dict]], flop_ratio: float, stop: dict, work: TrainerWork) -> dict:
    r = trainer_comparisons(runs, flop_ratio)
    return {
        "work": {"model": "resnet20", "dataset": "digits", **work.__dict__},
        "st_over_ct_flops": flop_ratio,
        "ratios": {k: v.to_dict() for k, v in r.items()},
        "verdicts": {
            "ct_trainer_over_bare_steps": verdict(r["ct_trainer_over_bare_steps"], CT_OVER_BARE_TARGET, True),
            "ct_trainer_over_bare_train_seconds": verdict(
                r["ct_trainer_over_bare_train_seconds"], CT_OVER_BARE_TARGET, True
            ),
            "st_over_ct_trainer_wall_over_flops": verdict(
                r["st_over_ct_trainer_wall_over_flops"], ST_WALL_OVER_FLOPS_TARGET, False
            ),
        },
        "runs": runs,
        "repeats": stop,
        "note": "steps: the trainer's steps and data loader, clocked between step hooks; train_seconds: "
        "results.json's (adds checkpoints and per-epoch validation with BN re-estimation); the bare loop "
        "has neither",
    }
