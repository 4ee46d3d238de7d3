"""The claims table: each claim of the paper, what we measured (mean ± std over seeds), and
whether the measurement supports it, partly supports it, or contradicts it.

Verdict rule for a paired comparison over seeds: "supports" when the difference has the
claimed sign in every seed, "partly" when only the mean has it, "contradicts" otherwise."""

from __future__ import annotations

from .stats import mean_std, quantiles

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
    return f"{ms['mean']:.2f} ± {ms['std']:.2f}{unit}"


def _diffs(a: dict, b: dict) -> list[float]:
    return [x - y for x, y in zip(a["values"], b["values"])]


def claims_table(a: dict) -> list[dict]:
    rows = []
    for bn in ("recalibrated", "running"):
        tag = f" [{bn} BN]"
        loaf = {r["spec"]: r for r in a["loafing"][bn]}
        shallow = loaf["1,1,1"]
        d = _diffs(shallow["individual"], shallow["ct"])
        rows.append(
            {
                "claim": "CT sub-networks loaf: 1,1,1 inside CT scores below the same network trained alone" + tag,
                "paper": "Fig. 1, 4",
                "measured": f"alone {_pm(shallow['individual'])} vs inside CT {_pm(shallow['ct'])} (gap "
                f"{_pm(mean_std(d))})",
                "verdict": paired_verdict(d),
            }
        )
        d = _diffs(shallow["st"], shallow["individual"])
        rows.append(
            {
                "claim": "ST cures loafing: 1,1,1 inside ST scores at least as well as trained alone" + tag,
                "paper": "Fig. 4(c)",
                "measured": f"inside ST {_pm(shallow['st'])} vs alone {_pm(shallow['individual'])}",
                "verdict": paired_verdict(d, margin=-0.5),
            }
        )
        gaps = [
            (row["model"], mean_std(_diffs(row["1,1,1"]["alone"], row["1,1,1"]["ct"])))
            for row in a["loafing_depth"][bn]
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
            {
                "claim": "Deeper networks loaf more (gap of 1,1,1 alone vs inside CT grows with depth)" + tag,
                "paper": "Fig. 1",
                "measured": ", ".join(f"{m}: {_pm(g)}" for m, g in gaps),
                "verdict": verdict,
            }
        )
        stats = a["subnet_stats"][bn]
        ct, st8, st = stats["CT (0 sub-networks)"], stats["ST, space of 8"], stats["ST, space of 27"]
        d = _diffs(st["main"], ct["main"])
        rows.append(
            {
                "claim": "ST improves the full network over CT" + tag,
                "paper": "Table 1 (+1.2 to +4.4 points)",
                "measured": f"CT {_pm(ct['main'])}, ST {_pm(st['main'])} (paired diff {_pm(mean_std(d))})",
                "verdict": paired_verdict(d),
            }
        )
        d_mean, d_std = _diffs(st["mean"], ct["mean"]), _diffs(ct["std"], st["std"])
        v = (
            SUPPORTS
            if paired_verdict(d_mean) == SUPPORTS and paired_verdict(d_std) == SUPPORTS
            else PARTLY
            if sum(d_mean) > 0
            else CONTRADICTS
        )
        rows.append(
            {
                "claim": "ST improves all sub-networks: higher mean, lower spread, better worst" + tag,
                "paper": "Table 1, Fig. 5",
                "measured": f"mean CT {_pm(ct['mean'])} / ST {_pm(st['mean'])}; std CT {_pm(ct['std'])} / ST "
                f"{_pm(st['std'])}; worst CT {_pm(ct['min'])} / ST {_pm(st['min'])}",
                "verdict": v,
            }
        )
        d = _diffs(st["mean"], st8["mean"])
        rows.append(
            {
                "claim": "A larger sampling space gives better sub-networks (8 vs 27 sub-networks)" + tag,
                "paper": "Fig. 4, 5",
                "measured": f"mean top-1, space 8: {_pm(st8['mean'])}, space 27: {_pm(st['mean'])}; std "
                f"{_pm(st8['std'])} vs {_pm(st['std'])}",
                "verdict": paired_verdict(d),
            }
        )
        rows += _destruction_claims(a["destruction"], bn, tag)
        samplers = a["sampling_rules"][bn]
        d1 = _diffs(samplers["ordered"]["main"], samplers["stochastic"]["main"])
        d2 = _diffs(samplers["ordered"]["main"], samplers["raw"]["main"])
        v = (
            SUPPORTS
            if paired_verdict(d1) == SUPPORTS and paired_verdict(d2) == SUPPORTS
            else PARTLY
            if sum(d1) > 0 and sum(d2) > 0
            else CONTRADICTS
        )
        rows.append(
            {
                "claim": "Ordered sampling beats stochastic and raw sampling (full network)" + tag,
                "paper": "Sec. 3.3 (+0.58 and +5.77 points)",
                "measured": ", ".join(f"{k}: {_pm(v_['main'])}" for k, v_ in samplers.items()),
                "verdict": v,
            }
        )
        eq = a["eq4"][bn]
        holds = all(e["holds"] for m in ("CT", "ST") for e in eq[m])
        rows.append(
            {
                "claim": "Eq. 4: |CE_main − E[CE_sub]| < ε2 + log N·e^ε1 + ε1" + tag,
                "paper": "Sec. 5",
                "measured": "; ".join(
                    f"{m}: gap {_pm(mean_std([e['gap'] for e in eq[m]]))} < bound "
                    f"{_pm(mean_std([e['bound'] for e in eq[m]]))}"
                    for m in ("CT", "ST")
                ),
                "verdict": SUPPORTS if holds else CONTRADICTS,
            }
        )
    rows.append(_kl_claim(a["kl_tracking"]))
    t = a["train_seconds"]
    ratio = mean_std([s / c for s, c in zip(t["ST"]["values"], t["CT"]["values"])])
    rows.append(
        {
            "claim": "ST costs about 1.4x the compute of CT",
            "paper": "Sec. 8",
            "measured": f"training time ST/CT = {_pm(ratio, 'x')} (1 sub-network per step, this CPU)",
            "verdict": SUPPORTS if ratio["mean"] <= 1.6 else PARTLY,
        }
    )
    return rows


