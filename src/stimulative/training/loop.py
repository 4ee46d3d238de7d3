"""One training loop for common training (CT), stimulative training (ST), stochastic depth
and individual training of one sub-network, shaped like torchvision's reference script:
:func:`train_one_epoch`, :func:`main`; the final evaluation is
:func:`stimulative.training.results.finish`."""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch

from ..analysis.loafing import loafing_change
from ..core.elastic import ElasticNet
from ..core.resolution import parse_resolution
from ..core.spaces import build_space
from ..evaluation.sharded import evaluate_full_sharded
from ..models.initialisation import apply_init_options
from ..runtime import distributed
from ..runtime.device import resolve_device
from ..runtime.files import read_json_or_none
from . import checkpoint as ckpt
from .accelerate import prepare_model
from .backward import resolve_backward
from .callbacks import (
    BestEpoch,
    Callback,
    Checkpointer,
    ConsoleLog,
    EpochRecord,
    KLTracker,
    ProgressBar,
    forget_redone_work,
    tensorboard_writer,
)
from .checkpoint_writer import CheckpointWriter
from .config import TrainConfig
from .ddp import JointForward, freeze_unused, wrap_ddp
from .model_setup import build_model, check_input_size, load_initial_weights
from .optim import make_optimizer, make_scheduler
from .results import finish, print_summary
from .rng import seed_everything, set_rng_state
from .run_data import load_run_data
from .run_dir import RunDir
from .steps import LossOptions, StepOutput, StepPolicy, TrainStep, joint_forward
from .sums import add_step, new_epoch_sums


def train_one_epoch(
    model: ElasticNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    step_fn: Callable[[torch.Tensor, torch.Tensor, int], StepOutput],
    first_step: int,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    sums: dict | None = None,
) -> dict:
    """Run the epoch's batches. ``step_fn(x, y, step) -> StepOutput``. Sums stay on the
    device (no host sync per step); ``on_step(step, sums)`` is called after every step.
    ``sums`` continues the sums of an epoch resumed in its middle."""
    model.train()
    sums = new_epoch_sums() if sums is None else sums
    step = first_step
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)  # before the step: low_memory_step accumulates gradients in it
        out = step_fn(x, y, step)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1
        add_step(sums, out, step)
        if on_step is not None:
            on_step(step, sums)
    return sums


def main(cfg: TrainConfig) -> dict:
    """Train as configured, write the run folder, return the results. Every input is checked
    before anything is written, so a bad one leaves an existing folder untouched.

    Started by ``torchrun`` with several processes, it trains with DistributedDataParallel
    (see :mod:`stimulative.runtime.distributed`); only rank 0 writes into the run folder."""
    with distributed.distributed_session(resolve_device(cfg.device)) as env:
        trainer = Trainer(cfg, env)
        try:
            return trainer.fit()
        except KeyboardInterrupt:
            if env.is_main:
                print(trainer.interrupted_message(), file=sys.stderr)
            raise


CALIBRATION_CACHE_BYTES = 256 * 2**20  # 2,000 CIFAR images are 25 MB; 2,000 ImageNet crops 1.2 GB: rebuilt


