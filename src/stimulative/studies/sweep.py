"""`stimulative sweep`: when does stimulative training improve the full network? A resumable
grid of CT, ST configurations and stochastic depth on the digits, several seeds per cell.

The grid (issue 8): lambda (0.25, 0.5, 1, 2), T (1, 2, 4), epochs (30, 100, 200),
sub-networks per step (1, 3, 6), KL vs direction-only KL ("KL-"), the sandwich rule on/off,
and the three modes ct / st / stochastic-depth, on the full training split and a seeded,
stratified 10 % of it. The whole factorial (``--design full``) is days of CPU; the default
``--design ofat`` varies one factor at a time around the default ST configuration
(lambda 1, T 1, one sub-network, KL, no sandwich) and gives stochastic depth three drop
rates, in every (split, epochs) group beside CT.

``--budget MINUTES`` keeps the cells (each with all its seeds) that fit, in this order of
priority, estimated with a fixed cost model of a quiet 2-core CPU (:func:`estimate_seconds`),
so the same command always selects the same cells whatever the machine's load:

1. the core cells (CT, default ST, default stochastic depth) at 30 epochs, 10 % then full split;
2. the core cells at 100 and 200 epochs on the 10 % split;
3. the variants (one factor changed) at 30 epochs on the 10 % split;
4. the core cells at 100 epochs on the full split;
5. the variants at 30 epochs on the full split;
6. the variants at 100 and 200 epochs on the 10 % split;
7. the core cells at 200 epochs on the full split;
8. the variants at 100 and 200 epochs on the full split.

A cell that does not fit is left out and the next ones are still tried; a variant is kept only
with its group's CT cell (its paired baseline). Every run is an ordinary run folder
(``SWEEP/runs/<split>-e<epochs>/<cell>/s<seed>``, SWEEP being ``runs/sweep`` by default): a
finished one (``results.json``) is skipped, an interrupted one resumes from its checkpoint.
Each finished run appends a line to
``SWEEP/sweep.jsonl`` at once (each invocation's plan goes to ``plan.json`` and
``plans.jsonl``); ``SWEEP/evidence.json`` (statistics, see
:mod:`stimulative.analysis.evidence`) is rewritten after each finished cell, and the figures
and ``SWEEP/conclusion.md`` at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from ..analysis.evidence import DEFAULT_ST
from ..runtime.files import append_record, read_json, read_records, write_json
from ..tools.destruction import cached_destruction
from ..training.config import TrainConfig, config_from_dict
from ..training.flops import training_flops
from .runs import run_or_resume

LAMBDAS = (0.25, 0.5, 1.0, 2.0)
TEMPERATURES = (1.0, 2.0, 4.0)
EPOCHS = (30, 100, 200)
SUBNETS_PER_STEP = (1, 3, 6)
KL_KINDS = ("kl", "kl-direction")
SANDWICH = (False, True)
DROP_PATH_RATES = (0.5, 0.1, 0.2)  # the first is the default (Huang et al.'s p_L = 0.5)
FRACTIONS = (0.1, 1.0)  # training split: a seeded, stratified 10 %, and all of it
DESIGNS = ("ofat", "full")

# the cost model of a quiet 2-core CPU (resnet20, 8x8 digits, batch 64), measured on this
# project's machine: a CT step, each sub-network's extra share, per-epoch and per-run overheads
CT_STEP_SECONDS = 0.021
SUBNET_STEP_SHARE = 0.4  # an ST step with one sub-network costs 1.4 CT steps
SANDWICH_STEP_SHARE = 0.25  # the shallowest sub-network is short (it shares only the stem)
DROP_PATH_STEP_SHARE = 0.05
EPOCH_SECONDS = 0.05  # per-epoch test accuracy and checkpoint
RUN_SECONDS = 5.0  # data, model, final evaluation of 27 sub-networks in two BN modes
DESTRUCTION_SECONDS = 6.0  # destruction analysis of a core cell's run, both BN modes


@dataclass(frozen=True)
class Cell:
    """One configuration of the grid; run once per seed."""

    fraction: float
    epochs: int
    mode: str  # ct, st or stochastic-depth
    options: tuple[tuple[str, object], ...] = ()
    core: bool = False  # CT, default ST or default stochastic depth: also gets a destruction analysis

    @property
    def split(self) -> str:
        return "full" if self.fraction == 1.0 else f"{round(self.fraction * 100):g}pct"

    @property
    def group(self) -> str:
        return f"{self.split}-e{self.epochs}"

    @property
    def name(self) -> str:
        o = dict(self.options)
        if self.mode == "ct":
            return "ct"
        if self.mode == "stochastic-depth":
            return f"sd-p{o['drop_path_rate']:g}"
        kl = "kl" if o["kl"] == "kl" else "kldir"
        return f"st-l{o['kl_weight']:g}-t{o['temperature']:g}-n{o['subnets_per_step']}-{kl}" + (
            "-sandwich" if o["sandwich"] else ""
        )

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    @property
    def label(self) -> str:
        """Human-readable, for tables and figures."""
        o = dict(self.options)
        if self.mode == "ct":
            return "CT"
        if self.mode == "stochastic-depth":
            return f"SD rate {o['drop_path_rate']:g}"
        kl = "KL" if o["kl"] == "kl" else "KL-"
        text = f"ST λ={o['kl_weight']:g} T={o['temperature']:g} n={o['subnets_per_step']} {kl}"
        return text + (" +sandwich" if o["sandwich"] else "")

    @property
    def is_default(self) -> bool:
        o = dict(self.options)
        if self.mode == "st":
            return o == DEFAULT_ST
        if self.mode == "stochastic-depth":
            return o["drop_path_rate"] == DROP_PATH_RATES[0]
        return True

    def config(self, seed: int, out: str, model: str = "resnet20") -> TrainConfig:
        return TrainConfig(
            mode=self.mode,
            model=model,
            dataset="digits",
            train_fraction=self.fraction,
            epochs=self.epochs,
            seed=seed,
            out=out,
            progress=False,
            **dict(self.options),
        )

    def describe(self) -> dict:
        return {
            "id": self.id,
            "group": self.group,
            "split": self.split,
            "fraction": self.fraction,
            "epochs": self.epochs,
            "mode": self.mode,
            "name": self.name,
            "label": self.label,
            "options": dict(self.options),
            "core": self.core,
            "default": self.is_default,
        }


def ct_cell(fraction: float, epochs: int) -> Cell:
    return Cell(fraction, epochs, "ct", core=True)


def st_cell(fraction: float, epochs: int, core: bool = False, **changes) -> Cell:
    options = {**DEFAULT_ST, **changes}
    return Cell(fraction, epochs, "st", tuple(options.items()), core=core)


def sd_cell(fraction: float, epochs: int, rate: float, core: bool = False) -> Cell:
    return Cell(fraction, epochs, "stochastic-depth", (("drop_path_rate", rate),), core=core)


def core_cells(fraction: float, epochs: int) -> list[Cell]:
    return [
        ct_cell(fraction, epochs),
        st_cell(fraction, epochs, core=True),
        sd_cell(fraction, epochs, DROP_PATH_RATES[0], core=True),
    ]


def variant_cells(fraction: float, epochs: int, design: str = "ofat") -> list[Cell]:
    """The ST and stochastic-depth cells of a group besides the core ones."""
    out: list[Cell] = []
    if design == "ofat":
        out += [st_cell(fraction, epochs, kl_weight=v) for v in LAMBDAS if v != DEFAULT_ST["kl_weight"]]
        out += [st_cell(fraction, epochs, temperature=v) for v in TEMPERATURES if v != DEFAULT_ST["temperature"]]
        out += [
            st_cell(fraction, epochs, subnets_per_step=v)
            for v in SUBNETS_PER_STEP
            if v != DEFAULT_ST["subnets_per_step"]
        ]
        out += [st_cell(fraction, epochs, kl="kl-direction"), st_cell(fraction, epochs, sandwich=True)]
    elif design == "full":
        for lam in LAMBDAS:
            for t in TEMPERATURES:
                for n in SUBNETS_PER_STEP:
                    for kl in KL_KINDS:
                        for sw in SANDWICH:
                            cell = st_cell(
                                fraction, epochs, kl_weight=lam, temperature=t, subnets_per_step=n, kl=kl, sandwich=sw
                            )
                            if not cell.is_default:
                                out.append(cell)
    else:
        raise ValueError(f"unknown design {design!r}; choose from {', '.join(DESIGNS)}")
    out += [sd_cell(fraction, epochs, r) for r in DROP_PATH_RATES[1:]]
    return out


def prioritised_cells(design: str = "ofat") -> list[Cell]:
    """Every cell of the design, in the budget's order of priority (module docstring)."""
    cheap, full = FRACTIONS
    short, mid, long = EPOCHS
    tiers = [
        core_cells(cheap, short) + core_cells(full, short),
        core_cells(cheap, mid) + core_cells(cheap, long),
        variant_cells(cheap, short, design),
        core_cells(full, mid),
        variant_cells(full, short, design),
        variant_cells(cheap, mid, design) + variant_cells(cheap, long, design),
        core_cells(full, long),
        variant_cells(full, mid, design) + variant_cells(full, long, design),
    ]
    return [c for tier in tiers for c in tier]


