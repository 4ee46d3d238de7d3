"""Statistics that can decide whether stimulative training (ST) improves the full network:
per sweep cell, mean ± std over seeds; for each ST (and stochastic-depth) configuration, the
paired difference to CT trained with the same seed (same initial weights, same data order and,
on a fraction of the training split, the same images) with a 95 % t confidence interval; the
cost of each cell in training seconds and FLOPs.

A difference is called *beyond noise* when its 95 % interval excludes 0. With many cells some
intervals exclude 0 by chance (about 1 in 20 when nothing differs), so each comparison also
carries Holm's adjusted p-value over its family (same baseline, metric and BN mode) and the
verdict reports both. Pooled comparisons put together the seed-level differences of the
default configurations over every epochs budget of a split (and over everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from ..core.batchnorm import BN_PROTOCOLS, LEGACY_BN_NAMES
from .stats import fmt, fmt_interval, mean_std

# the protocols, and the name runs written before them used for ``subnet``; a sweep's modes are
# those every run reports
BN_MODES = (*BN_PROTOCOLS, *LEGACY_BN_NAMES)
PRIMARY_BN = "full"  # the paper's protocol
# the default ST configuration of the sweep's design: variants are named by what they change
DEFAULT_ST = {"kl_weight": 1.0, "temperature": 1.0, "subnets_per_step": 1, "kl": "kl", "sandwich": False}
METRICS = {
    "full": "full-network top-1",
    "sub_mean": "mean top-1 of all sub-networks",
    "sub_worst": "worst sub-network top-1",
}


def t_interval(diffs: Sequence[float], level: float = 0.95) -> dict:
    """Mean of paired differences with a two-sided t confidence interval and p-value
    (H0: mean 0). Needs at least two differences."""
    n = len(diffs)
    if n < 2:
        raise ValueError("a confidence interval needs at least two paired differences")
    ms = mean_std(list(diffs))
    se = ms["std"] / math.sqrt(n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(ms["mean"]) / se, n - 1))
    else:
        p = 0.0 if ms["mean"] != 0 else 1.0
    return {
        "n": n,
        "mean": ms["mean"],
        "std": ms["std"],
        "ci95": [ms["mean"] - half, ms["mean"] + half],
        "p": p,
        "diffs": list(diffs),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict_of(ci: Sequence[float]) -> str:
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "no clear difference"


def run_metrics(results: dict, bn: str) -> dict[str, float]:
    r = results["by_bn"][bn]
    return {
        "full": r["main"]["top1"],
        "sub_mean": r["subnets"]["mean"],
        "sub_worst": r["subnets"]["min"],
        "sub_std": r["subnets"]["std"],
    }


def destruction_metrics(dest: dict, bn: str) -> dict[str, float]:
    d = dest[bn]
    return {
        "delete_one_worst": max(e["drop"] for e in d["delete_one"]),
        "delete_k_mean": sum(e["drop"] for e in d["delete_k"]) / len(d["delete_k"]),
        "delete_k_worst": max(e["drop"] for e in d["delete_k"]),
        "permute_k_worst": max((e["drop"] for e in d["permute_k"]), default=0.0),
    }


def summarise_cell(cell: dict, modes: Sequence[str] = BN_MODES) -> dict:
    """Mean ± std over seeds of every metric (in each BN mode), cost, destruction."""
    runs = sorted(cell["runs"], key=lambda r: r["seed"])
    out = {k: v for k, v in cell.items() if k not in ("runs", "flops")}
    out["seeds"] = [r["seed"] for r in runs]
    out["n"] = len(runs)
    out["per_seed"] = {bn: {str(r["seed"]): run_metrics(r["results"], bn) for r in runs} for bn in modes}
    out["metrics"] = {
        bn: {
            m: mean_std([run_metrics(r["results"], bn)[m] for r in runs])
            for m in ("full", "sub_mean", "sub_worst", "sub_std")
        }
        for bn in modes
    }
    out["train_seconds"] = mean_std([r["results"]["train_seconds"] for r in runs])
    out["flops"] = cell["flops"]
    dest = [r for r in runs if r.get("destruction")]
    out["destruction"] = None
    if dest:
        out["destruction"] = {
            bn: {
                m: mean_std([destruction_metrics(r["destruction"], bn)[m] for r in dest])
                for m in ("delete_one_worst", "delete_k_mean", "delete_k_worst", "permute_k_worst")
            }
            for bn in BN_MODES
            if all(bn in r["destruction"] for r in dest)  # the protocols the analyses were run under
        }
        out["destruction_seeds"] = [r["seed"] for r in dest]
    return out


def paired(cell: dict, base: dict, bn: str, metric: str) -> dict | None:
    """``cell − base`` over the seeds both have; None with fewer than two."""
    seeds = [s for s in cell["per_seed"][bn] if s in base["per_seed"][bn]]
    if len(seeds) < 2:
        return None
    diffs = [cell["per_seed"][bn][s][metric] - base["per_seed"][bn][s][metric] for s in seeds]
    out = t_interval(diffs)
    out["seeds"] = [int(s) for s in seeds]
    return out


def _pairs(cells: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(cell id, baseline id, baseline kind): every ST and stochastic-depth cell against CT,
    every ST cell against the default stochastic depth, the default ST against every
    stochastic-depth rate, all within one (split, epochs) group."""
    by_group: dict[str, list[dict]] = {}
    for c in cells.values():
        by_group.setdefault(c["group"], []).append(c)
    out = []
    for members in by_group.values():
        ct = next((c for c in members if c["mode"] == "ct"), None)
        sd_default = next((c for c in members if c["mode"] == "stochastic-depth" and c["default"]), None)
        st_default = next((c for c in members if c["mode"] == "st" and c["default"]), None)
        for c in members:
            if c["mode"] != "ct" and ct is not None:
                out.append((c["id"], ct["id"], "CT"))
            if c["mode"] == "st" and sd_default is not None:
                out.append((c["id"], sd_default["id"], "SD default"))
            if c["mode"] == "stochastic-depth" and not c["default"] and st_default is not None:
                out.append((st_default["id"], c["id"], "SD other rate"))
    return out


