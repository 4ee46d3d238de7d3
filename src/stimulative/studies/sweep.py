"""`stimulative sweep`: when does stimulative training improve the full network? A resumable
grid of CT, ST configurations and stochastic depth, several seeds per cell: the built-in
design on the digits (the default), or any model and data set (``--model``, ``--dataset``,
``--data-root``), or a YAML grid of factors, levels, baselines and seeds (``--grid``,
:mod:`stimulative.studies.grid`).

The built-in design (issue 8): lambda (0.25, 0.5, 1, 2), T (1, 2, 4), epochs (30, 100, 200),
sub-networks per step (1, 3, 6), KL vs direction-only KL ("KL-"), the sandwich rule on/off,
and the three modes ct / st / stochastic-depth, on the full training split and a seeded,
stratified 10 % of it (:mod:`stimulative.studies.digits_design`). The whole factorial
(``--design full``) is days of CPU; the default ``--design ofat`` varies one factor at a time
around the default ST configuration (lambda 1, T 1, one sub-network, KL, no sandwich) and gives
stochastic depth three drop rates, in every (split, epochs) group beside CT.

``--budget MINUTES`` keeps the cells (each with all its seeds) that fit, in this order of
priority, estimated with a fixed cost model of a quiet 2-core CPU (resnet20 on the digits),
so the same command always selects the same cells whatever the machine's load:

1. the core cells (CT, default ST, default stochastic depth) at 30 epochs, 10 % then full split;
2. the core cells at 100 and 200 epochs on the 10 % split;
3. the variants (one factor changed) at 30 epochs on the 10 % split;
4. the core cells at 100 epochs on the full split;
5. the variants at 30 epochs on the full split;
6. the variants at 100 and 200 epochs on the 10 % split;
7. the core cells at 200 epochs on the full split;
8. the variants at 100 and 200 epochs on the full split.

The longest prefix that fits is kept (more time never drops a cell); a variant is kept only
with its group's CT cell (its paired baseline). Every run is an ordinary run folder
(``SWEEP/runs/<group>/<cell>/s<seed>``, SWEEP being ``runs/sweep`` by default, the cell's
description and settings in ``SWEEP/runs/<group>/<cell>/cell.json``): a finished one
(``results.json``) is skipped, an interrupted one resumes from its checkpoint. Runs train in
this process, a local process pool or a SLURM job array (:mod:`stimulative.studies.launchers`);
several launchers may work on one folder at once (:mod:`stimulative.studies.claims_lock`). Each
finished run appends a line to ``SWEEP/sweep.jsonl`` at once (each invocation's plan goes to
``plan.json`` and ``plans.jsonl``); ``SWEEP/evidence.json`` (statistics, see
:mod:`stimulative.analysis.evidence`) is written when the sweep starts and rewritten after each
finished run, so ``stimulative report SWEEP`` shows what has finished while it runs; the
figures and ``SWEEP/conclusion.md`` are written at the end.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from typing import Any

from tqdm.auto import tqdm

from ..analysis.evidence import DEFAULT_ST, analyse_cells  # noqa: F401 - DEFAULT_ST: part of this module's interface
from ..reporting.evidence_figures import evidence_figures
from ..reporting.evidence_text import cells_table_markdown, conclusion_markdown, differences_table_markdown
from ..runtime.files import append_record, read_json, read_json_or_none, write_json
from ..training.config import config_from_dict
from ..training.flops import training_flops
from .claims_lock import live_claims, sweep_lock
from .digits_design import (  # noqa: F401 - the built-in design, importable from here as before
    DROP_PATH_RATES,
    EPOCHS,
    FRACTIONS,
    KL_KINDS,
    LAMBDAS,
    SANDWICH,
    SUBNETS_PER_STEP,
    TEMPERATURES,
    Cell,
    cell_of,
    core_cells,
    ct_cell,
    estimate_seconds,
    prioritised_cells,
    sd_cell,
    select_cells,
    st_cell,
    variant_cells,
)
from .launchers import Launch, launch
from .sweep_job import LOG, log_run, logged_runs, run_dir  # noqa: F401 - run_dir: as before
from .sweep_plan import NOT_COMPARED, Plan, builtin_plan, grid_plan, restrict  # noqa: F401

CELL_FILE = "cell.json"
_logged_runs = logged_runs  # the name earlier versions used


def sweep(
    sweep_dir: str = "runs/sweep",
    budget_minutes: float | None = None,
    seeds: tuple[int, ...] | None = None,
    design: str | None = None,
    model: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    dry_run: bool = False,
    analyse_only: bool = False,
    extra: dict | None = None,
    only: tuple[str, ...] = (),
    dataset: str | None = None,
    data_root: str | None = None,
    grid: str | None = None,
    how: Launch | None = None,
) -> dict:
    """Run (or continue) the sweep, then write ``evidence.json``, the figures and
    ``conclusion.md``. Returns the evidence (or the plan with ``dry_run``). ``grid``: a YAML
    grid instead of the built-in design; ``model``, ``dataset``, ``data_root``: what every run
    trains on (None: the design's or the grid's); ``extra``: more training options for every run
    (e.g. a smaller evaluation in tests); ``only``: cell-id patterns (``fnmatch``, e.g.
    ``10pct-e30/st-*``) to restrict the design to, CT of their groups included; ``how``: the
    launcher (default: one run after the other in this process). Raises RuntimeError after the
    analysis if a run failed."""
    shared = {"model": model, "dataset": dataset, "data_root": data_root}
    target = {"device": device, **(extra or {})}
    if grid:
        if budget_minutes is not None:
            raise ValueError("--budget selects cells of the built-in design; a grid runs all its cells (see --only)")
        plan = grid_plan(grid, seeds, design, only, shared, target)
    else:
        plan = builtin_plan(budget_minutes, seeds, design, only, {**_given(shared), **target})
    if dry_run:
        return plan.info
    started = time.perf_counter()
    record_plan(sweep_dir, plan, analyse_only)
    runs = {} if analyse_only else run_plan(sweep_dir, plan, how or Launch(), progress)
    evidence = analyse(sweep_dir, figures=True)
    evidence["wall_seconds_this_invocation"] = time.perf_counter() - started
    with sweep_lock(sweep_dir):
        write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
    evidence["runs_this_invocation"] = runs
    failures = runs.get("failures", [])
    if failures:
        first = failures[0]
        raise RuntimeError(
            f"{len(failures)} run(s) failed, first {first['cell']} s{first['seed']}: {first['error']} (the others "
            "finished; run the same command again to retry the failed ones)"
        )
    return evidence


def _given(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def record_plan(sweep_dir: str, plan: Plan, analyse_only: bool = False) -> None:
    """``plan.json`` and a line of ``plans.jsonl``; before training, each cell's ``cell.json``
    (refusing a folder whose cells ran with other settings: their results would be mixed)."""
    os.makedirs(sweep_dir, exist_ok=True)
    with sweep_lock(sweep_dir):
        if not analyse_only:
            _write_cell_files(sweep_dir, plan)
        write_json(os.path.join(sweep_dir, "plan.json"), plan.info)
        append_record(
            os.path.join(sweep_dir, "plans.jsonl"),
            {  # every invocation's plan, in order
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "analyse_only": analyse_only,
                **{k: v for k, v in plan.info.items() if k not in ("cells", "grid_source")},
                "cells": [c["id"] for c in plan.info["cells"]],
            },
        )


def _settings_of_runs(folder: str) -> dict:
    """The settings the cell's existing runs were started with (its cell.json, or for a folder
    from before cell.json, a finished run's configuration); none if no run started."""
    seeds = [d for d in os.listdir(folder) if re.fullmatch(r"s\d+", d)] if os.path.isdir(folder) else []
    if not seeds:
        return {}
    saved = read_json_or_none(os.path.join(folder, CELL_FILE))
    if saved is not None:
        return saved["config"]
    for d in seeds:
        results = read_json_or_none(os.path.join(folder, d, "results.json"))
        if results is not None:
            return {k: v for k, v in results["config"].items() if k not in NOT_COMPARED}
    return {}