DIGITS_TRAIN_IMAGES = 1347  # the fixed 75 % training split of scikit-learn's 1,797 digits


def steps_of(cell: Cell, batch_size: int = 64) -> int:
    n = max(10, round(cell.fraction * DIGITS_TRAIN_IMAGES))  # stratified_fraction keeps >= 1 per class
    return cell.epochs * (n // batch_size)


def estimate_seconds(cell: Cell) -> float:
    """Seconds of one run of ``cell`` (with its destruction analysis, for a core cell) on a
    quiet 2-core CPU, by the fixed cost model above."""
    o = dict(cell.options)
    share = 1.0
    if cell.mode == "st":
        share += SUBNET_STEP_SHARE * o["subnets_per_step"] + (SANDWICH_STEP_SHARE if o["sandwich"] else 0.0)
    elif cell.mode == "stochastic-depth":
        share += DROP_PATH_STEP_SHARE
    seconds = steps_of(cell) * CT_STEP_SECONDS * share + cell.epochs * EPOCH_SECONDS + RUN_SECONDS
    return seconds + (DESTRUCTION_SECONDS if cell.core else 0.0)


def select_cells(cells: list[Cell], budget_minutes: float, n_seeds: int) -> list[Cell]:
    """The cells, in order, whose runs (``n_seeds`` each) fit in the budget (0: all). A cell
    that does not fit is skipped and later ones are still tried; a cell whose group has no CT
    cell selected is dropped (it would have no paired baseline)."""
    if budget_minutes <= 0:
        return list(cells)
    left = budget_minutes * 60.0
    chosen: list[Cell] = []
    with_ct: set[str] = set()
    for cell in cells:
        cost = estimate_seconds(cell) * n_seeds
        if cell.mode != "ct" and cell.group not in with_ct:
            continue
        if cost <= left:
            chosen.append(cell)
            left -= cost
            if cell.mode == "ct":
                with_ct.add(cell.group)
    return chosen


def restrict(cells: list[Cell], patterns: tuple[str, ...]) -> list[Cell]:
    """The cells matching any pattern (``fnmatch`` on the cell id), with the CT cell of each
    of their groups (their paired baseline); all cells without patterns."""
    if not patterns:
        return cells
    import fnmatch

    chosen = {c.id for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)}
    if not chosen:
        raise ValueError(
            f"--only {' '.join(patterns)}: no cell matches; cell ids look like 10pct-e30/ct, "
            "full-e100/st-l1-t1-n1-kl, 10pct-e30/sd-p0.5 (see --dry-run)"
        )
    groups = {c.split("/")[0] for c in chosen}
    return [c for c in cells if c.id in chosen or (c.mode == "ct" and c.group in groups)]


