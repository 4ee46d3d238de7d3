"""The data set of a run, as its configuration describes it."""

from __future__ import annotations

from ..data import DataSource, load_data
from ..transforms import AugmentOptions
from .config import TrainConfig


def load_run_data(cfg: TrainConfig, download: bool = False) -> DataSource:
    """The run's training, validation and test data (``download``: fetch CIFAR if missing)."""
    return load_data(
        cfg.dataset,
        cfg.data_root,
        cfg.seed,
        cfg.train_fraction,
        download,
        cfg.augment,
        cfg.image_size,
        resize=cfg.resize,
        skip_corrupt=cfg.skip_corrupt,
        workers=cfg.workers,
        augmentation=AugmentOptions.from_config(cfg),
        val_fraction=cfg.val_fraction,
    )