def _write_cell_files(sweep_dir: str, plan: Plan) -> None:
    changed, pending = [], []
    for cell in plan.cells:
        folder = os.path.join(sweep_dir, "runs", cell.group, cell.name)
        path = os.path.join(folder, CELL_FILE)
        wanted = {"cell": cell.describe(), "config": plan.compared_settings(cell)}
        saved = read_json_or_none(path) or {}
        old = _settings_of_runs(folder)
        diff = sorted(k for k in old.keys() & wanted["config"].keys() if old[k] != wanted["config"][k])
        if diff:
            new = wanted["config"]
            changed.append(f"{cell.id} ({', '.join(f'{k} {old[k]!r} -> {new[k]!r}' for k in diff[:3])})")
        elif saved != wanted:
            pending.append((path, wanted))
    if changed:
        raise ValueError(
            f"{sweep_dir} holds runs of {len(changed)} of these cells with other settings, e.g. {changed[0]}: sweep "
            "into another --out"
        )
    for path, wanted in pending:
        write_json(path, wanted)


def run_plan(sweep_dir: str, plan: Plan, how: Launch, progress: bool = True) -> dict:
    """Train every run of the plan not finished yet, with a progress bar over runs (its time
    left from the mean duration of the finished ones); evidence.json after each one."""
    jobs = plan.jobs(sweep_dir)
    todo = [j for j in jobs if not j.is_done()]
    _log_finished(sweep_dir, [j for j in jobs if j.is_done()])
    analyse(sweep_dir, figures=False)  # evidence.json from the start: `stimulative report` works at once
    counts: Counter = Counter()
    failures: list[dict] = []
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress)

    def on_done(report: dict) -> None:
        counts[report["status"]] += 1
        if report["status"] == "failed":
            failures.append(report)
        bar.update(1)
        held = f", {counts['held elsewhere']} held by another launcher" if counts["held elsewhere"] else ""
        bar.set_postfix_str(f"{report['cell']} s{report['seed']} {report['status']}{held}")
        if report["status"] == "trained":
            analyse(sweep_dir, figures=False)

    try:
        launch(todo, how, on_done)
    finally:
        bar.close()
    counts["finished before"] += len(jobs) - len(todo)
    return {"planned": len(jobs), "counts": dict(counts), "failures": failures}