# ---------------------------------------------------------------------------------------
# running


def run_dir(sweep_dir: str, cell: Cell, seed: int) -> str:
    return os.path.join(sweep_dir, "runs", cell.group, cell.name, f"s{seed}")


def run_one(
    sweep_dir: str, cell: Cell, seed: int, model: str = "resnet20", device: str = "cpu", extra: dict | None = None
) -> dict:
    """Train (or resume, or skip) one run of ``cell``; a core cell's run also gets its
    destruction analysis (``destruction.json`` in the run folder). Returns the results."""
    out = run_dir(sweep_dir, cell, seed)
    cfg = dataclasses.replace(cell.config(seed, out, model), device=device, **(extra or {}))
    results = run_or_resume(cfg, quiet=True)  # each run's summary table: the bar reports progress
    if cell.core:
        cached_destruction(out, device)
    return results


def _logged_runs(path: str) -> set[tuple[str, int]]:
    done = set()
    for r in read_records(path):
        try:
            done.add((r["cell"], int(r["seed"])))
        except (KeyError, TypeError, ValueError):
            continue
    return done


def log_run(sweep_dir: str, cell: Cell, seed: int, results: dict, wall_seconds: float | None) -> None:
    """Append the run's headline numbers to ``sweep.jsonl`` (flushed to disk at once)."""
    record = {
        "cell": cell.id,
        "seed": seed,
        "group": cell.group,
        "mode": cell.mode,
        "label": cell.label,
        "run_dir": os.path.relpath(run_dir(sweep_dir, cell, seed), sweep_dir),
        "train_seconds": results["train_seconds"],
        "wall_seconds": wall_seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for bn, r in results["by_bn"].items():
        s = r["subnets"]
        record[bn] = {"full_top1": r["main"]["top1"], "sub_mean": s["mean"], "sub_worst": s["min"], "sub_std": s["std"]}
    append_record(os.path.join(sweep_dir, "sweep.jsonl"), record)


def finished_cells(sweep_dir: str) -> list[tuple[Cell, list[int]]]:
    """Every cell with at least one finished run in the sweep folder (whatever plan made it),
    read back from the run folders' saved configurations."""
    root = os.path.join(sweep_dir, "runs")
    found: dict[Cell, list[int]] = {}
    if not os.path.isdir(root):
        return []
    for group in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, group))):
            folder = os.path.join(root, group, name)
            for seed_dir in sorted(os.listdir(folder)):
                path = os.path.join(folder, seed_dir, "results.json")
                if not os.path.exists(path):
                    continue
                cfg = config_from_dict(read_json(path)["config"])
                cell = cell_of(cfg)
                if cell.id != f"{group}/{name}":
                    continue  # not a sweep run
                found.setdefault(cell, []).append(cfg.seed)
    return [(c, sorted(s)) for c, s in found.items()]


