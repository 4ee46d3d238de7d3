"""The Pareto figure of ``stimulative pareto``: top-1 of every sub-network against its
latency and its FLOPs (from the rows of ``pareto.json``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .figures import plt


def plot_pareto(rows: Sequence[dict], path: str, title: str = "", pick: dict | None = None) -> None:
    """Top-1 against latency and against MFLOPs; the Pareto front drawn, the full network
    starred, the budget's pick circled."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, flag, label in (
        (axes[0], "latency_ms", "pareto_latency", "latency (ms)"),
        (axes[1], "mflops", "pareto_flops", "MFLOPs (one image)"),
    ):
        ax.scatter([r[key] for r in rows], [r["top1"] for r in rows], s=14, c="0.6", label="sub-networks")
        front = sorted((r for r in rows if r[flag]), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["top1"] for r in front], "o-", c="C0", ms=5, label="Pareto front")
        deepest = max(rows, key=lambda r: r["blocks"])
        ax.scatter(
            [deepest[key]], [deepest["top1"]], marker="*", s=180, c="C3", zorder=3, label=f"deepest ({deepest['spec']})"
        )
        if pick:
            ax.scatter(
                [pick[key]],
                [pick["top1"]],
                s=160,
                facecolors="none",
                edgecolors="C2",
                linewidths=2,
                zorder=4,
                label=f"budget pick ({pick['spec']})",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
