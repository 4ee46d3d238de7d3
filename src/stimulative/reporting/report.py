"""`stimulative report DIR...`: report.md and a single-file report.html (figures
embedded) from finished runs, studies and sweeps. The document is built once as a list of blocks
and rendered to both formats."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable

from ..analysis.evidence import cells_table, differences_table
from ..analysis.stats import fmt
from ..runtime.files import read_json, write_text
from .compare import comparison_figures, comparison_table, load_runs, seed_means_table
from .evidence_text import conclusion_markdown
from .figures import BN_TITLES, run_figure
from .markdown import markdown_table

BN_EXPLAINED = (
    "Every accuracy names the BatchNorm statistics it was measured with (the BN protocol). *full* "
    "(the paper's): the full network's statistics are re-estimated on up to 2,000 training images and "
    "every sub-network uses them. *subnet*: each sub-network's statistics are re-estimated on those "
    "images, so it is judged with statistics of its own activations (what deploying one sub-network "
    "does). *running*: the statistics accumulated during training. A sub-network's activations differ "
    "from the full network's, so under full and running part of what looks like loafing is mismatched "
    "normalisation; subnet removes that part and leaves what the weights themselves can do. Compare "
    "methods within one protocol, not across protocols."
)


class Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("img", path, caption))

    def markdown(self, base: str) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append(markdown_table(b[1], b[2]))
            else:
                out.append(f"![{b[2]}]({os.path.relpath(b[1], base)})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:90%}"
            "img{max-width:100%}figcaption{font-style:italic;color:#444}</style></head><body>"
        ]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1]).replace('*', '')}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in b[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b[2])
                out.append(f"<table><tr>{head}</tr>{body}</table>")
            else:
                with open(b[1], "rb") as fh:
                    raw = fh.read()
                data = base64.b64encode(raw).decode()
                out.append(
                    f"<figure><img src='data:image/png;base64,{data}' {_display_width(raw)}"
                    f"alt='{html.escape(b[2])}'><figcaption>{html.escape(b[2])}</figcaption></figure>"
                )
        return "\n".join(out) + "</body></html>\n"


def _display_width(png: bytes) -> str:
    """A width attribute showing a figure near its paper size (figures are saved at 200 dpi;
    a 7-inch double column is shown 770 pixels wide), so a single-column figure is not blown
    up to the page width; empty for a file that is not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return ""
    return f"width='{int.from_bytes(png[16:20], 'big') * 110 // 200}' "


def _run_section(doc: Doc, run_dir: str) -> None:
    r = read_json(os.path.join(run_dir, "results.json"))
    doc.h(2, f"Run {run_dir}: {r['mode'].upper()} {r['model']} on {r['dataset']} (seed {r['seed']})")
    doc.p(
        f"{r['epochs']} epochs, {r['train_seconds']:.0f} s of training; {r['subnets']['count']} sub-networks evaluated."
    )
    rows = []
    for bn, x in r["by_bn"].items():
        s = x["subnets"]
        rows.append(
            [
                bn,
                f"{x['main']['top1']:.2f}",
                str(s["count"]),
                f"{s['mean']:.2f}",
                f"{s['std']:.2f}",
                f"{s['min']:.2f}",
                f"{s['max']:.2f}",
            ]
        )
    doc.table(["BN statistics", "full top-1", "sub-networks", "mean", "std", "min", "max"], rows)
    doc.image(run_figure(r, os.path.join(run_dir, "figures")), "Top-1 of every evaluated sub-network, each BN protocol")


def _study_section(doc: Doc, study_dir: str) -> None:
    a = read_json(os.path.join(study_dir, "analyses", "study.json"))
    fig = lambda name: os.path.join(study_dir, "figures", name)  # noqa: E731
    doc.h(2, f"Study {study_dir}: resnet20 on digits, seeds {a['seeds']}")
    doc.h(3, "Claims of the paper, as measured here")
    doc.p(
        "Mean ± std over seeds. Verdict: supports when the difference has the claimed sign in every seed, partly "
        "when only on average, contradicts otherwise."
    )
    doc.table(
        ["claim", "paper", "measured", "verdict"],
        [[c["claim"], c["paper"], c["measured"], c["verdict"]] for c in a["claims"]],
    )
    doc.h(3, "Two ways to normalise a sub-network")
    doc.p(BN_EXPLAINED)
    doc.p(_bn_story(a["subnet_stats"]))
    _loafing_part(doc, a, fig)
    _subnet_stats_part(doc, a, fig)
    doc.h(3, "3. Destruction at test time")
    doc.p("Top-1 drop against the intact network when blocks are deleted or permuted, without retraining.")
    for bn in ("full", "subnet", "recalibrated"):
        if os.path.exists(fig(f"destruction_{bn}.png")):
            doc.image(fig(f"destruction_{bn}.png"), f"Destruction, {BN_TITLES[bn]}")
    doc.image(fig("destruction_running.png"), "Destruction, full network's running BN statistics")
    doc.h(3, "4. KL between the network and its sub-networks through training")
    doc.image(fig("kl_tracking.png"), "KL(full ‖ sub) over all sub-networks, each epoch")
    _sampling_rules_part(doc, a, fig)
    _bound_part(doc, a)


