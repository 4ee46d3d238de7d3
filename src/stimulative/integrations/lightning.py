"""PyTorch Lightning (``pip install stimulative[lightning]``): stimulative training inside a
LightningModule, with the KL and the sub-networks' top-1 logged through Lightning's loggers.

* :class:`StimulativeMixin` gives the module ``self.stimulative_step(batch, batch_idx)``:
  call it from your ``training_step``. It runs :class:`stimulative.Stimulative` (Eq. 1, the
  joint forward with the BN guard), logs ``train/loss``, ``train/ce`` and ``train/kl``, and
  returns the loss for Lightning's backward.
* :class:`SubnetMetrics`, a Callback, evaluates every sub-network at the end of each
  validation epoch under a named BN protocol and logs ``val/subnets/top1_mean`` (and
  ``_std``, ``_min``, ``_max``, ``full_top1``).

Why a mixin whose method the user calls, and not a callback that replaces the loss: with
``strategy="ddp"`` Lightning runs ``training_step`` inside the forward of its DDP wrapper,
and DDP needs the network and all its sub-networks in that one forward (one forward, one
backward); a callback's hooks run outside it, so a loss swapped in from a callback would
break DDP (or need ``find_unused_parameters`` and a second reduction). Calling the step from
``training_step`` also keeps the user's own code in charge (extra loss terms, other batch
layouts, manual optimisation) with nothing monkeypatched. Evaluation needs no gradient and
no DDP, so it is a callback that a user adds or leaves out.

Mixed precision is Lightning's: ``Trainer(precision="bf16-mixed")`` autocasts
``training_step`` and ``"16-mixed"`` scales the loss, so build :class:`Stimulative` without
``autocast``. DDP is Lightning's too: do not call :meth:`Stimulative.ddp`. Under DDP each rank
draws the same sub-networks (the step index is Lightning's global batch index) and BN
normalises each rank's share, as in :mod:`stimulative.runtime.distributed`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from ..api.evaluate import SubnetSummary, evaluate_subnets
from ..api.step import Stimulative
from ..core.elastic import ElasticNet
from ..core.sampling import SamplingSpace, SubnetSpec


class StimulativeMixin:
    """Stimulative training for a LightningModule. Set ``self.stimulative`` in ``__init__``
    and return ``self.stimulative_step(batch, batch_idx)`` from ``training_step``::

        class Model(StimulativeMixin, L.LightningModule):
            def __init__(self):
                super().__init__()
                self.model = stimulative.create_model("resnet20", num_classes=10, in_chans=1)
                self.stimulative = stimulative.Stimulative(self.model, kl_weight=1.0)

            def training_step(self, batch, batch_idx):
                return self.stimulative_step(batch, batch_idx)

    ``batch`` is ``(x, y, ...)``; for another layout pass ``(x, y)`` yourself."""

    stimulative: Stimulative

    def stimulative_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Eq. 1 for ``batch`` at the global step (logged: ``train/loss``, ``train/ce``,
        ``train/kl``); returns the loss."""
        st = getattr(self, "stimulative", None)
        if not isinstance(st, Stimulative):
            raise AttributeError(
                "StimulativeMixin: set self.stimulative = stimulative.Stimulative(self.model, ...) in __init__"
            )
        if st.train_step.low_memory or st.train_step.runner is not None:
            raise ValueError(
                "under Lightning, build Stimulative without low_memory (it runs its own backward passes) and do not "
                "call its ddp() (the strategy wraps the module)"
            )
        out = st(batch[0], batch[1], self.stimulative_step_index(batch_idx))
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/ce", out.ce)
        self.log("train/kl", out.kl)
        return out.loss

    def stimulative_step_index(self, batch_idx: int) -> int:
        """The global batch index (across epochs, restored on resume), which seeds the
        sub-networks drawn; ``batch_idx`` when no Trainer is attached. With gradient
        accumulation every micro-batch draws its own."""
        trainer = getattr(self, "_trainer", None)
        return batch_idx if trainer is None else trainer.fit_loop.epoch_loop.total_batch_idx


class SubnetMetrics(Callback):
    """At the end of every ``every_n_epochs``-th validation epoch, evaluate the full network
    and every sub-network (``subnets``, see :func:`stimulative.evaluate_subnets`) on the
    validation data under the BN protocol ``bn``, and log the top-1 statistics under
    ``prefix`` with ``sync_dist=True`` (under DDP: the mean over the ranks' shards).

    ``calibration``: training images for the protocols that re-estimate BN statistics; by
    default the last ``calibration_batches`` training batches seen (kept as references to the
    batches, no copy: memory of that many input batches)."""

    def __init__(
        self,
        bn: str = "subnet",
        subnets: str | SamplingSpace | Sequence[SubnetSpec | str] | None = None,
        calibration: Iterable | None = None,
        calibration_batches: int = 4,
        every_n_epochs: int = 1,
        prefix: str = "val/subnets/",
    ) -> None:
        self.bn, self.subnets, self.calibration = bn, subnets, calibration
        self.every_n_epochs, self.prefix = every_n_epochs, prefix
        self.recent: deque[torch.Tensor] = deque(maxlen=calibration_batches)
        self.last: SubnetSummary | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.calibration is None and self.bn != "running":
            self.recent.append(batch[0])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        calibration = self.calibration if self.calibration is not None else list(self.recent)
        if self.bn != "running" and not calibration:
            raise ValueError(
                f"SubnetMetrics(bn={self.bn!r}) re-estimates BN statistics on training images: no training batch was "
                "seen yet; pass calibration=..."
            )
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        batches = ((b[0], b[1]) for b in loader)
        self.last = evaluate_subnets(elastic_net_of(pl_module), batches, calibration, self.bn, self.subnets)
        pl_module.log_dict(self.last.metrics(self.prefix), sync_dist=True)


def elastic_net_of(module: torch.nn.Module) -> ElasticNet:
    """The ElasticNet a LightningModule trains: its ``stimulative.model``, else the first
    ElasticNet among its modules."""
    st = getattr(module, "stimulative", None)
    if isinstance(st, Stimulative):
        return st.model
    for m in module.modules():
        if isinstance(m, ElasticNet):
            return m
    raise ValueError(f"{type(module).__name__} holds no ElasticNet; make one with stimulative.create_model(model)")
