"""A LightningModule made stimulative with StimulativeMixin, on the digits; shared by
test_lightning.py and the 2-process DDP script it starts (run as ``python lit_digits.py OUT``)."""

from __future__ import annotations

import json
import os
import sys

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

import stimulative
from stimulative.data import load_digits_data
from stimulative.integrations.lightning import StimulativeMixin, SubnetMetrics


class DigitsModel(StimulativeMixin, L.LightningModule):
    def __init__(self, kl_weight: float = 1.0, lr: float = 0.05) -> None:
        super().__init__()
        self.model = stimulative.create_model("resnet20", num_classes=10, in_chans=1)
        self.stimulative = stimulative.Stimulative(self.model, kl_weight=kl_weight)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        return self.stimulative_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/top1", (self.model(x).argmax(1) == y).float().mean() * 100, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loaders(batch_size: int = 64, shuffle: bool = True) -> tuple[DataLoader, DataLoader]:
    data = load_digits_data(seed=0)
    train = DataLoader(TensorDataset(*data.train.tensors), batch_size=batch_size, shuffle=shuffle)
    return train, DataLoader(TensorDataset(*data.test.tensors), batch_size=150)


def trainer(out: str, **kwargs) -> L.Trainer:
    options = dict(
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(out, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**(options | kwargs))


def ddp_main(out: str) -> None:
    """Two CPU processes with Lightning's ddp strategy (gloo); each rank writes its weights."""
    L.seed_everything(0)
    torch.set_num_threads(1)
    model = DigitsModel()
    train, test = loaders()
    t = trainer(out, strategy="ddp", devices=2, max_epochs=2, limit_train_batches=3, callbacks=[SubnetMetrics()])
    t.fit(model, train, test)
    rank = t.global_rank
    torch.save({k: v for k, v in model.state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))
    metrics = {k: float(v) for k, v in t.logged_metrics.items()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": t.world_size, "metrics": metrics}, f)


if __name__ == "__main__":
    ddp_main(sys.argv[1])
