"""Re-evaluate a finished run from its checkpoint (other sub-networks, other BN mode)."""

from __future__ import annotations

import dataclasses
import os

from ..core.sampling import parse_spec
from ..core.spaces import build_space
from ..training.results import finish, print_summary
from ..training.run_dir import RunDir


def reevaluate(
    run_dir: str,
    subnets: list[str] | None = None,
    bn: str = "all",
    max_subnets: int | None = None,
    min_depths: str | None = None,
    out: str = "",
    device: str = "auto",
    progress: bool = True,
    seed: int | None = None,
    split: str = "test",
) -> dict:
    """Evaluate the run's checkpoint again and write ``out`` (a path; default
    ``RUN_DIR/evaluation.json``); ``seed`` (default: the run's) draws the sample of sub-networks
    and the calibration images; ``split``: test, val, or train (the training images: Eq. 4 is
    stated for training losses)."""
    out = os.path.abspath(out or os.path.join(run_dir, RunDir.EVALUATION))
    if os.path.dirname(out) == os.path.abspath(run_dir) and os.path.basename(out) in RunDir.OWN_FILES:
        raise ValueError(f"--out {out!r}: training's own file; give another folder")
    run = RunDir(run_dir).load(device)
    model, cfg = run.model, run.cfg
    cfg = dataclasses.replace(
        cfg,
        eval_bn=bn,
        progress=progress,
        eval_subnets=max_subnets or cfg.eval_subnets,
        eval_min_depths=cfg.eval_min_depths if min_depths is None else min_depths,
        seed=cfg.seed if seed is None else seed,
    )
    specs = None
    if subnets:
        specs = [parse_spec(s) for s in subnets]
        for s in specs:
            model.architecture.validate(s)
    space = build_space(model.architecture, cfg.min_depths)
    results = finish(model, run.data, cfg, run.device, space, run.meta["train_seconds"], out, specs, split=split)
    print_summary(results)
    print(f"written {out}")
    return results