def _loafing_part(doc: Doc, a: dict, fig: Callable[[str], str]) -> None:
    """Sub-networks inside CT and ST against the same networks trained alone."""
    doc.h(3, "1. Network loafing")
    for bn, rows in a["loafing"].items():
        doc.table(
            [f"sub-network ({bn} BN)", "inside CT", "inside ST", "trained alone", "loafing gap (alone − CT)"],
            [[r["spec"], fmt(r["ct"]), fmt(r["st"]), fmt(r["individual"]), f"{r['ct_gap']:.2f}"] for r in rows],
        )
    doc.image(fig("loafing.png"), "Sub-networks inside CT and ST networks versus trained alone")
    doc.image(fig("loafing_depth.png"), "The same sub-networks inside deeper networks")


def _subnet_stats_part(doc: Doc, a: dict, fig: Callable[[str], str]) -> None:
    """Max, mean, std and min of all sub-networks, per training method."""
    doc.h(3, "2. Statistics of all sub-networks")
    for bn, stats in a["subnet_stats"].items():
        doc.table(
            [f"method ({bn} BN)", "full top-1", "sub-networks", "mean", "std", "min", "max"],
            [
                [n, fmt(s["main"]), str(s["count"]), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"])]
                for n, s in stats.items()
            ],
        )
    doc.image(fig("subnet_distribution.png"), "Distribution of all sub-networks' top-1, CT vs ST")
    doc.image(fig("space_size.png"), "Max, mean and std of all sub-networks versus sampling-space size")


def _sampling_rules_part(doc: Doc, a: dict, fig: Callable[[str], str]) -> None:
    """Ordered, stochastic and raw sampling at the same budget."""
    doc.h(3, "5. Sampling rules")
    for bn, stats in a["sampling_rules"].items():
        doc.table(
            [f"sampler ({bn} BN)", "full top-1", "sub-network mean", "std", "worst"],
            [[n, fmt(s["main"]), fmt(s["mean"]), fmt(s["std"]), fmt(s["min"])] for n, s in stats.items()],
        )
    doc.image(fig("sampling_rules.png"), "Ordered, stochastic and raw sampling at the same budget")


def _bound_part(doc: Doc, a: dict) -> None:
    """Eq. 4's bound against the measured gap, per BN mode, method and seed."""
    doc.h(3, "6. The bound of Eq. 4")
    rows = []
    splits = [("train", a["eq4_train"])] if "eq4_train" in a else []
    for split, eq in [*splits, ("test", a["eq4"])]:
        rows += _bound_rows(split, eq, a["seeds"])
    header = [
        "split",
        "BN",
        "method",
        "seed",
        "ε1 = CE_main",
        "ε2 = mean KL",
        "|CE_main − E[CE_sub]|",
        "bound",
        "holds",
    ]
    doc.table(header, rows)
    doc.p("The bound is loose: its (ε2 + log N)·e^ε1 term is at least log 10 ≈ 2.3 nats, far above the measured gaps.")


def _bound_rows(split: str, eq: dict, seeds: list) -> list[list[str]]:
    rows = []
    for bn, methods in eq.items():
        for m, per_seed in methods.items():
            for seed, e in zip(seeds, per_seed):
                rows.append(
                    [
                        split,
                        bn,
                        m,
                        str(seed),
                        f"{e['eps1']:.4f}",
                        f"{e['eps2']:.4f}",
                        f"{e['gap']:.4f}",
                        f"{e['bound']:.4f}",
                        "yes" if e["holds"] else "no",
                    ]
                )
    return rows


def _sweep_section(doc: Doc, sweep_dir: str) -> None:
    ev = read_json(os.path.join(sweep_dir, "evidence.json"))
    doc.h(2, f"Sweep {sweep_dir}: when does ST improve the full network?")
    for paragraph in conclusion_markdown(ev).split("\n\n"):
        doc.p(paragraph.strip())
    doc.h(3, "Default configurations")
    doc.table(*cells_table(ev))
    doc.h(3, "Every cell minus CT, full network")
    doc.table(*differences_table(ev))
    for rel in ev.get("figures") or []:
        name = os.path.splitext(os.path.basename(rel))[0].replace("evidence_", "").replace("_", " ")
        doc.image(os.path.join(sweep_dir, rel), name)


def _bn_story(stats: dict) -> str:
    """The two BN modes side by side, in words, from the measured statistics."""
    ct = {bn: stats[bn]["CT (0 sub-networks)"] for bn in stats}
    st = {bn: stats[bn]["ST, space of 27"] for bn in stats}
    run, rec = "running", "subnet" if "subnet" in stats else "recalibrated"
    return (
        f"Measured here: with the full network's running statistics, CT's sub-networks average "
        f"{ct[run]['mean']['mean']:.1f} % (worst {ct[run]['min']['mean']:.1f} %); re-estimated per sub-network, "
        f"{ct[rec]['mean']['mean']:.1f} % (worst {ct[rec]['min']['mean']:.1f} %), so "
        f"{ct[rec]['mean']['mean'] - ct[run]['mean']['mean']:.1f} points of CT's apparent loafing were "
        f"normalisation. ST's sub-networks average {st[run]['mean']['mean']:.1f} % and "
        f"{st[rec]['mean']['mean']:.1f} %; ST's spread is {st[rec]['std']['mean']:.2f} against CT's "
        f"{ct[rec]['std']['mean']:.2f} points re-estimated ({st[run]['std']['mean']:.2f} against "
        f"{ct[run]['std']['mean']:.2f} with running statistics), and its worst sub-network is "
        f"{st[rec]['min']['mean'] - ct[rec]['min']['mean']:+.1f} points better than CT's, re-estimated."
    )


def _comparison_section(doc: Doc, run_dirs: list[str], folder: str) -> None:
    """Runs given together, side by side: one table, one overlaid figure per question."""
    runs = load_runs(run_dirs)
    doc.h(2, f"Comparison of {len(runs)} runs")
    doc.p(
        "Top-1 (%) of the full network and mean, std and worst (min) of the evaluated sub-networks, per BN "
        "protocol (full: the full network's statistics; subnet: re-estimated per sub-network; running: as trained)."
    )
    doc.table(*comparison_table(runs))
    means = seed_means_table(runs)
    if means:
        doc.h(3, "Mean ± std over seeds")
        doc.table(*means)
    for path, caption in comparison_figures(runs, folder):
        doc.image(path, caption)


def write_report(dirs: list[str], out: str = "report.md") -> str:
    """Write ``out`` (Markdown) and the same report as single-file HTML beside it; finished
    runs given together are also compared in one table and overlaid figures."""
    doc = Doc()
    doc.h(1, "stimulative report")
    run_dirs = [d for d in dirs if _kind(d) == "run"]
    if len(run_dirs) > 1:
        _comparison_section(doc, run_dirs, os.path.join(os.path.dirname(os.path.abspath(out)), "figures"))
    for d in dirs:
        if os.path.exists(os.path.join(d, "analyses", "study.json")):
            _study_section(doc, d)
        elif os.path.exists(os.path.join(d, "evidence.json")):
            _sweep_section(doc, d)
        elif os.path.exists(os.path.join(d, "results.json")):
            _run_section(doc, d)
        else:
            raise ValueError(
                f"{d!r} is neither a finished run (results.json), a study (analyses/study.json) nor a sweep "
                "(evidence.json)"
            )
    write_text(out, doc.markdown(os.path.dirname(os.path.abspath(out))))
    write_text(os.path.splitext(out)[0] + ".html", doc.html("stimulative report"))
    return out


def _kind(folder: str) -> str:
    if os.path.exists(os.path.join(folder, "analyses", "study.json")):
        return "study"
    if os.path.exists(os.path.join(folder, "evidence.json")):
        return "sweep"
    return "run" if os.path.exists(os.path.join(folder, "results.json")) else "unknown"
