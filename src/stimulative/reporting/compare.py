"""Runs given together to `stimulative report` are compared, not listed: one table (rows:
runs; columns: the full network's top-1 and the sub-networks' mean, std and min under each BN
protocol) and one overlaid figure per question. Means over seeds appear only where a method
has several seeds."""

from __future__ import annotations

import json
import os
import statistics

from ..runtime.files import read_json, read_json_or_none
from .compare_figures import distribution_figure, epochs_figure, pareto_overlay_figure, run_colors
from .figures import BN_TITLES, METHOD_NAMES, destruction_figure


def load_runs(dirs: list[str]) -> list[dict]:
    """What the comparison needs from each run folder, labelled by method (and seed or folder
    when two runs would share a label)."""
    runs = []
    for d in dirs:
        r = read_json(os.path.join(d, "results.json"))
        method = METHOD_NAMES.get(r["mode"], r["mode"])
        runs.append(
            {
                "dir": d,
                "method": method,
                "seed": r["seed"],
                "model": r["model"],
                "label": method,
                "by_bn": r["by_bn"],
                "epochs": _epoch_curve(os.path.join(d, "metrics.jsonl")),
                "destruction": read_json_or_none(os.path.join(d, "destruction.json")),
                "pareto": read_json_or_none(os.path.join(d, "pareto.json")),
            }
        )
    _disambiguate(runs)
    return runs


def _disambiguate(runs: list[dict]) -> None:
    for extra in (
        lambda r: f"s{r['seed']}",
        lambda r: r["model"],
        lambda r: os.path.basename(os.path.normpath(r["dir"])),
    ):
        labels = [r["label"] for r in runs]
        if len(set(labels)) == len(labels):
            return
        for r in runs:
            if labels.count(r["label"]) > 1:
                r["label"] = f"{r['label']} {extra(r)}"


def _epoch_curve(path: str) -> list[tuple[int, float]]:
    """(epoch, the full network's per-epoch top-1) from metrics.jsonl; empty without one."""
    if not os.path.exists(path):
        return []
    curve = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            top1 = record.get("val_top1_full_bn", record.get("test_top1_full_bn"))
            if top1 is not None and "epoch" in record:
                curve.append((record["epoch"], top1))
    return curve


def protocols(runs: list[dict]) -> list[str]:
    return [bn for bn in BN_TITLES if any(bn in r["by_bn"] for r in runs)]


def comparison_table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per run: full top-1 and sub-network mean, std, min per BN protocol."""
    bns = protocols(runs)
    header = ["run"] + [f"{col} ({bn})" for bn in bns for col in ("full top-1", "mean", "std", "min")]
    rows = []
    for r in runs:
        row = [r["label"]]
        for bn in bns:
            x = r["by_bn"].get(bn)
            s = x["subnets"] if x else None
            row += (
                [f"{x['main']['top1']:.2f}", f"{s['mean']:.2f}", f"{s['std']:.2f}", f"{s['min']:.2f}"]
                if x
                else ["–"] * 4
            )
        rows.append(row)
    return header, rows


def seed_means_table(runs: list[dict]) -> tuple[list[str], list[list[str]]] | None:
    """Mean ± std over seeds per method (and model), only for methods with several seeds."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r['method']} {r['model']}", []).append(r)
    several = {k: g for k, g in groups.items() if len({r["seed"] for r in g}) > 1}
    if not several:
        return None
    bns = protocols(runs)
    header = ["method", "seeds"] + [f"{col} ({bn})" for bn in bns for col in ("full top-1", "sub-network mean")]
    rows = []
    for name, group in several.items():
        row = [name, str(len(group))]
        for bn in bns:
            full = [r["by_bn"][bn]["main"]["top1"] for r in group if bn in r["by_bn"]]
            mean = [r["by_bn"][bn]["subnets"]["mean"] for r in group if bn in r["by_bn"]]
            row += [_mean_std(full), _mean_std(mean)]
        rows.append(row)
    return header, rows


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "–"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def comparison_figures(runs: list[dict], folder: str) -> list[tuple[str, str]]:
    """(path, caption) of every overlaid figure the runs' files allow."""
    colors = run_colors(runs)
    out = []
    path = epochs_figure(runs, colors, folder)
    if path:
        out.append((path, "Full network's top-1 per epoch (validation split, full BN protocol), every run"))
    out.append((distribution_figure(runs, colors, folder), "Every evaluated sub-network's top-1, per run and protocol"))
    destroyed = {r["label"]: {"per_seed": [r["destruction"]]} for r in runs if r["destruction"]}
    if destroyed:
        for bn in protocols(runs):
            if all(bn in d["per_seed"][0] for d in destroyed.values()):
                path = destruction_figure(destroyed, bn, folder, prefix="compare_")
                out.append((path, f"Destruction at test time, {BN_TITLES[bn]}"))
    path = pareto_overlay_figure(runs, colors, folder)
    if path:
        out.append((path, "Top-1 against FLOPs of the measured sub-networks; lines: the Pareto fronts"))
    return out
