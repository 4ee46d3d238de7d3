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
    out: str = RunDir.EVALUATION,
    device: str = "auto",
    progress: bool = True,
    split: str = "test",
) -> dict:
    """Evaluate the run's final weights again and write ``RUN/out``; ``split``: test, val, or
    train (the training images: Eq. 4 is stated for training losses)."""
    run = RunDir(run_dir).load(device)
    model, cfg = run.model, run.cfg
    cfg = dataclasses.replace(
        cfg,
        eval_bn=bn,
        progress=progress,
        eval_subnets=max_subnets or cfg.eval_subnets,
        eval_min_depths=cfg.eval_min_depths if min_depths is None else min_depths,
    )
    specs = None
    if subnets:
        specs = [parse_spec(s) for s in subnets]
        for s in specs:
            model.architecture.validate(s)
    if os.path.basename(out) != out or out in RunDir.OWN_FILES:
        raise ValueError(f"--out {out!r}: give a new file name inside the run folder")
    space = build_space(model.architecture, cfg.min_depths)
    results = finish(model, run.data, cfg, run.device, space, run.meta["train_seconds"], out, specs, split=split)
    print_summary(results)
    print(f"written {os.path.join(run_dir, out)}")
    return results
