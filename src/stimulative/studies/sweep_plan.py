"""What a sweep invocation runs: the cells (of the built-in digits design, chosen under a
budget, or of a YAML grid), the seeds, and the options every run shares (model, data set,
device, ...). Plain data: ``plan.json`` records it, the launchers turn it into jobs."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from dataclasses import dataclass
from typing import Any

from ..training.config import TrainConfig
from . import digits_design as digits
from .grid import load_grid
from .sweep_job import SweepJob, run_dir

# options a run may change without changing what it computes: a cell planned again with other
# values of these still matches its finished runs
NOT_COMPARED = {"seed", "out", "device", "progress", "resume", "force", "data_root", "download", "workers", "log_every"}


@dataclass(frozen=True)
class Plan:
    cells: tuple  # digits_design.Cell or grid.GridCell
    seeds: tuple[int, ...]
    overrides: tuple[tuple[str, Any], ...]  # set in every run's configuration
    info: dict  # what plan.json records

    def config(self, cell: Any, seed: int, out: str) -> TrainConfig:
        return dataclasses.replace(cell.config(seed, out), **dict(self.overrides)).validate()

    def jobs(self, sweep_dir: str) -> list[SweepJob]:
        """One job per (cell, seed), cell by cell."""
        return [
            SweepJob(sweep_dir, cell, seed, self.config(cell, seed, run_dir(sweep_dir, cell, seed)))
            for cell in self.cells
            for seed in self.seeds
        ]

    def compared_settings(self, cell: Any) -> dict:
        """The cell's configuration, less what may change between invocations (cell.json)."""
        cfg = self.config(cell, self.seeds[0], "").to_dict()
        return {k: v for k, v in cfg.items() if k not in NOT_COMPARED}


def check_seeds(seeds: tuple[int, ...]) -> None:
    if len(seeds) < 2:
        raise ValueError("a sweep needs at least 2 seeds per cell for a confidence interval (3 or more advised)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: each seed once")


def restrict(cells: list, patterns: tuple[str, ...]) -> list:
    """The cells matching any pattern (``fnmatch`` on the cell id), with the CT cell of each
    of their groups (their paired baseline); all cells without patterns."""
    if not patterns:
        return cells
    chosen = {c.id for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)}
    if not chosen:
        examples = ", ".join(c.id for c in cells[:3])
        raise ValueError(f"--only {' '.join(patterns)}: no cell matches; cell ids look like {examples} (see --dry-run)")
    groups = {c.group for c in cells if c.id in chosen}
    return [c for c in cells if c.id in chosen or (c.mode == "ct" and c.group in groups)]


def builtin_plan(
    budget_minutes: float | None,
    seeds: tuple[int, ...] | None,
    design: str | None,
    only: tuple[str, ...],
    target: dict[str, Any],
) -> Plan:
    """The built-in design; ``target``: model, dataset, data_root, device and any extra
    training options for every run. The budget uses the cost model of resnet20 on the digits,
    so on another data set the whole design runs unless ``--only`` narrows it."""
    seeds = tuple(seeds) if seeds else (0, 1, 2)
    check_seeds(seeds)
    design = design or "ofat"
    on_digits = target.get("dataset", "digits") == "digits"
    if budget_minutes is None:
        budget_minutes = 30.0 if on_digits else 0.0
    if budget_minutes < 0:
        raise ValueError(f"--budget must not be negative, got {budget_minutes}")
    if budget_minutes and not on_digits:
        raise ValueError("--budget estimates time for the digits; on another data set narrow the design with --only")
    cells = digits.select_cells(restrict(digits.prioritised_cells(design), only), budget_minutes, len(seeds))
    estimate = sum(digits.estimate_seconds(c) for c in cells) * len(seeds) if on_digits else None
    info = {
        "design": design,
        "budget_minutes": budget_minutes,
        "only": list(only),
        "seeds": list(seeds),
        "model": target.get("model", "resnet20"),
        "dataset": target.get("dataset", "digits"),
        "estimated_seconds_quiet_2core": estimate,
        "cells": [
            dict(c.describe(), estimated_seconds_per_run=digits.estimate_seconds(c) if on_digits else None)
            for c in cells
        ],
    }
    return Plan(tuple(cells), seeds, tuple(target.items()), info)


def grid_plan(
    path: str,
    seeds: tuple[int, ...] | None,
    design: str | None,
    only: tuple[str, ...],
    shared: dict[str, Any],
    target: dict[str, Any],
) -> Plan:
    """The cells of the YAML grid at ``path``; ``shared``: dataset, data_root, model given on
    the command line (None: the grid's); ``target``: device and extra options for every run."""
    grid = load_grid(path, shared, design)
    seeds = tuple(seeds) if seeds else grid.seeds
    check_seeds(seeds)
    cells = restrict(list(grid.cells), only)
    info = {
        "grid": os.path.abspath(path),
        "grid_source": json.loads(json.dumps(grid.source, default=str)),  # YAML may hold dates
        "design": grid.design,
        "budget_minutes": None,
        "only": list(only),
        "seeds": list(seeds),
        "model": sorted({dict(c.settings).get("model", "resnet20") for c in cells}),
        "dataset": sorted({dict(c.settings).get("dataset", "digits") for c in cells}),
        "estimated_seconds_quiet_2core": None,
        "cells": [dict(c.describe(), estimated_seconds_per_run=None) for c in cells],
    }
    return Plan(tuple(cells), seeds, tuple(target.items()), info)
