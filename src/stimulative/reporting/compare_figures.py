"""Figures that overlay several runs, one per question, with shared axes across runs and at
paper size (a double column is 7 in wide): the full network per epoch, the distribution of the
sub-networks, and the Pareto fronts. Large spaces are drawn as distributions, never one tick per
sub-network."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .figures import BN_TITLES, COLORS, save_figure

DOUBLE_COLUMN = 7.0  # inches: a two-column paper's full width
SINGLE_COLUMN = 3.5
PALETTE = ["#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def run_colors(runs: list[dict]) -> dict[str, str]:
    """A colour per run label: the method's usual colour for the first run of each method."""
    out: dict[str, str] = {}
    for r in runs:
        color = COLORS.get(r["method"])
        if color is None or color in out.values():
            color = next((c for c in PALETTE if c not in out.values()), "gray")
        out[r["label"]] = color
    return out


def epochs_figure(runs: list[dict], colors: dict, folder: str) -> str | None:
    """The full network's per-epoch top-1 (``full`` BN protocol) of every run on one axis."""
    curves = [r for r in runs if r["epochs"]]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN, 2.6))
    for r in curves:
        xs, ys = zip(*r["epochs"])
        ax.plot(xs, ys, "-o", markersize=3, color=colors[r["label"]], label=r["label"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%), full BN")
    ax.set_title("Full network through training", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, folder, "compare_epochs.png")


def distribution_figure(runs: list[dict], colors: dict, folder: str) -> str:
    """Every run's sub-networks as one box per run (points on top while there are few), one
    panel per BN protocol, one shared y axis; the full network as a diamond."""
    protocols = [bn for bn in BN_TITLES if any(bn in r["by_bn"] for r in runs)]
    fig, axes = plt.subplots(
        1, len(protocols), figsize=(DOUBLE_COLUMN, 2.8), sharey=True, squeeze=False
    )  # fmt: skip
    for ax, bn in zip(axes[0], protocols):
        present = [r for r in runs if bn in r["by_bn"]]
        values = [[p["top1"] for p in r["by_bn"][bn]["subnets"]["per_subnet"]] for r in present]
        box = ax.boxplot(values, patch_artist=True, widths=0.55, showfliers=False)
        for patch, r in zip(box["boxes"], present):
            patch.set_facecolor(colors[r["label"]])
            patch.set_alpha(0.45)
        for i, (v, r) in enumerate(zip(values, present), start=1):
            if len(v) <= 60:  # few enough to see each one; larger spaces stay a distribution
                ax.plot([i] * len(v), v, ".", color=colors[r["label"]], alpha=0.6, markersize=3)
            ax.plot(i, r["by_bn"][bn]["main"]["top1"], "D", color="black", markersize=4)
        ax.set_xticks(range(1, len(present) + 1), [r["label"] for r in present], rotation=30, fontsize=7, ha="right")
        ax.set_title(f"{bn} BN", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("top-1 (%)")
    fig.suptitle("Sub-networks (boxes) and the full network (diamond)", fontsize=9)
    return save_figure(fig, folder, "compare_subnets.png")


def pareto_overlay_figure(runs: list[dict], colors: dict, folder: str) -> str | None:
    """Top-1 against MFLOPs of every measured sub-network, the front as a line, per run."""
    measured = [r for r in runs if r["pareto"]]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(SINGLE_COLUMN, 2.6))
    for r in measured:
        rows = r["pareto"]["subnets"]
        color = colors[r["label"]]
        ax.plot([x["mflops"] for x in rows], [x["top1"] for x in rows], ".", color=color, alpha=0.4, markersize=3)
        front = sorted((x for x in rows if x.get("pareto_flops")), key=lambda x: x["mflops"])
        ax.plot([x["mflops"] for x in front], [x["top1"] for x in front], "-", color=color, label=r["label"])
    bn = measured[0]["pareto"].get("settings", {}).get("bn", "subnet")
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel(f"top-1 (%), {bn} BN")
    ax.set_title("Pareto fronts", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, folder, "compare_pareto.png")
