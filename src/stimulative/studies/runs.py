"""One run of a study or sweep: read if finished, resumed if interrupted, else started."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

from ..training.config import TrainConfig
from ..training.loop import main as train
from ..training.run_dir import RunDir


def run_or_resume(cfg: TrainConfig, quiet: bool = False) -> dict:
    """The results of the run in ``cfg.out``: read back if it finished, continued from its
    last checkpoint if it was interrupted, else trained from the start (``quiet``: without
    its summary table, when a progress bar over many runs reports instead)."""
    run = RunDir(cfg.out)
    done = run.results()
    if done is not None:
        return done
    resume = run.latest_checkpoint() is not None
    cfg = dataclasses.replace(cfg, resume=resume, force=not resume and os.path.isdir(cfg.out)).validate()
    if not quiet:
        return train(cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        return train(cfg)
