"""Figures of the sweep's evidence (``evidence.json``): accuracy against training cost for
CT, stochastic depth and the ST configurations, and the paired differences to CT."""

from __future__ import annotations

import math
import os

from matplotlib.ticker import FuncFormatter

from ..analysis.evidence import DEFAULT_ST
from .figures import BN_TITLES, COLORS, plt, save_figure

MODE_COLORS = {"ct": COLORS["CT"], "st": COLORS["ST"], "stochastic-depth": COLORS["stochastic depth"]}
EPOCH_MARKERS = {30: "o", 100: "s", 200: "D"}


def _short(cell: dict) -> str:
    """What a variant changes from its mode's default, e.g. ``λ2``, ``n6``, ``KL-``, ``p0.1``."""
    o = cell["options"]
    if cell["mode"] == "stochastic-depth":
        return f"p{o['drop_path_rate']:g}"
    names = {"kl_weight": "λ", "temperature": "T", "subnets_per_step": "n"}
    parts = [f"{names[k]}{o[k]:g}" for k in names if o[k] != DEFAULT_ST[k]]
    parts += ["KL-"] if o["kl"] != "kl" else []
    parts += ["sw"] if o["sandwich"] else []
    return " ".join(parts)


def _splits(evidence: dict) -> list[str]:
    return sorted({c["split"] for c in evidence["cells"].values()}, key=lambda s: s == "full")


def _scatter(ax, cells: list[dict], bn: str, metric: str) -> None:
    """One point per cell: mean ± std over seeds against training FLOPs. Default
    configurations are joined across epochs; ST variants are smaller, unjoined points. The
    y range follows the default configurations; a variant far below it is drawn on the
    bottom edge as a triangle labelled with its mean."""
    stats = [c["metrics"][bn][metric] for c in cells]
    defaults = [c["metrics"][bn][metric] for c in cells if c["default"]] or stats
    lo = min(m["mean"] - m["std"] for m in defaults)
    hi = max(m["mean"] + m["std"] for m in stats)
    lo -= 0.1 * (hi - lo) + 0.5
    for mode in ("ct", "stochastic-depth", "st"):
        members = [c for c in cells if c["mode"] == mode]
        for c in members:
            _cell_point(ax, c, c["metrics"][bn][metric], lo)
        line = sorted((c for c in members if c["default"]), key=lambda c: c["epochs"])
        if len(line) > 1:
            ax.plot(
                [c["flops"]["total"] / 1e12 for c in line],
                [c["metrics"][bn][metric]["mean"] for c in line],
                color=MODE_COLORS[mode],
                alpha=0.7,
            )
    ax.set_ylim(lo, hi + 0.02 * (hi - lo))
    _cost_axis(ax)


def _cell_point(ax, c: dict, m: dict, lo: float) -> None:
    """One cell's mean ± std (``m``) at its training FLOPs; below ``lo``, a labelled triangle
    on the bottom edge."""
    color = MODE_COLORS[c["mode"]]
    x = c["flops"]["total"] / 1e12
    if m["mean"] < lo:  # off the scale (e.g. a configuration that failed to train)
        ax.plot(x, lo, "v", color=color, markersize=5, alpha=0.8, clip_on=False)
        ax.annotate(
            f"{_short(c)}: {m['mean']:.1f}",
            (x, lo),
            fontsize=5.5,
            color=color,
            xytext=(3, 3),
            textcoords="offset points",
        )
        return
    ax.errorbar(
        x,
        m["mean"],
        yerr=m["std"],
        color=color,
        marker=EPOCH_MARKERS.get(c["epochs"], "o"),
        markersize=7 if c["default"] else 4,
        alpha=1.0 if c["default"] else 0.55,
        capsize=2,
        linestyle="none",
    )
    if not c["default"]:
        ax.annotate(_short(c), (x, m["mean"]), fontsize=5.5, color=color, xytext=(3, 2), textcoords="offset points")


def _cost_axis(ax) -> None:
    """A logarithmic x axis of training TFLOPs, labelled with plain numbers."""
    ax.set_xscale("log")
    # plain numbers on the log axis: matplotlib's default labels minor ticks as "3×10^-1" and they overlap
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo_x, hi_x = ax.get_xlim()
    narrow = hi_x / lo_x < 5  # less than a decade shown: every minor tick gets its number
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if narrow or round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else "")
    )
    ax.set_xlabel("training cost (TFLOPs, forward + backward)")
    ax.grid(alpha=0.3)