def _log_finished(sweep_dir: str, jobs: list) -> None:
    """Log the finished runs missing from ``sweep.jsonl`` (a crash between a run's results and
    its record)."""
    logged = logged_runs(os.path.join(sweep_dir, LOG))
    for job in jobs:
        if (job.cell.id, job.seed) not in logged:
            log_run(sweep_dir, job.cell, job.seed, read_json(os.path.join(job.config.out, "results.json")), None)


# ---------------------------------------------------------------------------------------
# analysis


def finished_cells(sweep_dir: str) -> list[tuple[dict, list[int]]]:
    """Every cell with at least one finished run in the sweep folder (whatever plan made it):
    its description (``cell.json``, or for a built-in cell without one, read back from its
    runs' saved configuration) and its finished seeds."""
    root = os.path.join(sweep_dir, "runs")
    found = []
    for group in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for name in sorted(os.listdir(os.path.join(root, group))):
            folder = os.path.join(root, group, name)
            if not os.path.isdir(folder):
                continue
            seeds = sorted(
                int(d[1:])
                for d in os.listdir(folder)
                if re.fullmatch(r"s\d+", d) and os.path.exists(os.path.join(folder, d, "results.json"))
            )
            if not seeds:
                continue
            saved = read_json_or_none(os.path.join(folder, CELL_FILE))
            if saved is None:  # a built-in cell run before cell.json existed (docs/evidence/)
                cfg = read_json(os.path.join(folder, f"s{seeds[0]}", "results.json"))["config"]
                cell = cell_of(config_from_dict(cfg))
                saved = {"cell": cell.describe()} if cell.id == f"{group}/{name}" else None  # else not a sweep run
            if saved is not None:
                found.append((saved["cell"], seeds))
    return found