def analyse_cells(cells: list[dict]) -> dict:
    """Everything the verdict needs, from the sweep's finished cells (each: the cell's
    description, its runs ``[{seed, results, destruction}]`` and its FLOPs)."""
    # the BN modes every run was evaluated in (a sweep evaluates both)
    modes = [bn for bn in BN_MODES if all(bn in r["results"]["by_bn"] for c in cells for r in c["runs"])]
    summary = {c["id"]: summarise_cell(c, modes) for c in cells}
    comparisons = []
    for cid, bid, kind in _pairs(summary):
        for bn in modes:
            for metric in METRICS:
                p = paired(summary[cid], summary[bid], bn, metric)
                if p is None:
                    continue
                c = summary[cid]
                comparisons.append(
                    {
                        "cell": cid,
                        "baseline": bid,
                        "kind": f"{c['mode'] if c['mode'] != 'stochastic-depth' else 'SD'} vs {kind}",
                        "label": c["label"],
                        "baseline_label": summary[bid]["label"],
                        "group": c["group"],
                        "split": c["split"],
                        "epochs": c["epochs"],
                        "bn": bn,
                        "metric": metric,
                        **p,
                    }
                )
    families: dict[tuple, list[dict]] = {}
    for comp in comparisons:
        families.setdefault((comp["kind"], comp["metric"], comp["bn"]), []).append(comp)
    for family in families.values():
        for comp, adj in zip(family, holm([c["p"] for c in family]), strict=True):
            comp["p_holm"] = adj
            comp["verdict"] = verdict_of(comp["ci95"])
            comp["beyond_noise_after_holm"] = adj < 0.05
    pooled = pooled_comparisons(summary, modes)
    evidence = {
        "primary_bn": PRIMARY_BN if PRIMARY_BN in modes else modes[0],
        "bn_modes": modes,
        "metrics": METRICS,
        "method": (
            "paired difference (cell − baseline) per seed, same seed = same initial weights, data order and training "
            "subset; "
            "mean, sample std, two-sided 95 % t interval and p-value over seeds; Holm's adjustment per family (kind, "
            "metric, BN mode); "
            "'beyond noise' = the 95 % interval excludes 0"
        ),
        "cells": summary,
        "comparisons": comparisons,
        "pooled": pooled,
    }
    evidence["verdict"] = {bn: verdict(evidence, bn) for bn in modes}
    return evidence


