"""The input a deployed network expects, written into an export's model.json so the network
can be fed without the library: channels, size, value scale, mean and std, in the order the
run's data source applies them (read from data.py's constants; digits' standardisation is
recomputed from the same training images the run used)."""

from __future__ import annotations

import numpy as np

from ..data import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, hold_out, stratified_fraction
from ..training.config import TrainConfig


def preprocessing(cfg: TrainConfig, in_chans: int, image_size: int) -> dict:
    """``{"channels", "size", "steps", "mean", "std", ...}`` for the run's data set."""
    common = {"channels": in_chans, "size": [image_size, image_size], "layout": "NCHW, float32"}
    if cfg.dataset in ("cifar10", "cifar100"):
        resize = [f"resize to {cfg.resize}"] if cfg.resize and cfg.resize != 32 else []
        steps = [*resize, "RGB pixels scaled to [0, 1]", "(x - mean) / std per channel"]
        return {**common, "steps": steps, "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}
    if cfg.dataset == "imagefolder":
        steps = [
            f"resize the shorter side to {round(cfg.image_size / 0.875)}",
            f"center crop {cfg.image_size}",
            "RGB pixels scaled to [0, 1]",
            "(x - mean) / std per channel",
        ]
        return {**common, "steps": steps, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if cfg.dataset == "digits":
        mean, std = _digits_standardisation(cfg)
        steps = ["8x8 grey pixels of scikit-learn's digits (0..16) divided by 16", "(x - mean) / std"]
        if cfg.resize and cfg.resize != 8:
            steps.append(f"bilinear resize to {cfg.resize}x{cfg.resize}")
        return {**common, "steps": steps, "mean": [mean], "std": [std]}
    return {**common, "steps": [f"as the run's {cfg.dataset} data"], "mean": None, "std": None}


def _digits_standardisation(cfg: TrainConfig) -> tuple[float, float]:
    """The mean and std data.py standardised the digits with: those of the run's training
    images (fixed 75/25 split, validation held out, the seeded fraction)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    x_tr, _, y_tr, _ = train_test_split(x, digits.target, test_size=0.25, stratify=digits.target, random_state=0)
    rest, _ = hold_out(y_tr, cfg.val_fraction)
    x_tr, y_tr = x_tr[rest], y_tr[rest]
    keep = stratified_fraction(y_tr, cfg.train_fraction, cfg.seed)
    return float(x_tr[keep].mean()), float(x_tr[keep].std())