def cell_of(cfg: TrainConfig) -> Cell:
    """The grid cell a run's configuration belongs to."""
    if cfg.mode == "ct":
        return ct_cell(cfg.train_fraction, cfg.epochs)
    if cfg.mode == "stochastic-depth":
        return sd_cell(
            cfg.train_fraction, cfg.epochs, cfg.drop_path_rate, core=cfg.drop_path_rate == DROP_PATH_RATES[0]
        )
    options = {k: getattr(cfg, k) for k in DEFAULT_ST}
    return st_cell(cfg.train_fraction, cfg.epochs, core=options == DEFAULT_ST, **options)


def sweep(
    sweep_dir: str = "runs/sweep",
    budget_minutes: float = 30.0,
    seeds: tuple[int, ...] = (0, 1, 2),
    design: str = "ofat",
    model: str = "resnet20",
    device: str = "cpu",
    progress: bool = True,
    dry_run: bool = False,
    analyse_only: bool = False,
    extra: dict | None = None,
    only: tuple[str, ...] = (),
) -> dict:
    """Run (or continue) the sweep, then write ``evidence.json``, the figures and
    ``conclusion.md``. Returns the evidence (or the plan with ``dry_run``). ``extra``: more
    training options for every run (e.g. a smaller evaluation in tests). ``only``: cell-id
    patterns (``fnmatch``, e.g. ``10pct-e30/st-*``) to restrict the design to, CT of their
    groups included."""
    if len(seeds) < 2:
        raise ValueError("a sweep needs at least 2 seeds per cell for a confidence interval (3 or more advised)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: each seed once")
    cells = select_cells(restrict(prioritised_cells(design), only), budget_minutes, len(seeds))
    estimate = sum(estimate_seconds(c) for c in cells) * len(seeds)
    plan = {
        "design": design,
        "budget_minutes": budget_minutes,
        "only": list(only),
        "seeds": list(seeds),
        "model": model,
        "estimated_seconds_quiet_2core": estimate,
        "cells": [dict(c.describe(), estimated_seconds_per_run=estimate_seconds(c)) for c in cells],
    }
    if dry_run:
        return plan
    os.makedirs(sweep_dir, exist_ok=True)
    write_json(os.path.join(sweep_dir, "plan.json"), plan)
    append_record(
        os.path.join(sweep_dir, "plans.jsonl"),
        {  # every invocation's plan, in order
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "analyse_only": analyse_only,
            **{k: v for k, v in plan.items() if k != "cells"},
            "cells": [c["id"] for c in plan["cells"]],
        },
    )
    started = time.perf_counter()
    if not analyse_only:
        log_path = os.path.join(sweep_dir, "sweep.jsonl")
        logged = _logged_runs(log_path)
        bar = tqdm(total=round(estimate), desc="sweep (est. quiet-CPU seconds)", unit="s", disable=not progress)
        for cell in cells:
            for seed in seeds:
                bar.set_postfix_str(f"{cell.id} s{seed}")
                t0 = time.perf_counter()
                fresh = not os.path.exists(os.path.join(run_dir(sweep_dir, cell, seed), "results.json"))
                results = run_one(sweep_dir, cell, seed, model, device, extra)
                if (cell.id, seed) not in logged:
                    log_run(sweep_dir, cell, seed, results, time.perf_counter() - t0 if fresh else None)
                    logged.add((cell.id, seed))
                bar.update(round(estimate_seconds(cell)))
            analyse(sweep_dir, figures=False)  # the cell's statistics are saved at once
        bar.close()
    evidence = analyse(sweep_dir, figures=True)
    evidence["wall_seconds_this_invocation"] = time.perf_counter() - started
    write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
    return evidence


