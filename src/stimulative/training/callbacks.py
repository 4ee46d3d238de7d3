"""What the training loop does besides training, as callbacks (in the spirit of Lightning's):
the progress bar, checkpoints, the per-epoch record (metrics.jsonl and TensorBoard) and KL
tracking. Each hook receives the :class:`~stimulative.training.loop.Trainer`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..analysis.kl_tracking import record_kl
from ..core.sampling import select_subnets
from ..evaluation.sharded import evaluate_full_sharded
from ..runtime import distributed
from ..runtime.files import append_record, truncate_records
from . import checkpoint as ckpt
from .checkpoint import save_weights
from .rng import rng_state
from .run_dir import RunDir, TrainingError
from .sums import global_sums, means

if TYPE_CHECKING:
    from .loop import Trainer


class Callback:
    """Hooks of the training loop; each does nothing unless overridden."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, sums: dict) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


def check_finite(trainer: Trainer, sums: dict, epoch: int) -> None:
    """Stop at the first non-finite loss, naming the checkpoint that is kept."""
    bad = int(sums["first_bad"])
    if bad >= 0:
        trainer.checkpoints.wait()
        last = trainer.run.latest_checkpoint()
        kept = (
            f"the last good checkpoint {last!r} (step {ckpt.load_meta(last)['step']}) is kept"
            if last
            else "no checkpoint had been written yet"
        )
        raise TrainingError(f"non-finite loss at step {bad} (epoch {epoch + 1}); training stopped; {kept}")


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Raise naming the first weight or buffer holding a NaN or an infinity. One sum over all
    of them first (a NaN or infinity anywhere makes it non-finite; one reduction instead of
    one per tensor); only if it is non-finite, which a sum too large for its type can also
    make it, are the tensors looked at one by one."""
    state = model.state_dict()
    floats = [p.reshape(-1) for p in state.values() if p.is_floating_point()]  # state_dict(): detached already
    if not floats or torch.isfinite(torch.cat(floats).sum()):
        return
    for name, p in state.items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise TrainingError(f"non-finite value in {name} at step {step}; the last good checkpoint is kept")


class ProgressBar(Callback):
    """A bar over the run's steps with the running loss and learning rate every ``log_every``
    steps (the losses are read, and checked finite, only then)."""

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg
        self.bar = tqdm(
            total=trainer.total_steps,
            initial=trainer.step,
            desc=f"{cfg.mode} {cfg.model}",
            unit="step",
            disable=not cfg.progress or not trainer.env.is_main,
        )

    def on_step_end(self, trainer: Trainer, step: int, sums: dict) -> None:
        self.bar.update(1)
        if step % trainer.cfg.log_every == 0 or step % trainer.steps_per_epoch == 0:
            sums = global_sums(sums, trainer.device)
            check_finite(trainer, sums, (step - 1) // trainer.steps_per_epoch)
            loss = float(sums["loss"]) / sums["steps"]
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{trainer.scheduler.get_last_lr()[0]:.4f}")
            if trainer.writer is not None:
                trainer.writer.add_scalar("train/loss", loss, step)

    def on_train_end(self, trainer: Trainer) -> None:
        self.bar.close()


class Checkpointer(Callback):
    """A checkpoint at every epoch end (and every ``checkpoint_every`` steps within an epoch),
    after checking the losses and weights are finite; it also keeps ``train_seconds``."""

    def on_train_start(self, trainer: Trainer) -> None:
        self.clock = time.perf_counter()

    def on_step_end(self, trainer: Trainer, step: int, sums: dict) -> None:
        every = trainer.cfg.checkpoint_every
        if every and step % every == 0 and step % trainer.steps_per_epoch:
            self.save(trainer, step, sums, (step - 1) // trainer.steps_per_epoch)

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None:
        self.save(trainer, trainer.step, sums, epoch)

    def save(self, trainer: Trainer, at_step: int, sums: dict, epoch: int) -> None:
        sums = global_sums(sums, trainer.device)
        check_finite(trainer, sums, epoch)
        distributed.broadcast_buffers(trainer.model)  # rank 0's BN running statistics, as DDP keeps
        check_finite_weights(trainer.model, at_step)
        now = time.perf_counter()
        trainer.train_seconds += now - self.clock
        self.clock = now
        state = {
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "rng": rng_state(),
            "epoch_sums": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in sums.items()},
        }
        if trainer.scaler is not None:
            state["scaler"] = trainer.scaler.state_dict()
        cfg, data = trainer.cfg, trainer.data
        meta = {
            "step": at_step,
            "epoch": at_step // trainer.steps_per_epoch,
            "train_seconds": trainer.train_seconds,
            "model": cfg.model,
            "num_classes": data.num_classes,
            "in_chans": data.in_chans,
            "config": cfg.to_dict(),
            "world_size": trainer.env.world_size,
            "best": trainer.best,
        }
        if trainer.env.is_main:
            trainer.saved_weights = (at_step, trainer.checkpoints.save(trainer.model, state, meta))


class ConsoleLog(Callback):
    """One line per epoch on the console, with or without the progress bar (what a log file
    on a cluster keeps): mean loss, CE, KL, learning rate, the validation top-1 and time."""

    def on_train_start(self, trainer: Trainer) -> None:
        self.clock = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None:
        record = trainer.last_record
        if not trainer.env.is_main or record is None:
            return
        now, width = time.perf_counter(), len(str(trainer.cfg.epochs))
        top1 = record.get(validation_key(trainer.cfg))
        split = "test" if trainer.cfg.select_on_test else "val"
        text = (
            f"epoch {epoch + 1:>{width}}/{trainer.cfg.epochs}  loss {record['loss']:.4f}  ce {record['ce']:.4f}  "
            f"kl {record['kl']:.4f}  lr {record['lr']:.5f}"
            + (f"  {split} top-1 (full BN) {top1:.2f}" if top1 is not None else "")
            + f"  {now - self.clock:.1f} s"
        )
        self.clock = now
        tqdm.write(text) if trainer.cfg.progress else print(text, flush=True)


class EpochRecord(Callback):
    """The epoch's line in metrics.jsonl (and TensorBoard), after its checkpoint: mean
    losses, learning rate, and the full network's top-1 on the validation split under the
    ``full`` BN protocol (statistics re-estimated, as the official code does after each
    epoch; restored afterwards, so training goes on with its own running statistics), on
    every ``--val-every``-th epoch and the last."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None:
        top1 = validation_top1(trainer) if trainer.policy.fixed is None and validates(trainer.cfg, epoch) else None
        sums = global_sums(sums, trainer.device)
        if not trainer.env.is_main:
            return
        at_step = (epoch + 1) * trainer.steps_per_epoch
        record = {"epoch": epoch + 1, "step": at_step, "lr": trainer.scheduler.get_last_lr()[0], **means(sums)}
        if top1 is not None:
            record[validation_key(trainer.cfg)] = top1
        record["train_seconds"] = trainer.train_seconds
        append_record(trainer.run.file(RunDir.METRICS), record)
        trainer.last_record = record
        if trainer.writer is not None:
            for k in ("loss", "ce", "kl"):
                trainer.writer.add_scalar(f"epoch/{k}", record[k], at_step)
            if top1 is not None:
                trainer.writer.add_scalar(f"epoch/{validation_key(trainer.cfg)}", top1, at_step)


