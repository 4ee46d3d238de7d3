"""Re-evaluate a finished run from its checkpoint (other sub-networks, other BN mode)."""

from __future__ import annotations

import dataclasses
import os

from . import checkpoint as ckpt
from .config import config_from_dict
from .data import load_data
from .finetune import build_model
from .sampling import parse_spec
from .train import build_space, finish, print_summary, resolve_device


def load_run(run_dir: str, device: str = "auto"):
    """The model of a run folder with its final weights, its config and its data source."""
    found = ckpt.latest_checkpoint(os.path.join(run_dir, "checkpoint"))
    if found is None:
        raise ckpt.CheckpointError(f"{run_dir!r} has no checkpoint; is it a run folder written by `stimulative train`?")
    meta = ckpt.load_meta(found)
    cfg = config_from_dict(meta["config"])
    cfg.out, cfg.device = run_dir, device
    dev = resolve_device(device)
    data = load_data(cfg.dataset, cfg.data_root, cfg.seed, cfg.train_fraction, False, cfg.augment, cfg.image_size,
                     resize=cfg.resize, skip_corrupt=cfg.skip_corrupt, workers=cfg.workers)
    # the weights come from the checkpoint: no pretrained file is read again
    ckpt.check_compatible(found, meta, cfg.model, data.num_classes, data.in_chans)
    model = build_model(cfg, meta["num_classes"], meta["in_chans"], data.image_size, pretrained=False)
    ckpt.load_weights(found, model)
    return model.to(dev), cfg, data, dev, meta


def reevaluate(
    run_dir: str, subnets: list[str] | None = None, bn: str = "both", max_subnets: int | None = None,
    min_depths: str | None = None, out: str = "evaluation.json", device: str = "auto", progress: bool = True,
) -> dict:
    model, cfg, data, dev, meta = load_run(run_dir, device)
    cfg = dataclasses.replace(cfg, eval_bn=bn, progress=progress, eval_subnets=max_subnets or cfg.eval_subnets, eval_min_depths=cfg.eval_min_depths if min_depths is None else min_depths)
    specs = None
    if subnets:
        specs = [parse_spec(s) for s in subnets]
        for s in specs:
            model.architecture.validate(s)
    if os.path.basename(out) != out or out in ("results.json", "config.yaml", "metrics.jsonl"):
        raise ValueError(f"--out {out!r}: give a new file name inside the run folder")
    results = finish(model, data, cfg, dev, build_space(model.architecture, cfg.min_depths), meta["train_seconds"], out, specs)
    print_summary(results)
    print(f"written {os.path.join(run_dir, out)}")
    return results
