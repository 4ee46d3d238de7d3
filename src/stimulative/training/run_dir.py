"""The run folder: its layout (one name per file), checks before anything is written, and
loading a finished run back (model with its final weights, configuration, data)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

import torch
import yaml

from ..data import DataSource
from ..runtime.device import resolve_device
from ..runtime.files import read_json_or_none, write_text
from . import checkpoint as ckpt
from .config import TrainConfig, config_from_dict
from .model_setup import build_model
from .run_data import load_run_data

# config fields that may change between a run and its resumption
RUNTIME_FIELDS = {"device", "workers", "progress", "log_every", "resume", "force", "out", "checkpoint_every"}
RUNTIME_FIELDS |= {"eval_batch_size", "channels_last", "compile", "backward"}  # speed or memory, not what is computed
# like the number of processes, how BN statistics are split may change on resume (a run
# started on N GPUs without --ghost-batches keeps its BN semantics on one with --ghost-batches N)
RUNTIME_FIELDS |= {"ghost_batches", "sync_bn"}


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, a run folder in the way, ...)."""


@dataclass
class LoadedRun:
    """A finished run, ready to evaluate: its model on ``device`` with the final weights."""

    model: Any  # ElasticNet
    cfg: TrainConfig
    data: DataSource
    device: torch.device
    meta: dict

    def __iter__(self):  # model, cfg, data, device, meta = run_dir.load()
        return iter((self.model, self.cfg, self.data, self.device, self.meta))


class RunDir:
    """A run folder written by ``stimulative train`` and the files the other commands add."""

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint"
    RESULTS = "results.json"
    RESULTS_BEFORE = "results_before.json"  # fine-tuning: loafing before training
    KL_TRACKING = "kl_tracking.jsonl"
    TENSORBOARD = "tb"
    BEST_WEIGHTS = "best.safetensors"  # the weights of the epoch with the best validation top-1
    DESTRUCTION = "destruction.json"
    EVALUATION = "evaluation.json"
    PARETO = "pareto.json"
    EXPORT = "export"
    FIGURES = "figures"
    OWN_FILES = (CONFIG, METRICS, RESULTS, RESULTS_BEFORE, KL_TRACKING)  # written by training only

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self) -> str:
        return self.file(self.CHECKPOINT)

    def latest_checkpoint(self) -> str | None:
        """The newest complete checkpoint folder (the previous one if a save was cut short)."""
        return ckpt.latest_checkpoint(self.checkpoint_dir)

    def holds_run(self) -> bool:
        return os.path.exists(self.file(self.CONFIG)) or self.latest_checkpoint() is not None

    def results(self) -> dict | None:
        """results.json, or None if the run has not finished."""
        return read_json_or_none(self.file(self.RESULTS))

    def saved_config(self) -> TrainConfig:
        """The configuration the run was started with: its config.yaml, else its checkpoint's."""
        path = self.file(self.CONFIG)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
            if not isinstance(data, dict):
                raise ValueError("not a mapping of option: value")
        except (OSError, ValueError, yaml.YAMLError) as e:
            found = self.latest_checkpoint()
            if found is None:
                reason = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
                raise TrainingError(
                    f"--resume: cannot read {path!r} ({reason}) and the run has no checkpoint"
                ) from None
            data = ckpt.load_meta(found)["config"]
        try:
            return config_from_dict(data).validate()
        except (TypeError, ValueError) as e:
            raise TrainingError(
                f"--resume: the saved configuration of {self.path!r} is invalid: {str(e).splitlines()[0]}"
            ) from None

    def resolve(self, cfg: TrainConfig) -> TrainConfig:
        """Check the folder without writing anything: refuse to clobber another run, and on
        --resume return the saved configuration (flags may only change runtime options)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise TrainingError(f"--out {self.path!r} is a file, not a folder")
        holds_run = self.holds_run()
        if cfg.resume:
            if not holds_run:
                raise TrainingError(f"--resume: {self.path!r} holds no run to continue")
            return self._resumed_config(cfg)
        if holds_run or (os.path.isdir(self.path) and os.listdir(self.path)):
            if not cfg.force:
                raise TrainingError(
                    f"{self.path!r} already holds files; pass --resume to continue it, --force to start over, or "
                    "another --out"
                )
            if not holds_run:
                raise TrainingError(
                    f"--force: {self.path!r} holds files but no run (no config.yaml, no checkpoint); refusing to "
                    "delete them"
                )
        return cfg

    def _resumed_config(self, cfg: TrainConfig) -> TrainConfig:
        saved = self.saved_config()
        defaults = TrainConfig()
        for name, value in cfg.to_dict().items():
            if name not in RUNTIME_FIELDS and getattr(saved, name) != value and value != getattr(defaults, name):
                raise TrainingError(
                    f"--resume: {self.path!r} was started with --{name.replace('_', '-')} {getattr(saved, name)!r}, "
                    f"not {value!r}"
                )
        # runtime options given on this command line win; the others keep the run's own
        # (a bare `--out RUN --resume` continues exactly as the run was started)
        for name in RUNTIME_FIELDS:
            if name in ("resume", "force", "out") or getattr(cfg, name) != getattr(defaults, name):
                setattr(saved, name, getattr(cfg, name))
        return saved

    def create(self, cfg: TrainConfig) -> None:
        """Create the folder (emptied first with --force) and write config.yaml atomically.
        Called once every input has been checked, so bad input never touches the folder."""
        if cfg.resume:
            return
        if cfg.force and self.holds_run():
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)
        path = self.file(self.CONFIG)
        write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def load(self, device: str = "auto") -> LoadedRun:
        """The run's model with its final weights, its configuration and its data source."""
        found = self.latest_checkpoint()
        if found is None:
            raise ckpt.CheckpointError(
                f"{self.path!r} has no checkpoint; is it a run folder written by `stimulative train`?"
            )
        meta = ckpt.load_meta(found)
        cfg = config_from_dict(meta["config"])
        cfg.out, cfg.device = self.path, device
        dev = resolve_device(device)
        data = load_run_data(cfg)
        # the weights come from the checkpoint: no pretrained file is read again
        ckpt.check_compatible(found, meta, cfg.model, data.num_classes, data.in_chans)
        model = build_model(cfg, meta["num_classes"], meta["in_chans"], data.image_size, pretrained=False)
        ckpt.load_weights(found, model)
        return LoadedRun(model.to(dev), cfg, data, dev, meta)