def pooled_comparisons(summary: dict[str, dict], modes: Sequence[str] = BN_MODES) -> list[dict]:
    """Default ST − CT, default SD − CT and default ST − default SD, pooled over the groups
    (epochs budgets) of a split (``split``: full, 10pct, or all). Runs with the same seed
    share their initial weights and, on a fraction, their training images, whatever the
    epochs, so they are not independent: each seed's differences are first averaged over the
    groups, and the t interval is taken over seeds (``n`` = seeds; ``pairs`` = differences)."""
    defaults = {}
    for c in summary.values():
        if c["default"]:
            defaults.setdefault(c["group"], {})[c["mode"]] = c
    out = []
    for a, b, kind in (
        ("st", "ct", "ST vs CT"),
        ("stochastic-depth", "ct", "SD vs CT"),
        ("st", "stochastic-depth", "ST vs SD"),
    ):
        splits = sorted({c["split"] for c in summary.values()}) + ["all"]
        for split in splits:
            for bn in modes:
                for metric in METRICS:
                    by_seed: dict[str, list[float]] = {}
                    groups = []
                    for group, members in sorted(defaults.items()):
                        if a not in members or b not in members or (split != "all" and members[a]["split"] != split):
                            continue
                        pa, pb = members[a]["per_seed"][bn], members[b]["per_seed"][bn]
                        for seed in (s for s in pa if s in pb):
                            by_seed.setdefault(seed, []).append(pa[seed][metric] - pb[seed][metric])
                        groups.append(group)
                    if len(by_seed) >= 2:
                        seeds = sorted(by_seed, key=int)
                        stats = t_interval([sum(by_seed[s]) / len(by_seed[s]) for s in seeds])
                        out.append(
                            {
                                "kind": kind,
                                "split": split,
                                "bn": bn,
                                "metric": metric,
                                "groups": groups,
                                **stats,
                                "seeds": [int(s) for s in seeds],
                                "pairs": sum(len(v) for v in by_seed.values()),
                                "verdict": None,
                            }
                        )
    for p in out:
        p["verdict"] = verdict_of(p["ci95"])
    return out


def verdict(evidence: dict, bn: str) -> dict:
    """The numbers the written conclusion quotes, for one BN mode."""
    comps = [c for c in evidence["comparisons"] if c["bn"] == bn]
    st_ct_full = [c for c in comps if c["kind"] == "st vs CT" and c["metric"] == "full"]
    cells = evidence["cells"]
    return {
        "bn": bn,
        "st_vs_ct_full": _count(comps, "st vs CT", "full"),
        "st_vs_ct_sub_mean": _count(comps, "st vs CT", "sub_mean"),
        "st_vs_ct_sub_worst": _count(comps, "st vs CT", "sub_worst"),
        "sd_vs_ct_full": _count(comps, "SD vs CT", "full"),
        "st_vs_sd_full": _count(comps, "st vs SD default", "full"),
        "st_vs_sd_sub_mean": _count(comps, "st vs SD default", "sub_mean"),
        "st_vs_sd_sub_worst": _count(comps, "st vs SD default", "sub_worst"),
        "st_full_better": [_brief(c) for c in st_ct_full if c["verdict"] == "better"],
        "st_full_worse": [_brief(c) for c in st_ct_full if c["verdict"] == "worse"],
        "best_st_per_group": _best_per_group(st_ct_full),
        "pooled": _pooled_by_name(evidence["pooled"], bn),
        "cost_vs_ct": _cost_vs_ct(cells),
        "destruction": _destruction_by_group(cells, bn),
    }


def _brief(c: dict) -> dict:
    """What the conclusion quotes of one comparison."""
    return {k: c[k] for k in ("cell", "label", "group", "mean", "ci95", "p", "p_holm", "n")}


def _count(comps: list[dict], kind: str, metric: str) -> dict:
    """How many comparisons of a kind and metric are better or worse beyond noise (before
    and after Holm's adjustment), and the mean of their mean differences."""
    sel = [c for c in comps if c["kind"] == kind and c["metric"] == metric]
    return {
        "cells": len(sel),
        "better": sum(c["verdict"] == "better" for c in sel),
        "worse": sum(c["verdict"] == "worse" for c in sel),
        "better_after_holm": sum(c["verdict"] == "better" and c["beyond_noise_after_holm"] for c in sel),
        "worse_after_holm": sum(c["verdict"] == "worse" and c["beyond_noise_after_holm"] for c in sel),
        "mean_of_means": (sum(c["mean"] for c in sel) / len(sel)) if sel else None,
    }


