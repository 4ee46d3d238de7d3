"""The sweep's evidence in words and Markdown tables (``conclusion.md`` and the sweep's part of
the report). Every number is read from the evidence (:mod:`stimulative.analysis.evidence`)."""

from __future__ import annotations

from ..analysis.evidence import cells_table, differences_table
from ..analysis.stats import fmt_interval
from .markdown import markdown_table

MODE_NAMES = {"ct": "CT", "st": "ST", "stochastic-depth": "SD"}


def cells_table_markdown(evidence: dict, bn: str | None = None, defaults_only: bool = True) -> str:
    """:func:`stimulative.analysis.evidence.cells_table` as Markdown."""
    return markdown_table(*cells_table(evidence, bn, defaults_only)) + "\n"


def differences_table_markdown(evidence: dict, bn: str | None = None, metric: str = "full") -> str:
    """:func:`stimulative.analysis.evidence.differences_table` as Markdown."""
    return markdown_table(*differences_table(evidence, bn, metric)) + "\n"


def conclusion_markdown(evidence: dict, bn: str | None = None) -> str:
    """The short written conclusion, for the BN mode ``bn`` (default: the primary one)."""
    bn = bn or evidence["primary_bn"]
    v = evidence["verdict"][bn]
    other = next((b for b in evidence["bn_modes"] if b != bn), None)
    lines = [_scope(evidence, bn), ""]
    if not v["st_vs_ct_full"]["cells"]:
        return (
            "\n".join(lines + ["No ST cell has a CT cell with two or more shared seeds yet: nothing to compare."])
            + "\n"
        )
    lines += _full_network(v, other, evidence["verdict"][other] if other else None)
    lines.append("")
    lines += _subnetworks(v)
    lines.append("")
    lines += _stochastic_depth(v)
    lines.append("")
    lines += _cost(v) + _destruction(v)
    # a section with nothing to say leaves two blank lines: keep one
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _scope(evidence: dict, bn: str) -> str:
    """What was measured: cells, runs, seeds, groups."""
    cells = evidence["cells"]
    runs = sum(c["n"] for c in cells.values())
    seeds = sorted({s for c in cells.values() for s in c["seeds"]})
    groups = sorted(
        {c["group"] for c in cells.values()}, key=lambda g: (g.split("-e")[0] != "10pct", int(g.split("-e")[1]))
    )
    return (
        f"Measured on {len(cells)} cells ({runs} runs of resnet20 on the digits, seeds {seeds}) in the groups "
        f"{', '.join(groups)} "
        f"(split-epochs). Differences are paired by seed, in top-1 points, as mean [95 % t interval]; "
        f"BN statistics {bn} unless said otherwise."
    )


def _full_network(v: dict, other_bn: str | None, vo: dict | None) -> list[str]:
    """ST's full network against CT: counts, the cells beyond noise, the pooled differences."""
    s = v["st_vs_ct_full"]
    lines = [
        f"**ST's full network vs CT.** Of {s['cells']} ST cells, {s['better']} beat CT beyond noise (interval above 0; "
        f"{s['better_after_holm']} after Holm's correction), {s['worse']} were below it beyond noise "
        f"({s['worse_after_holm']} after Holm), "
        f"the rest undecided; the mean of the cells' mean differences is {s['mean_of_means']:+.2f}."
        + (
            f" With {other_bn} BN statistics: {vo['st_vs_ct_full']['better']} better, "
            f"{vo['st_vs_ct_full']['worse']} worse of {vo['st_vs_ct_full']['cells']}."
            if vo
            else ""
        )
    ]
    if v["st_full_better"]:
        lines.append(
            "Cells where ST's full network beats CT beyond noise: "
            + "; ".join(
                f"{c['group']} {c['label']}: {fmt_interval(c)} (Holm p {c['p_holm']:.2f})" for c in v["st_full_better"]
            )
            + "."
        )
    if v["st_full_worse"]:
        lines.append(
            "Cells where it is below CT beyond noise: "
            + "; ".join(f"{c['group']} {c['label']}: {fmt_interval(c)}" for c in v["st_full_worse"])
            + "."
        )
    pooled = v["pooled"]
    parts = []
    for split in ("10pct", "full", "all"):
        key = f"ST vs CT | {split} | full"
        if key in pooled:
            parts.append(
                f"{split} split ({len(pooled[key]['groups'])} epochs budgets, {pooled[key]['n']} seeds, "
                f"{pooled[key]['pairs']} paired runs): {fmt_interval(pooled[key])}"
            )
    if parts:
        lines.append(
            "Default ST (λ 1, T 1, one sub-network) minus CT, pooled over epochs budgets (each seed's differences "
            "averaged over the budgets, "
            "then a t interval over seeds): " + "; ".join(parts) + "."
        )
    return lines


