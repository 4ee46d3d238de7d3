"""`stimulative reproduce`: the paper's study on the digits, end to end, resumable.

Every training run is a normal run folder under ``STUDY/runs``; a run with results is
skipped, a run with a checkpoint is resumed, so an interrupted study continues where it
stopped. Analyses are written to ``STUDY/analyses/*.json``, figures to ``STUDY/figures``,
and the report (with the claims table) to ``STUDY/report.md`` and ``report.html``."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..reporting.report import write_report
from ..training.config import TrainConfig
from .runs import run_or_resume
from .study import analyse_study


@dataclass(frozen=True)
class PlannedRun:
    name: str  # folder name without the seed
    seed: int
    options: tuple[tuple[str, object], ...]

    @property
    def folder(self) -> str:
        return f"{self.name}-s{self.seed}"


def plan(
    seeds: list[int],
    epochs: int,
    depths: tuple[str, ...] = ("resnet32", "resnet56"),
    extra: tuple[tuple[str, object], ...] = (),
) -> list[PlannedRun]:
    """The study's training runs. The full network trained alone is common training itself,
    so individual runs cover the shallower uniform-depth sub-networks only."""
    runs = []
    for seed in seeds:
        runs += [
            PlannedRun("ct-resnet20", seed, (("mode", "ct"), ("track_kl", True))),
            PlannedRun("st-resnet20", seed, (("mode", "st"), ("track_kl", True))),
            PlannedRun("individual-1,1,1", seed, (("mode", "individual"), ("subnet", "1,1,1"))),
            PlannedRun("individual-2,2,2", seed, (("mode", "individual"), ("subnet", "2,2,2"))),
            PlannedRun("st-stochastic-resnet20", seed, (("mode", "st"), ("sampler", "stochastic"))),
            PlannedRun("st-raw-resnet20", seed, (("mode", "st"), ("sampler", "raw"))),
            PlannedRun(
                "st-space8-resnet20", seed, (("mode", "st"), ("min_depths", "2,2,2"), ("eval_min_depths", "1,1,1"))
            ),
        ]
        for model in depths:
            runs += [
                PlannedRun(f"ct-{model}", seed, (("mode", "ct"), ("model", model))),
                PlannedRun(f"st-{model}", seed, (("mode", "st"), ("model", model))),
            ]
    return [dataclasses.replace(r, options=r.options + (("epochs", epochs),) + extra) for r in runs]


def run_planned(run: PlannedRun, study_dir: str, progress: bool) -> dict:
    out = os.path.join(study_dir, "runs", run.folder)
    return run_or_resume(TrainConfig(**dict(run.options), seed=run.seed, out=out, progress=progress))


def reproduce(
    study_dir: str = "study",
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 30,
    depths: tuple[str, ...] = ("resnet32", "resnet56"),
    progress: bool = True,
    extra: tuple[tuple[str, object], ...] = (),
) -> dict:
    """Run (or continue) the study; ``extra`` adds training options to every run."""
    os.makedirs(os.path.join(study_dir, "runs"), exist_ok=True)
    runs = plan(list(seeds), epochs, depths, extra)
    started = time.perf_counter()
    bar = tqdm(runs, desc="study", unit="run", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.folder)
        run_planned(run, study_dir, progress=False)
    bar.close()
    analyses = analyse_study(study_dir, list(seeds), depths, progress=progress)
    analyses["wall_seconds_this_invocation"] = time.perf_counter() - started
    path = write_report([study_dir], os.path.join(study_dir, "report.md"))
    print(f"report: {path} and {path[:-3]}.html")
    return analyses