def _cell_evidence(sweep_dir: str, desc: dict, seeds: list[int], flops: dict) -> dict:
    """A finished cell as :func:`stimulative.analysis.evidence.analyse_cells` reads it."""
    folder = os.path.join(sweep_dir, "runs", desc["group"], desc["name"])
    runs = []
    for seed in seeds:
        dest = os.path.join(folder, f"s{seed}", "destruction.json")
        runs.append(
            {
                "seed": seed,
                "results": read_json(os.path.join(folder, f"s{seed}", "results.json")),
                "destruction": read_json_or_none(dest),
            }
        )
    config = runs[0]["results"]["config"]
    if desc["id"] not in flops:
        # ST's count depends on the seed (its sampled sub-networks): counted with seed 0 whichever
        # run finished first, so every launcher, whatever its order, writes the same cost
        flops[desc["id"]] = {**training_flops({**config, "seed": 0}), "seed": 0}
        write_json(os.path.join(sweep_dir, "flops.json"), flops)
    return {**desc, "model": config["model"], "dataset": config["dataset"], "runs": runs, "flops": flops[desc["id"]]}


def _progress(sweep_dir: str, plan: dict | None) -> dict:
    """How far the latest plan is: its runs, those finished, those training now."""
    runs = [(c, s) for c in (plan or {}).get("cells", []) for s in (plan or {}).get("seeds", [])]
    done = sum(os.path.exists(os.path.join(sweep_dir, "runs", c["id"], f"s{s}", "results.json")) for c, s in runs)
    return {
        "planned_runs": len(runs),
        "planned_runs_finished": done,
        "training_now": live_claims(sweep_dir),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def analyse(sweep_dir: str, figures: bool = True) -> dict:
    """Statistics of every finished cell of the sweep folder into ``evidence.json`` (with the
    progress of the latest plan); with ``figures``, also the figures and ``conclusion.md``.
    Under the folder lock: several launchers may analyse one folder."""
    with sweep_lock(sweep_dir):
        flops = read_json_or_none(os.path.join(sweep_dir, "flops.json")) or {}
        cells = [_cell_evidence(sweep_dir, desc, seeds, flops) for desc, seeds in finished_cells(sweep_dir)]
        evidence = analyse_cells(cells)
        evidence["plan"] = read_json_or_none(os.path.join(sweep_dir, "plan.json"))
        evidence["progress"] = _progress(sweep_dir, evidence["plan"])
        write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
        if figures and evidence["cells"]:
            _write_figures_and_conclusion(sweep_dir, evidence)
    return evidence


def _write_figures_and_conclusion(sweep_dir: str, evidence: dict) -> None:
    evidence["figures"] = [
        os.path.relpath(p, sweep_dir) for p in evidence_figures(evidence, os.path.join(sweep_dir, "figures"))
    ]
    write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
    with open(os.path.join(sweep_dir, "conclusion.md"), "w", encoding="utf-8") as fh:
        fh.write("# Evidence: when does ST improve the full network?\n\n" + conclusion_markdown(evidence))
        fh.write("\n## Default configurations\n\n" + cells_table_markdown(evidence))
        fh.write("\n## Every cell minus CT, full network\n\n" + differences_table_markdown(evidence))
        fh.write(
            "\n## Every cell minus CT, worst sub-network\n\n" + differences_table_markdown(evidence, metric="sub_worst")
        )
        fh.write("\n## All cells\n\n" + cells_table_markdown(evidence, defaults_only=False))


def print_plan(plan: dict) -> None:
    runs = len(plan["cells"]) * len(plan["seeds"])
    where = f"grid {plan['grid']}" if plan.get("grid") else f"built-in design {plan['design']}"
    budget = f", budget {plan['budget_minutes']:g} min" if plan.get("budget_minutes") else ""
    estimate = plan.get("estimated_seconds_quiet_2core")
    timing = f", estimated {estimate / 60:.1f} min on a quiet 2-core CPU" if estimate is not None else ""
    print(f"{where}{budget}, seeds {plan['seeds']}: {len(plan['cells'])} cells, {runs} runs{timing}")
    for c in plan["cells"]:
        per_run = c.get("estimated_seconds_per_run")
        timing = f" ~{per_run:.0f} s per run" if per_run is not None else ""
        print(f"  {c['id']:<40} {c['label']:<32}{timing}".rstrip())