def _subnetworks(v: dict) -> list[str]:
    """ST's sub-networks against CT's, pooled and cell by cell."""
    pooled = v["pooled"]
    parts = []
    for metric, what in (("sub_mean", "mean of all sub-networks"), ("sub_worst", "worst sub-network")):
        key = f"ST vs CT | all | {metric}"
        if key in pooled:
            parts.append(f"{what} {fmt_interval(pooled[key])}")
    if not parts:
        return []
    c1, c2 = v["st_vs_ct_sub_mean"], v["st_vs_ct_sub_worst"]
    return [
        f"**Sub-networks.** Default ST minus CT, pooled: {'; '.join(parts)}. Over all ST cells, the mean "
        "sub-network is better beyond noise in "
        f"{c1['better']} of {c1['cells']} cells, the worst one in {c2['better']} of {c2['cells']}."
    ]


def _stochastic_depth(v: dict) -> list[str]:
    """Stochastic depth against CT, and ST against stochastic depth."""
    pooled = v["pooled"]
    parts = []
    for metric, what in (
        ("full", "full network"),
        ("sub_mean", "mean sub-network"),
        ("sub_worst", "worst sub-network"),
    ):
        key = f"ST vs SD | all | {metric}"
        if key in pooled:
            parts.append(f"{what} {fmt_interval(pooled[key])}")
    if not parts:
        return []
    sd = v["sd_vs_ct_full"]
    key = "SD vs CT | all | full"
    sd_text = (
        f"Stochastic depth (drop rate 0.5) minus CT on the full network, pooled: {fmt_interval(pooled[key])}; "
        if key in pooled
        else ""
    )
    return [
        f"**ST vs stochastic depth.** {sd_text}stochastic-depth cells better than CT beyond noise: "
        f"{sd['better']} of {sd['cells']}, worse: {sd['worse']}. "
        f"Default ST minus default stochastic depth, pooled: {'; '.join(parts)}. Over all ST cells against the "
        "default stochastic depth: "
        f"full network better in {v['st_vs_sd_full']['better']} and worse in {v['st_vs_sd_full']['worse']} of "
        f"{v['st_vs_sd_full']['cells']}; "
        f"mean sub-network better in {v['st_vs_sd_sub_mean']['better']} of {v['st_vs_sd_sub_mean']['cells']}; "
        f"worst sub-network better in {v['st_vs_sd_sub_worst']['better']} of {v['st_vs_sd_sub_worst']['cells']}."
    ]


def _cost(v: dict) -> list[str]:
    """FLOPs and seconds of the default configurations over CT's."""
    cost = v["cost_vs_ct"]
    if not cost:
        return []
    parts = []
    for group, modes in cost.items():
        if "st" in modes:
            parts.append(
                f"{group}: ST {modes['st']['flops_ratio']:.2f}x FLOPs / {modes['st']['seconds_ratio']:.2f}x seconds"
                + (
                    f", SD {modes['stochastic-depth']['flops_ratio']:.2f}x / "
                    f"{modes['stochastic-depth']['seconds_ratio']:.2f}x"
                    if "stochastic-depth" in modes
                    else ""
                )
            )
    return [
        "**Cost** (default configurations against CT; FLOPs counted, seconds as measured, which depend on the "
        "machine's load "
        "while each run trained): " + "; ".join(parts) + "."
    ]


def _destruction(v: dict) -> list[str]:
    """Top-1 drops of the default configurations when blocks are deleted at test time."""
    dest = {g: m for g, m in v["destruction"].items() if len(m) > 1}
    if not dest:
        return []
    parts = [
        f"{g}: "
        + " / ".join(
            f"{MODE_NAMES[m]} {d['delete_one_worst']:.2f} ({d['delete_k_mean']:.2f})"
            for m, d in sorted(modes.items(), key=lambda kv: list(MODE_NAMES).index(kv[0]))
        )
        for g, modes in dest.items()
    ]
    return [
        "",
        "**Destruction at test time** (default configurations; worst top-1 drop when deleting one block, and in "
        "brackets the mean drop "
        "when deleting 1 to 4 blocks, in points): " + "; ".join(parts) + ".",
    ]
