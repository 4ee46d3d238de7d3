"""Figures (matplotlib, PNG) drawn from the analyses' JSON. CT, ST and individual training
keep the same colours in every figure."""

from __future__ import annotations

import os

import matplotlib

from ..core.sampling import parse_spec

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"CT": "#1f77b4", "ST": "#d62728", "individual": "#2ca02c", "stochastic depth": "#9467bd"}
BN_TITLES = {
    "full": "full network's BN statistics, re-estimated (the paper's protocol)",
    "subnet": "BN re-estimated per sub-network",
    "running": "running BN statistics as trained",
    "recalibrated": "BN re-estimated per sub-network",  # results written before the protocols were named
}
METHOD_NAMES = {"st": "ST", "ct": "CT", "individual": "individual", "stochastic-depth": "stochastic depth"}
BN_STYLES = {"full": ("-o", "black"), "subnet": ("-.^", "dimgray"), "running": ("--s", "gray")}


def save_figure(fig, folder: str, name: str, legend_strip: float = 0.0) -> str:
    """Save ``fig`` as PNG (returned) with PDF and SVG beside it (vector copies for a paper),
    and close it; ``legend_strip``: a fraction of the height kept free at the bottom for a
    figure-wide legend."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    fig.tight_layout(rect=(0, legend_strip, 1, 1))
    fig.savefig(path, dpi=200)
    stem = os.path.splitext(path)[0]
    for ext in (".pdf", ".svg"):
        fig.savefig(stem + ext)
    plt.close(fig)
    return path


def _errorbar(ax, xs, stats, label, color, marker="o", offset=0.0):
    ax.errorbar(
        [x + offset for x in xs],
        [s["mean"] for s in stats],
        yerr=[s["std"] for s in stats],
        label=label,
        color=color,
        marker=marker,
        capsize=3,
        linestyle="-",
    )


def loafing_figure(loafing: dict, folder: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (bn, rows) in zip(axes, loafing.items()):
        xs = list(range(len(rows)))
        _errorbar(
            ax, xs, [r["individual"] for r in rows], "trained alone (individual)", COLORS["individual"], "*", -0.05
        )
        _errorbar(ax, xs, [r["ct"] for r in rows], "inside CT network", COLORS["CT"], "o")
        _errorbar(ax, xs, [r["st"] for r in rows], "inside ST network", COLORS["ST"], "s", 0.05)
        ax.set_xticks(xs, [r["spec"] for r in rows])
        ax.set_xlabel("sub-network (blocks kept per stage)")
        ax.set_title(BN_TITLES[bn], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Network loafing: sub-networks of resnet20 on digits (mean ± std over seeds)")
    return save_figure(fig, folder, "loafing.png")


def loafing_depth_figure(depth_rows: dict, folder: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (bn, rows) in zip(axes, depth_rows.items()):
        xs = list(range(len(rows)))
        for spec, marker in (("1,1,1", "o"), ("3,3,3", "s")):
            _errorbar(ax, xs, [r[spec]["ct"] for r in rows], f"{spec} inside CT", COLORS["CT"], marker)
            _errorbar(ax, xs, [r[spec]["st"] for r in rows], f"{spec} inside ST", COLORS["ST"], marker, 0.05)
            alone = rows[0][spec]["alone"]
            ax.axhline(
                alone["mean"],
                color=COLORS["individual"],
                linestyle="--" if spec == "1,1,1" else ":",
                label=f"{spec} trained alone",
            )
        ax.set_xticks(xs, [r["model"] for r in rows])
        ax.set_xlabel("network the sub-network lives in")
        ax.set_title(BN_TITLES[bn], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(loc="lower left", fontsize=7, ncol=2)
    fig.suptitle("Do deeper networks loaf more? The same sub-networks inside deeper networks")
    return save_figure(fig, folder, "loafing_depth.png")


def subnet_distribution_figure(values: dict, stats: dict, folder: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, bn in zip(axes, values):
        data = [sum(values[bn][m], []) for m in ("CT", "ST")]
        box = ax.boxplot(data, patch_artist=True, widths=0.5)
        ax.set_xticks([1, 2], ["CT", "ST"])
        for patch, m in zip(box["boxes"], ("CT", "ST")):
            patch.set_facecolor(COLORS[m])
            patch.set_alpha(0.5)
        ax.set_title(BN_TITLES[bn], fontsize=10)
        ax.set_xlabel("training method (all sub-networks, all seeds)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("sub-network top-1 accuracy (%)")
    fig.suptitle("Top-1 of all 27 sub-networks of resnet20 on digits")
    return save_figure(fig, folder, "subnet_distribution.png")


def space_size_figure(stats: dict, folder: str) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, field, label in zip(
        axes, ("max", "mean", "std"), ("max top-1 (%)", "mean top-1 (%)", "std of top-1 (points)")
    ):
        for bn in stats:
            style, color = BN_STYLES.get(bn, ("-o", "black"))
            names = list(stats[bn])
            xs = [0, 8, 27]
            ys = [stats[bn][n][field]["mean"] for n in names]
            es = [stats[bn][n][field]["std"] for n in names]
            ax.errorbar(
                xs,
                ys,
                yerr=es,
                fmt=style,
                color=color,
                capsize=3,
                label=BN_TITLES[bn],
            )  # not CT/ST colours: these are BN modes
        ax.set_xticks([0, 8, 27], ["0 (CT)", "8", "27"])
        ax.set_xlabel("sub-networks in the ST sampling space")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("All-sub-network statistics versus sampling-space size (mean ± std over seeds)")
    return save_figure(fig, folder, "space_size.png")


def destruction_figure(dest: dict, bn: str, folder: str, prefix: str = "") -> str:
    fig, axes = plt.subplots(1, 3, figsize=(7, 2.8))
    methods = list(dest)
    several = any(len(d["per_seed"]) > 1 for d in dest.values())
    width = 0.8 / len(methods)  # side by side, however many methods
    offsets = [(i - (len(methods) - 1) / 2) * width for i in range(len(methods))]
    first = dest[methods[0]]["per_seed"][0][bn]["delete_one"]
    labels = [e["label"] for e in first]
    xs = list(range(len(labels)))
    for m, off in zip(methods, offsets):
        seeds = dest[m]["per_seed"]
        mean = [sum(s[bn]["delete_one"][i]["drop"] for s in seeds) / len(seeds) for i in xs]
        axes[0].bar([x + off for x in xs], mean, width=width, color=_method_color(m), label=m)
    axes[0].set_xticks(xs, labels, rotation=90 if len(labels) > 12 else 0, fontsize=6 if len(labels) > 12 else 8)
    axes[0].set_xlabel("deleted block (stage.block)")
    axes[0].set_ylabel("top-1 drop (points)")
    axes[0].set_title("(a) delete one block" + (" (mean over seeds)" if several else ""), fontsize=8)
    axes[0].legend(fontsize=6)
    for ax, kind, title in (
        (axes[1], "delete_k", "(b) delete k blocks"),
        (axes[2], "permute_k", "(c) permute k blocks in a stage"),
    ):
        ks = sorted({e["k"] for e in dest[methods[0]]["per_seed"][0][bn][kind]})
        if not ks:  # e.g. --max-k 1 permutes nothing: an empty panel that says so
            ax.text(0.5, 0.5, "none measured", ha="center", va="center", transform=ax.transAxes, fontsize=8)
            ax.set_title(title, fontsize=8)
            continue
        for m, off in zip(methods, offsets):
            data = [[e["drop"] for s in dest[m]["per_seed"] for e in s[bn][kind] if e["k"] == k] for k in ks]
            box = ax.boxplot(
                data, positions=[k + off for k in ks], widths=width * 0.9, patch_artist=True, manage_ticks=False
            )
            for patch in box["boxes"]:
                patch.set_facecolor(_method_color(m))
                patch.set_alpha(0.55)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_ylabel("top-1 drop (points)")
        ax.set_title(title + (" (all seeds)" if several else ""), fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Destruction at test time ({BN_TITLES[bn]})", fontsize=9)
    return save_figure(fig, folder, f"{prefix}destruction_{bn}.png")


def _method_color(label: str) -> str:
    """A method's colour from a label such as "ST s1" or "stochastic depth s0"."""
    return next((c for name, c in COLORS.items() if label == name or label.startswith(name + " ")), "gray")