def _best_per_group(comps: list[dict]) -> dict:
    """Per group, the comparison with the largest mean difference."""
    best: dict = {}
    for c in comps:
        if c["group"] not in best or c["mean"] > best[c["group"]]["mean"]:
            best[c["group"]] = _brief(c)
    return best


def _pooled_by_name(pooled: list[dict], bn: str) -> dict:
    """The pooled comparisons of one BN mode, named ``kind | split | metric``."""
    return {
        f"{p['kind']} | {p['split']} | {p['metric']}": {
            k: p[k] for k in ("n", "pairs", "mean", "std", "ci95", "p", "verdict", "groups")
        }
        for p in pooled
        if p["bn"] == bn
    }


def _cost_vs_ct(cells: dict[str, dict]) -> dict:
    """Per group, each default configuration's FLOPs and training seconds over CT's."""
    cost = {}
    for group in sorted({c["group"] for c in cells.values()}):
        members = {c["mode"]: c for c in cells.values() if c["group"] == group and c["default"]}
        if "ct" in members:
            ct = members["ct"]
            cost[group] = {
                m: {
                    "flops_ratio": c["flops"]["total"] / ct["flops"]["total"],
                    "seconds_ratio": c["train_seconds"]["mean"] / ct["train_seconds"]["mean"],
                }
                for m, c in members.items()
                if m != "ct"
            }
    return cost


def _destruction_by_group(cells: dict[str, dict], bn: str) -> dict:
    """Per group, the default cells' destruction means over seeds (worst drop deleting one
    block, mean drop deleting 1-4 blocks), in top-1 points."""
    out: dict = {}
    for c in cells.values():
        if c["default"] and c.get("destruction"):
            d = c["destruction"][bn]
            out.setdefault(c["group"], {})[c["mode"]] = {
                "delete_one_worst": d["delete_one_worst"]["mean"],
                "delete_k_mean": d["delete_k_mean"]["mean"],
                "n": d["delete_one_worst"]["n"],
            }
    return out


# ---------------------------------------------------------------------------------------
# the tables (header and rows of text); reporting.evidence_text renders them


Table = tuple[list[str], list[list[str]]]


def cells_table(evidence: dict, bn: str | None = None, defaults_only: bool = True) -> Table:
    """The cells: top-1 of the full network, the mean and the worst sub-network (mean ± std
    over seeds), training seconds and TFLOPs."""
    bn = bn or evidence["primary_bn"]
    cells = sorted(
        evidence["cells"].values(),
        key=lambda c: (
            c["split"] != "10pct",
            c["epochs"],
            ["ct", "stochastic-depth", "st"].index(c["mode"]),
            not c["default"],
            c["label"],
        ),
    )
    header = [
        "group",
        "configuration",
        "seeds",
        "full top-1",
        "sub-network mean",
        "worst sub-network",
        "train s",
        "TFLOPs",
    ]
    rows = []
    for c in cells:
        if defaults_only and not c["default"]:
            continue
        m = c["metrics"][bn]
        rows.append(
            [
                c["group"],
                c["label"],
                str(c["n"]),
                fmt(m["full"]),
                fmt(m["sub_mean"]),
                fmt(m["sub_worst"]),
                f"{c['train_seconds']['mean']:.0f}",
                f"{c['flops']['total'] / 1e12:.1f}",
            ]
        )
    return header, rows


def differences_table(evidence: dict, bn: str | None = None, metric: str = "full") -> Table:
    """Every cell minus CT (same seed): mean [95 % interval], p, Holm p, verdict."""
    bn = bn or evidence["primary_bn"]
    comps = [
        c
        for c in evidence["comparisons"]
        if c["bn"] == bn and c["metric"] == metric and c["kind"] in ("st vs CT", "SD vs CT")
    ]
    comps.sort(key=lambda c: (c["split"] != "10pct", c["epochs"], c["kind"] != "SD vs CT", c["label"]))
    header = ["group", "configuration − CT", "n", f"{METRICS[metric]} difference [95 % CI]", "p", "Holm p", "verdict"]
    rows = [
        [c["group"], c["label"], str(c["n"]), fmt_interval(c), f"{c['p']:.3f}", f"{c['p_holm']:.3f}", c["verdict"]]
        for c in comps
    ]
    return header, rows