def analyse(sweep_dir: str, figures: bool = True) -> dict:
    """Statistics of every finished cell of the sweep folder into ``evidence.json``; with
    ``figures``, also the figures and ``conclusion.md``."""
    from ..analysis.evidence import (
        analyse_cells,
        cells_table_markdown,
        conclusion_markdown,
        differences_table_markdown,
    )

    flops_path = os.path.join(sweep_dir, "flops.json")
    flops = read_json(flops_path) if os.path.exists(flops_path) else {}
    cells = []
    for cell, seeds in finished_cells(sweep_dir):
        if cell.id not in flops:
            cfg = read_json(os.path.join(run_dir(sweep_dir, cell, seeds[0]), "results.json"))["config"]
            flops[cell.id] = training_flops(cfg)
            write_json(flops_path, flops)
        runs = []
        for seed in seeds:
            folder = run_dir(sweep_dir, cell, seed)
            dest = os.path.join(folder, "destruction.json")
            runs.append(
                {
                    "seed": seed,
                    "results": read_json(os.path.join(folder, "results.json")),
                    "destruction": read_json(dest) if os.path.exists(dest) else None,
                }
            )
        cells.append({**cell.describe(), "runs": runs, "flops": flops[cell.id]})
    evidence = analyse_cells(cells)
    evidence["plan"] = (
        read_json(os.path.join(sweep_dir, "plan.json"))
        if os.path.exists(os.path.join(sweep_dir, "plan.json"))
        else None
    )
    write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
    if figures and evidence["cells"]:
        from ..reporting.evidence_figures import evidence_figures

        evidence["figures"] = [
            os.path.relpath(p, sweep_dir) for p in evidence_figures(evidence, os.path.join(sweep_dir, "figures"))
        ]
        write_json(os.path.join(sweep_dir, "evidence.json"), evidence)
        with open(os.path.join(sweep_dir, "conclusion.md"), "w", encoding="utf-8") as fh:
            fh.write("# Evidence: when does ST improve the full network?\n\n" + conclusion_markdown(evidence))
            fh.write("\n## Default configurations\n\n" + cells_table_markdown(evidence))
            fh.write("\n## Every cell minus CT, full network\n\n" + differences_table_markdown(evidence))
            fh.write(
                "\n## Every cell minus CT, worst sub-network\n\n"
                + differences_table_markdown(evidence, metric="sub_worst")
            )
            fh.write("\n## All cells\n\n" + cells_table_markdown(evidence, defaults_only=False))
    return evidence


def print_plan(plan: dict) -> None:
    print(
        f"design {plan['design']}, budget {plan['budget_minutes']:g} min, seeds {plan['seeds']}: "
        f"{len(plan['cells'])} cells, "
        f"{len(plan['cells']) * len(plan['seeds'])} runs, estimated {plan['estimated_seconds_quiet_2core'] / 60:.1f} "
        "min on a quiet 2-core CPU"
    )
    for c in plan["cells"]:
        print(f"  {c['id']:<40} {c['label']:<32} ~{c['estimated_seconds_per_run']:.0f} s per run")