def kl_figure(kl: dict, folder: str) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in ("CT", "ST"):
        runs = kl[m]
        epochs = [r["epoch"] for r in runs[0]]
        for field, style in (("median", "-"), ("max", "--")):
            ys = [sum(run[i][field] for run in runs) / len(runs) for i in range(len(epochs))]
            ax.plot(epochs, ys, style, color=COLORS[m], label=f"{m} {field}")
        lo = [sum(run[i]["q1"] for run in runs) / len(runs) for i in range(len(epochs))]
        hi = [sum(run[i]["q3"] for run in runs) / len(runs) for i in range(len(epochs))]
        ax.fill_between(epochs, lo, hi, color=COLORS[m], alpha=0.2, label=f"{m} quartiles")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("epoch")
    ax.set_ylabel("KL(full network ‖ sub-network) (nats)")
    ax.set_title(
        "KL between resnet20 and its 26 sub-networks during training\n(held-out batch, mean over seeds)", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, folder, "kl_tracking.png")


def sampling_rules_figure(rules: dict, folder: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (bn, stats) in zip(axes, rules.items()):
        names = list(stats)
        xs = range(len(names))
        ax.bar(
            [x - 0.2 for x in xs],
            [stats[n]["main"]["mean"] for n in names],
            0.4,
            yerr=[stats[n]["main"]["std"] for n in names],
            color=COLORS["ST"],
            label="full network",
            capsize=3,
        )
        ax.bar(
            [x + 0.2 for x in xs],
            [stats[n]["mean"]["mean"] for n in names],
            0.4,
            yerr=[stats[n]["mean"]["std"] for n in names],
            color=COLORS["ST"],
            alpha=0.45,
            label="mean of 27 ordered sub-networks",
            capsize=3,
        )
        ax.set_xticks(list(xs), names)
        ax.set_xlabel("ST sampling rule")
        ax.set_title(BN_TITLES[bn], fontsize=10)
        lowest = min(min(stats[n]["mean"]["mean"], stats[n]["main"]["mean"]) for n in names)
        ax.set_ylim(max(0, lowest - 10), 100)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Sampling rules at the same budget (resnet20, digits, mean ± std over seeds)")
    return save_figure(fig, folder, "sampling_rules.png")


def run_figure(results: dict, folder: str) -> str:
    """One run: every sub-network's top-1 in each BN protocol, the full network as a line; a
    large space (over 40 sub-networks) as one box per depth (blocks kept) instead of one tick
    per sub-network."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    color = COLORS.get(METHOD_NAMES.get(results["mode"], ""), COLORS["individual"])
    large = results["subnets"]["count"] > 40
    protocols = list(results["by_bn"])
    for i, bn in enumerate(protocols):
        # one marker per protocol: with one colour per method, the marker tells the protocols apart
        marker, solid = {"running": ("x", False), "subnet": ("^", True)}.get(bn, ("o", True))
        per = results["by_bn"][bn]["subnets"]["per_subnet"]
        if large:
            _depth_boxes(ax, per, i, len(protocols), BN_STYLES.get(bn, ("", "gray"))[1])
        else:
            ax.plot(range(len(per)), [p["top1"] for p in per], marker, color=color, alpha=0.9 if solid else 0.5,
                    label=f"sub-networks, {bn} BN")  # fmt: skip
        ax.axhline(results["by_bn"][bn]["main"]["top1"], color=BN_STYLES.get(bn, ("", color))[1],
                   linestyle="-" if solid else ":", label=f"full network, {bn} BN")  # fmt: skip
    if large:
        ax.set_xlabel("blocks kept (boxes, left to right: " + ", ".join(protocols) + " BN)")
    else:
        per = results["subnets"]["per_subnet"]
        ax.set_xticks(range(len(per)), [p["spec"] for p in per], rotation=90, fontsize=6)
        ax.set_xlabel("sub-network")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(
        f"{results['mode'].upper()} {results['model']} on {results['dataset']}, seed {results['seed']}", fontsize=9
    )
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=6, loc="lower center", ncol=3, frameon=False)
    return save_figure(fig, folder, "subnets.png", legend_strip=0.16)


def _depth_boxes(ax, per: list[dict], index: int, count: int, color: str) -> None:
    """One box per number of kept blocks, shifted by ``index`` of ``count`` protocols."""
    groups: dict[int, list[float]] = {}
    for p in per:
        groups.setdefault(len(parse_spec(p["spec"]).flat()), []).append(p["top1"])
    depths = sorted(groups)
    width = 0.8 / count
    box = ax.boxplot([groups[d] for d in depths], positions=[d + (index - (count - 1) / 2) * width for d in depths],
                     widths=width * 0.9, patch_artist=True, manage_ticks=False, showfliers=False)  # fmt: skip
    for patch in box["boxes"]:
        patch.set_facecolor(color)
        patch.set_alpha(0.5)
    ax.set_xticks(depths, [str(d) for d in depths], fontsize=7)


def _destruction_modes(dest: dict) -> list[str]:
    """The BN protocols a destruction analysis holds (legacy names included)."""
    first = next(iter(dest.values()))["per_seed"][0]
    return [bn for bn in BN_TITLES if bn in first]


def study_figures(a: dict, folder: str) -> list[str]:
    return [
        loafing_figure(a["loafing"], folder),
        loafing_depth_figure(a["loafing_depth"], folder),
        subnet_distribution_figure(a["subnet_values"], a["subnet_stats"], folder),
        space_size_figure(a["subnet_stats"], folder),
        *(destruction_figure(a["destruction"], bn, folder) for bn in _destruction_modes(a["destruction"])),
        kl_figure(a["kl_tracking"], folder),
        sampling_rules_figure(a["sampling_rules"], folder),
    ]