def _destruction_claims(dest: dict, bn: str, tag: str) -> list[dict]:
    def per_seed(method: str, kind: str, stat) -> list[float]:
        return [stat([e["drop"] for e in seed[bn][kind]]) for seed in dest[method]["per_seed"]]

    worst = max
    rows = []
    for kind, what, paper_bound in (
        ("delete_one", "deleting one block", 1.0),
        ("delete_k", "deleting up to 4 blocks", 3.0),
        ("permute_k", "permuting blocks within a stage", 1.0),
    ):
        ct_w, st_w = per_seed("CT", kind, worst), per_seed("ST", kind, worst)
        d = [c - s for c, s in zip(ct_w, st_w)]
        ok = paired_verdict(d)
        verdict = ok if ok != SUPPORTS or max(st_w) <= paper_bound else PARTLY
        rows.append(
            {
                "claim": f"ST is more robust to {what}: smaller worst drop than CT, and at most {paper_bound:g} "
                "point(s)" + tag,
                "paper": "Fig. 6",
                "measured": f"worst drop CT {_pm(mean_std(ct_w))}, ST {_pm(mean_std(st_w))}",
                "verdict": verdict,
            }
        )
    return rows


def _kl_claim(kl: dict) -> dict:
    def trend(runs: list[list[dict]]) -> tuple[dict, dict]:
        first = mean_std([quantiles(list(r[1]["values"].values()))["max"] for r in runs])  # after epoch 1
        last = mean_std([r[-1]["max"] for r in runs])
        return first, last

    (ct_first, ct_last), (st_first, st_last) = trend(kl["CT"]), trend(kl["ST"])
    grows = ct_last["mean"] > ct_first["mean"]
    small = all(v <= 0.25 for v in st_last["values"])
    verdict = SUPPORTS if grows and small else PARTLY if grows or small else CONTRADICTS
    return {
        "claim": "CT's KL to its sub-networks grows through training; ST's stays small (max ≤ 0.25)",
        "paper": "Fig. 7",
        "measured": f"max KL after epoch 1 → last: CT {_pm(ct_first)} → {_pm(ct_last)}, ST {_pm(st_first)} → "
        f"{_pm(st_last)}",
        "verdict": verdict,
    }