def validates(cfg, epoch: int) -> bool:
    """Whether epoch ``epoch`` (from 0) ends with a validation: every ``--val-every``-th and the last."""
    return (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs


def validation_key(cfg) -> str:
    """The name of the per-epoch top-1 in metrics.jsonl: it says which split it is on."""
    return "test_top1_full_bn" if cfg.select_on_test else "val_top1_full_bn"


def validation_top1(trainer: Trainer) -> float | None:
    """The full network's top-1 on the validation split (or the test split with
    --select-on-test) under the ``full`` BN protocol; None without a validation split."""
    data, cfg = trainer.data, trainer.cfg
    dataset = data.test if cfg.select_on_test else data.val
    if dataset is None:
        return None
    return evaluate_full_sharded(trainer.model, dataset, trainer.eval_batches, trainer.calibration(), "full")["top1"]


class BestEpoch(Callback):
    """Keeps the weights of the epoch with the best validation top-1 (ties: the later epoch,
    as the official code) in ``RUN/best.safetensors``; :attr:`Trainer.best` says which."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None:
        record = trainer.last_record
        key = validation_key(trainer.cfg)
        (step, saved), trainer.saved_weights = trainer.saved_weights or (-1, None), None  # not held beyond the epoch
        if not trainer.env.is_main or record is None or record.get(key) is None:
            return
        best = trainer.best
        if best is None or record[key] >= best["top1"]:
            trainer.best = {
                "epoch": epoch + 1,
                "top1": record[key],
                "split": "test" if trainer.cfg.select_on_test else "val",
            }
            # the epoch's checkpoint holds these very weights (validation restores BN): linked, not written again
            trainer.checkpoints.wait()
            save_weights(trainer.model, trainer.run.file(RunDir.BEST_WEIGHTS), saved if step == trainer.step else None)


class KLTracker(Callback):
    """Paper Fig. 7: each epoch, KL(full || sub) of every evaluated sub-network on a fixed
    held-out batch (kl_tracking.jsonl), and once before training."""

    def on_train_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg
        self.path = trainer.run.file(RunDir.KL_TRACKING)
        self.batch = next(trainer.data.eval_batches(trainer.data.test, cfg.track_kl_images, 0, str(trainer.device)))
        self.specs = select_subnets(trainer.space, trainer.arch, cfg.eval_subnets, cfg.seed)
        if trainer.step == 0 and trainer.env.is_main:
            record_kl(trainer.model, self.specs, self.batch, 0, self.path)

    def on_epoch_end(self, trainer: Trainer, epoch: int, sums: dict) -> None:
        if trainer.env.is_main:
            record_kl(trainer.model, self.specs, self.batch, epoch + 1, self.path)


def forget_redone_work(run: RunDir, step: int, steps_per_epoch: int, redo_epoch_end: bool) -> None:
    """On resume, drop the records of the work to redo; at an epoch boundary the epoch's own
    records are written again (from the checkpoint's sums), whether or not the killed
    process got to write them."""
    last = step - 1 if redo_epoch_end else step
    truncate_records(run.file(RunDir.METRICS), lambda r: r["step"] <= last)
    truncate_records(run.file(RunDir.KL_TRACKING), lambda r: r["epoch"] * steps_per_epoch < step)


def tensorboard_writer(run: RunDir, purge_step: int | None = None):
    """A TensorBoard writer in ``RUN/tb``, or None (said once) if tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        print("TensorBoard logs skipped: tensorboard is not installed (pip install 'stimulative[tensorboard]')")
        return None
    # on resume, purge_step drops the events logged after the checkpoint (they are redone)
    return SummaryWriter(run.file(RunDir.TENSORBOARD), purge_step=purge_step)
