"""The claims table: each claim of the paper, what we measured (mean ± std over seeds), and
whether the measurement supports it, partly supports it, or contradicts it.

Verdict rule for a paired comparison over seeds: "supports" when the difference has the
claimed sign in every seed, "partly" when only the mean has it, "contradicts" otherwise."""

from __future__ import annotations

from .stats import fmt, mean_std, quantiles

SUPPORTS, PARTLY, CONTRADICTS = "supports", "partly supports", "contradicts"
NOT_MEASURED = "not measured (needs deeper networks: run without --quick)"


def paired_verdict(diffs: list[float], margin: float = 0.0) -> str:
    """Claim: the differences are > margin."""
    if all(d > margin for d in diffs):
        return SUPPORTS
    if sum(diffs) / len(diffs) > margin:
        return PARTLY
    return CONTRADICTS


def _pm(ms: dict, unit: str = "") -> str:
    return fmt(ms) + unit


def _diffs(a: dict, b: dict) -> list[float]:
    return [x - y for x, y in zip(a["values"], b["values"])]


def _claim(claim: str, paper: str, measured: str, verdict: str) -> dict:
    return {"claim": claim, "paper": paper, "measured": measured, "verdict": verdict}


def claims_table(a: dict) -> list[dict]:
    """One row per claim: per BN mode loafing, sub-networks, destruction, sampling and Eq. 4;
    then the KL through training and the cost (``a``: the study's analyses)."""
    rows = []
    for bn in a["subnet_stats"]:
        tag = f" [{bn} BN]"
        rows += _loafing_claims(a, bn, tag)
        rows += _subnetwork_claims(a["subnet_stats"][bn], tag)
        rows += _destruction_claims(a["destruction"], bn, tag)
        rows.append(_sampling_claim(a["sampling_rules"][bn], tag))
        rows.append(_eq4_claim(a["eq4_train"][bn] if "eq4_train" in a else a["eq4"][bn], tag))
    rows.append(_kl_claim(a["kl_tracking"]))
    rows.append(_cost_claim(a["train_seconds"]))
    return rows


def _loafing_claims(a: dict, bn: str, tag: str) -> list[dict]:
    """CT's shallow sub-network loafs, ST cures it, deeper networks loaf more."""
    shallow = {r["spec"]: r for r in a["loafing"][bn]}["1,1,1"]
    alone_minus_ct = _diffs(shallow["individual"], shallow["ct"])
    rows = [
        _claim(
            "CT sub-networks loaf: 1,1,1 inside CT scores below the same network trained alone" + tag,
            "Fig. 1, 4",
            f"alone {_pm(shallow['individual'])} vs inside CT {_pm(shallow['ct'])} (gap "
            f"{_pm(mean_std(alone_minus_ct))})",
            paired_verdict(alone_minus_ct),
        ),
        _claim(
            "ST cures loafing: 1,1,1 inside ST scores at least as well as trained alone" + tag,
            "Fig. 4(c)",
            f"inside ST {_pm(shallow['st'])} vs alone {_pm(shallow['individual'])}",
            paired_verdict(_diffs(shallow["st"], shallow["individual"]), margin=-0.5),
        ),
    ]
    gaps = [
        (row["model"], mean_std(_diffs(row["1,1,1"]["alone"], row["1,1,1"]["ct"]))) for row in a["loafing_depth"][bn]
    ]
    means = [g["mean"] for _, g in gaps]
    if len(means) < 2:
        verdict = NOT_MEASURED
    else:
        verdict = (
            SUPPORTS
            if all(x < y for x, y in zip(means, means[1:]))
            else PARTLY
            if means[-1] > means[0]
            else CONTRADICTS
        )
    rows.append(
        _claim(
            "Deeper networks loaf more (gap of 1,1,1 alone vs inside CT grows with depth)" + tag,
            "Fig. 1",
            ", ".join(f"{m}: {_pm(g)}" for m, g in gaps),
            verdict,
        )
    )
    return rows


def _subnetwork_claims(stats: dict, tag: str) -> list[dict]:
    """ST against CT on the full network and on all sub-networks; space of 8 against 27."""
    ct, st8, st = stats["CT (0 sub-networks)"], stats["ST, space of 8"], stats["ST, space of 27"]
    d = _diffs(st["main"], ct["main"])
    d_mean, d_std = _diffs(st["mean"], ct["mean"]), _diffs(ct["std"], st["std"])
    all_better = (
        SUPPORTS
        if paired_verdict(d_mean) == SUPPORTS and paired_verdict(d_std) == SUPPORTS
        else PARTLY
        if sum(d_mean) > 0
        else CONTRADICTS
    )
    return [
        _claim(
            "ST improves the full network over CT" + tag,
            "Table 1 (+1.2 to +4.4 points)",
            f"CT {_pm(ct['main'])}, ST {_pm(st['main'])} (paired diff {_pm(mean_std(d))})",
            paired_verdict(d),
        ),
        _claim(
            "ST improves all sub-networks: higher mean, lower spread, better worst" + tag,
            "Table 1, Fig. 5",
            f"mean CT {_pm(ct['mean'])} / ST {_pm(st['mean'])}; std CT {_pm(ct['std'])} / ST "
            f"{_pm(st['std'])}; worst CT {_pm(ct['min'])} / ST {_pm(st['min'])}",
            all_better,
        ),
        _claim(
            "A larger sampling space gives better sub-networks (8 vs 27 sub-networks)" + tag,
            "Fig. 4, 5",
            f"mean top-1, space 8: {_pm(st8['mean'])}, space 27: {_pm(st['mean'])}; std "
            f"{_pm(st8['std'])} vs {_pm(st['std'])}",
            paired_verdict(_diffs(st["mean"], st8["mean"])),
        ),
    ]