class Trainer:
    """A run being trained: everything checked and built on construction (nothing written
    until every input is known to be valid), then :meth:`fit`."""

    def __init__(self, cfg: TrainConfig, env: distributed.DistEnv) -> None:
        self.env, self.device = env, env.device
        self.run = RunDir(cfg.run_dir())
        self.cfg = cfg = self.run.resolve(cfg)
        seed_everything(cfg.seed, cfg.deterministic)
        self.data = load_run_data(cfg, cfg.download)
        self.model = self._build_model()
        self.arch = self.model.architecture
        self.space = build_space(self.arch, cfg.min_depths)
        if cfg.eval_min_depths:
            build_space(self.arch, cfg.eval_min_depths, "--eval-min-depths")  # checked now, used after training
        self.steps_per_epoch, self.ghost_batches = self._batch_layout()
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.policy = StepPolicy.from_config(cfg, self.arch, self.space, self.steps_per_epoch, env.rank)
        if self.policy.fixed is not None:
            try:
                self.arch.validate(self.policy.fixed)
            except ValueError as e:
                raise ValueError(f"--subnet {cfg.subnet!r}: {e}") from None
        self.optimizer = make_optimizer(self.model, cfg)
        warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, warmup, cfg.min_lr_ratio)
        self.per_subnet = resolve_backward(cfg, env.enabled)  # --backward: auto resolved once, here
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.amp == "fp16" else None
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        self.step, self.train_seconds, self.resumed_sums = 0, 0.0, None
        self.best: dict | None = None  # {"epoch", "top1", "split"} of the best validation top-1 so far
        self._calibration: list[torch.Tensor] | None = None
        self.checkpoints = CheckpointWriter(self.run.checkpoint_dir)
        self.saved_weights: tuple[int, str] | None = None  # (step, weights file) of the last checkpoint
        self.resumed = self._resume()
        distributed.barrier()  # every rank has read the folder before rank 0 changes it
        if env.is_main:
            self.run.create(cfg)  # every input is valid: only now touch the folder
        self.runner = self._ddp_runner()
        # the step: the same object as the public stimulative.Stimulative
        self.step_fn = TrainStep(self.model, self.policy, LossOptions.from_config(cfg), self.autocast,
                                 self.ghost_batches, self.runner, self.per_subnet, cfg.subnet_bn_update)  # fmt: skip
        self.writer = None
        self.last_record: dict | None = None  # the last epoch's line of metrics.jsonl
        self.callbacks: list[Callback] = [ProgressBar(), Checkpointer(), EpochRecord(), BestEpoch(), ConsoleLog()]
        if cfg.track_kl and self.policy.fixed is None:
            self.callbacks.append(KLTracker())

    def _build_model(self) -> ElasticNet:
        """Any registered model, or a timm:/torchvision: one adapted (with --pretrained-file),
        on the device, checked for ST++'s smaller inputs, with the speed options applied."""
        cfg, data, device = self.cfg, self.data, self.device
        log = print if self.env.is_main else (lambda _: None)
        model = build_model(cfg, data.num_classes, data.in_chans, data.image_size, pretrained=not cfg.resume, log=log)
        apply_init_options(model, cfg.bn_zero_init, cfg.classifier_init)  # the official γ = 1 / N(0, 0.01²) options
        if cfg.init_from and not cfg.resume:  # fine-tuning: on --resume the checkpoint's weights win
            log(f"fine-tuning from {load_initial_weights(model, cfg.init_from)}")
        model = model.to(device)
        if cfg.subnet_resolution:  # the model must take the smaller inputs (CNNs do; a ViT built for one size does not)
            side = max(1, round(parse_resolution(cfg.subnet_resolution)[0] * data.image_size))
            check_input_size(model, data.in_chans, side, device)
        if cfg.sync_bn:
            model = distributed.convert_sync_bn(model, device)
        return prepare_model(model, cfg.channels_last, cfg.compile)  # --channels-last; --compile, block by block

    def _batch_layout(self) -> tuple[int, int]:
        """Steps per epoch and BN groups (ghost batches) per process, checked."""
        cfg, world = self.cfg, self.env.world_size
        steps_per_epoch = self.data.steps_per_epoch(cfg.batch_size)
        if steps_per_epoch == 0:
            raise ValueError(
                f"--batch-size {cfg.batch_size} is larger than the training set ({len(self.data.train)} images)"
            )
        bn_groups = cfg.ghost_batches or world  # BN groups of the global batch
        if bn_groups % world or cfg.batch_size % bn_groups:
            raise ValueError(
                f"--batch-size {cfg.batch_size} (the global batch) must split evenly into {bn_groups} BN groups "
                f"(--ghost-batches), and the groups evenly among the {world} process(es)"
            )
        return steps_per_epoch, bn_groups // world

    def _resume(self) -> bool:
        """With --resume, load the last checkpoint's weights and training state."""
        found = self.run.latest_checkpoint() if self.cfg.resume else None
        if not found:
            return False
        meta = ckpt.load_meta(found)
        ckpt.check_compatible(found, meta, self.cfg.model, self.data.num_classes, self.data.in_chans)
        ckpt.load_weights(found, self.model)
        state = ckpt.load_state(found)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(
                f"training state of {found!r} does not fit this run ({str(e).splitlines()[0]})"
            ) from None
        self.step, self.train_seconds = meta["step"], float(meta.get("train_seconds", 0.0))
        if not 0 <= self.step <= self.total_steps:
            raise ckpt.CheckpointError(
                f"checkpoint {found!r} is at step {self.step}, outside this run's {self.total_steps} steps"
            )
        self.resumed_sums = state.get("epoch_sums")
        self.best = meta.get("best")
        return True

    def _ddp_runner(self):
        """Under torchrun: DDP around the joint forward of the network and its sub-networks."""
        if not self.env.enabled:
            return None
        if self.policy.fixed is not None:
            freeze_unused(self.model, [(s, b) for s, b, _ in self.policy.fixed.flat()])
        return wrap_ddp(JointForward(self.model, joint_forward), self.env)

    def eval_batches(self, dataset) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        cfg = self.cfg
        return self.data.eval_batches(dataset, cfg.eval_batch_size, cfg.workers, str(self.device))

    def _on_step(self, step: int, sums: dict) -> None:
        for c in self.callbacks:
            c.on_step_end(self, step, sums)

    def _announce(self) -> None:
        """The run folder first, then where training starts."""
        if not self.env.is_main:
            return
        print(f"run folder: {self.run.path}")
        epoch, within = divmod(self.step, self.steps_per_epoch)
        if self.resumed:
            print(f"resuming from step {self.step} of {self.total_steps} (epoch {epoch + 1}, step {within} of it)")
        elif self.cfg.resume:
            print("no checkpoint was written before the interruption: starting from step 0")

    def interrupted_message(self) -> str:
        """What an interrupted run left, and how to continue it."""
        with contextlib.suppress(ckpt.CheckpointError):  # a failed last commit: the one before is named
            self.checkpoints.wait()
        found = self.run.latest_checkpoint()
        if found is None:
            return (
                "interrupted before the first checkpoint: nothing to resume; "
                f"start again with --out {self.run.path} --force"
            )
        step = ckpt.load_meta(found)["step"]
        return f"interrupted; the checkpoint at step {step} is kept: continue with --out {self.run.path} --resume"

    def start(self) -> dict | None:
        """Before the first epoch: open the writers, redo a resumed epoch's end, measure loafing before fine-tuning."""
        self._announce()
        spe, step = self.steps_per_epoch, self.step
        redo_epoch_end = self.resumed and step > 0 and step % spe == 0 and self.resumed_sums is not None
        if self.cfg.resume and self.env.is_main:
            forget_redone_work(self.run, step, spe, redo_epoch_end)
        distributed.barrier()
        if self.env.is_main:
            self.writer = tensorboard_writer(self.run, purge_step=step if self.cfg.resume else None)
        for c in self.callbacks:
            c.on_train_start(self)
        if redo_epoch_end:
            for c in self.callbacks:
                if not isinstance(c, (Checkpointer, ProgressBar)):
                    c.on_epoch_end(self, step // spe - 1, self.resumed_sums)
        return self._before_fine_tuning()

    def _before_fine_tuning(self) -> dict | None:
        """Fine-tuning measures loafing before training (results_before.json) and after."""
        cfg = self.cfg
        if not (cfg.init_from or cfg.pretrained_file) or self.policy.fixed is not None:
            return None
        if self.step > 0:
            return read_json_or_none(self.run.file(RunDir.RESULTS_BEFORE))
        before = finish(self.model, self.data, cfg, self.device, self.space, 0.0, out_name=RunDir.RESULTS_BEFORE,
                        calibration=self.calibration())  # fmt: skip
        if self.env.is_main:
            print("before fine-tuning:")
            print_summary(before)
        return before

    def _best_epoch_result(self) -> dict | None:
        """The best epoch by validation top-1, with its weights' test top-1 (full network,
        ``full`` BN protocol) beside the final weights'."""
        best = self.best if not distributed.is_dist() else distributed.all_gather_objects(self.best)[0]
        if best is None:
            return None
        model = copy.deepcopy(self.model)
        ckpt.load_weights_file(self.run.file(RunDir.BEST_WEIGHTS), model)
        test = evaluate_full_sharded(model, self.data.test, self.eval_batches, self.calibration(), "full")
        return {**best, "test_top1_full_bn": test["top1"]}

    def calibration(self) -> list[torch.Tensor]:
        """The images BN statistics are re-estimated on (the same every epoch: seeded, not
        augmented), on the device; kept after the first call when they take at most
        :data:`CALIBRATION_CACHE_BYTES`, so each validation does not read and decode them again."""
        if self._calibration is not None:
            return self._calibration
        cfg = self.cfg
        images = self.data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed, cfg.workers,
                                              str(self.device))  # fmt: skip
        if sum(x.numel() * x.element_size() for x in images) <= CALIBRATION_CACHE_BYTES:
            self._calibration = images
        return images

    def train_epoch(self) -> None:
        """Train from the current step to the end of its epoch, then the epoch-end callbacks
        (checkpoint, validation, records). :meth:`fit` calls it; the bench too, one epoch at a time."""
        cfg, spe = self.cfg, self.steps_per_epoch
        epoch, start = divmod(self.step, spe)
        batches = self.data.train_batches(cfg.batch_size, cfg.seed, epoch, start, cfg.workers, str(self.device),
                                          self.env.rank, self.env.world_size)  # fmt: skip
        sums = self.resumed_sums if (self.resumed_sums is not None and start > 0) else new_epoch_sums()
        if start > 0 and self.resumed_sums is None:
            sums["steps"] = start  # a checkpoint without sums: average over the steps we see
        self.resumed_sums = None
        sums = train_one_epoch(self.model, self.optimizer, self.scheduler, batches, self.step_fn, self.step,
                               self.scaler, self._on_step, sums)  # fmt: skip
        self.step = epoch * spe + sums["steps"]
        for c in self.callbacks:
            c.on_epoch_end(self, epoch, sums)

    def close(self) -> None:
        """After the last epoch: the callbacks' ends, the last checkpoint in place, the event writer closed."""
        for c in self.callbacks:
            c.on_train_end(self)
        self.checkpoints.wait()
        if self.writer is not None:
            self.writer.close()

    def fit(self) -> dict:
        """Train to the last step, then evaluate and write results.json (a finished run's
        results are returned as they are)."""
        done = self.run.results() if self.step >= self.total_steps else None
        if done is not None:
            if self.env.is_main:
                print(
                    f"{self.run.path} is finished (all {self.total_steps} steps): results in "
                    f"{self.run.file(RunDir.RESULTS)}"
                )
            return done
        before = self.start()
        while self.step < self.total_steps:
            self.train_epoch()
        self.close()
        # "backward": the step --backward resolved to (of the last stretch, if resumed with another)
        extra = {"best_epoch": self._best_epoch_result(), "backward": "per-subnet" if self.per_subnet else "joint"}
        results = finish(self.model, self.data, self.cfg, self.device, self.space, self.train_seconds, extra=extra,
                         calibration=self.calibration())  # fmt: skip
        if self.env.is_main:
            print_summary(results)
            if before is not None:
                print("\n" + "\n".join(loafing_change(before, results)))
        return results