def _legend(fig) -> None:
    handles = [
        plt.Line2D([], [], color=MODE_COLORS[m], marker="o", linestyle="-", label=label)
        for m, label in (
            ("ct", "CT"),
            ("stochastic-depth", "stochastic depth (large: rate 0.5)"),
            ("st", "ST (large: λ 1, T 1, n 1, KL)"),
        )
    ]
    handles += [
        plt.Line2D([], [], color="gray", marker=mk, linestyle="none", label=f"{e} epochs")
        for e, mk in EPOCH_MARKERS.items()
    ]
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)


def full_vs_cost_figure(evidence: dict, folder: str, bn: str = "full") -> str:
    splits = _splits(evidence)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 4.2), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        _scatter(ax, [c for c in evidence["cells"].values() if c["split"] == split], bn, "full")
        ax.set_title(f"training split: {split}", fontsize=10)
        ax.set_ylabel("full-network top-1 (%)")
    _legend(fig)
    fig.suptitle(f"Full network vs training cost (mean ± std over seeds; {BN_TITLES[bn]})", fontsize=11)
    return save_figure(fig, folder, f"evidence_full_vs_cost_{bn}.png", legend_strip=0.07)


def subnets_vs_cost_figure(evidence: dict, folder: str, bn: str = "full") -> str:
    splits = _splits(evidence)
    fig, axes = plt.subplots(2, len(splits), figsize=(5.5 * len(splits), 7.5), squeeze=False)
    for j, split in enumerate(splits):
        cells = [c for c in evidence["cells"].values() if c["split"] == split]
        for i, (metric, label) in enumerate(
            (("sub_mean", "mean top-1 of all sub-networks (%)"), ("sub_worst", "worst sub-network top-1 (%)"))
        ):
            _scatter(axes[i][j], cells, bn, metric)
            axes[i][j].set_ylabel(label)
            axes[i][j].set_title(f"training split: {split}", fontsize=10)
    _legend(fig)
    fig.suptitle(f"Sub-networks vs training cost (27 ordered sub-networks; {BN_TITLES[bn]})", fontsize=11)
    return save_figure(fig, folder, f"evidence_subnets_vs_cost_{bn}.png", legend_strip=0.04)


def paired_difference_figure(evidence: dict, folder: str, bn: str = "full") -> str:
    """Forest plot: each ST and stochastic-depth cell minus CT (same seed), mean and 95 %
    interval, for the full network, the mean and the worst sub-network."""
    comps = [c for c in evidence["comparisons"] if c["bn"] == bn and c["kind"] in ("st vs CT", "SD vs CT")]
    rows = sorted(
        {(c["group"], c["cell"], c["label"], c["kind"]) for c in comps},
        key=lambda r: (r[0].split("-e")[0] != "10pct", int(r[0].split("-e")[1]), r[3] != "SD vs CT", r[2]),
    )
    metrics = (("full", "full network"), ("sub_mean", "mean sub-network"), ("sub_worst", "worst sub-network"))
    fig, axes = plt.subplots(1, 3, figsize=(15, max(3.0, 0.22 * len(rows) + 1.5)), sharey=True)
    index = {r[1]: i for i, r in enumerate(rows)}
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        for c in comps:
            if c["metric"] != metric:
                continue
            y = index[c["cell"]]
            color = MODE_COLORS["st"] if c["kind"] == "st vs CT" else MODE_COLORS["stochastic-depth"]
            ax.plot(c["ci95"], [y, y], color=color, alpha=0.8)
            ax.plot(c["mean"], y, "o", color=color, markersize=4)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(f"{title}: cell − CT (points)", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(rows)), [f"{g}  {label}" for g, _, label, _ in rows], fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"Paired differences to CT (same seed), mean and 95 % t interval ({BN_TITLES[bn]})", fontsize=11)
    return save_figure(fig, folder, f"evidence_paired_{bn}.png")


def evidence_figures(evidence: dict, folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    out = []
    for bn in evidence["bn_modes"]:
        out += [full_vs_cost_figure(evidence, folder, bn), subnets_vs_cost_figure(evidence, folder, bn)]
        if any(c["bn"] == bn for c in evidence["comparisons"]):
            out.append(paired_difference_figure(evidence, folder, bn))
    return out