def _sampling_claim(samplers: dict, tag: str) -> dict:
    """Ordered sampling against stochastic and raw sampling, on the full network."""
    d1 = _diffs(samplers["ordered"]["main"], samplers["stochastic"]["main"])
    d2 = _diffs(samplers["ordered"]["main"], samplers["raw"]["main"])
    verdict = (
        SUPPORTS
        if paired_verdict(d1) == SUPPORTS and paired_verdict(d2) == SUPPORTS
        else PARTLY
        if sum(d1) > 0 and sum(d2) > 0
        else CONTRADICTS
    )
    return _claim(
        "Ordered sampling beats stochastic and raw sampling (full network)" + tag,
        "Sec. 3.3 (+0.58 and +5.77 points)",
        ", ".join(f"{k}: {_pm(v['main'])}" for k, v in samplers.items()),
        verdict,
    )


def _eq4_claim(eq: dict, tag: str) -> dict:
    """The bound of Eq. 4 holds for every CT and ST run (on the training images, where the
    paper states it, when the study measured them there)."""
    holds = all(e["holds"] for m in ("CT", "ST") for e in eq[m])
    return _claim(
        "Eq. 4: |CE_main − E[CE_sub]| < (ε2 + log N)·e^ε1 + ε1" + tag,
        "Sec. 5",
        "; ".join(
            f"{m}: gap {_pm(mean_std([e['gap'] for e in eq[m]]))} < bound {_pm(mean_std([e['bound'] for e in eq[m]]))}"
            for m in ("CT", "ST")
        ),
        SUPPORTS if holds else CONTRADICTS,
    )


def _cost_claim(train_seconds: dict) -> dict:
    """ST's training time over CT's, seed by seed."""
    ratio = mean_std([s / c for s, c in zip(train_seconds["ST"]["values"], train_seconds["CT"]["values"])])
    return _claim(
        "ST costs about 1.4x the compute of CT",
        "Sec. 8",
        f"training time ST/CT = {_pm(ratio, 'x')} (1 sub-network per step, this CPU)",
        SUPPORTS if ratio["mean"] <= 1.6 else PARTLY,
    )


def _destruction_claims(dest: dict, bn: str, tag: str) -> list[dict]:
    """ST's worst drop against CT's when blocks are deleted or permuted at test time."""

    def worst_per_seed(method: str, kind: str) -> list[float]:
        return [max(e["drop"] for e in seed[bn][kind]) for seed in dest[method]["per_seed"]]

    rows = []
    for kind, what, paper_bound in (
        ("delete_one", "deleting one block", 1.0),
        ("delete_k", "deleting up to 4 blocks", 3.0),
        ("permute_k", "permuting blocks within a stage", 1.0),
    ):
        ct_w, st_w = worst_per_seed("CT", kind), worst_per_seed("ST", kind)
        ok = paired_verdict([c - s for c, s in zip(ct_w, st_w)])
        rows.append(
            _claim(
                f"ST is more robust to {what}: smaller worst drop than CT, and at most {paper_bound:g} point(s)" + tag,
                "Fig. 6",
                f"worst drop CT {_pm(mean_std(ct_w))}, ST {_pm(mean_std(st_w))}",
                ok if ok != SUPPORTS or max(st_w) <= paper_bound else PARTLY,
            )
        )
    return rows


def _kl_claim(kl: dict) -> dict:
    """CT's largest KL to a sub-network grows through training; ST's stays small."""

    def trend(runs: list[list[dict]]) -> tuple[dict, dict]:
        first = mean_std([quantiles(list(r[1]["values"].values()))["max"] for r in runs])  # after epoch 1
        last = mean_std([r[-1]["max"] for r in runs])
        return first, last

    (ct_first, ct_last), (st_first, st_last) = trend(kl["CT"]), trend(kl["ST"])
    grows = ct_last["mean"] > ct_first["mean"]
    small = all(v <= 0.25 for v in st_last["values"])
    return _claim(
        "CT's KL to its sub-networks grows through training; ST's stays small (max ≤ 0.25)",
        "Fig. 7",
        f"max KL after epoch 1 → last: CT {_pm(ct_first)} → {_pm(ct_last)}, ST {_pm(st_first)} → {_pm(st_last)}",
        SUPPORTS if grows and small else PARTLY if grows or small else CONTRADICTS,
    )
