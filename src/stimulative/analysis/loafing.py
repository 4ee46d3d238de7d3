"""Network loafing (paper Fig. 1 and 4): a sub-network's top-1 inside a CT-trained network,
inside an ST-trained network, and trained alone with the same recipe."""

from __future__ import annotations

from .stats import mean_std


def subnet_top1(results: dict, spec: str, bn: str) -> float:
    for entry in results["by_bn"][bn]["subnets"]["per_subnet"]:
        if entry["spec"] == spec:
            return entry["top1"]
    raise KeyError(f"sub-network {spec} was not evaluated in run {results['mode']} seed {results['seed']}")


def loafing_table(ct: list[dict], st: list[dict], individual: dict[str, list[dict]], bn: str) -> list[dict]:
    """Per sub-network: top-1 inside CT, inside ST and alone, each mean ± std over seeds,
    and the loafing gap (alone − inside CT) and ST's gain over alone."""
    rows = []
    for spec, alone_runs in individual.items():
        inside_ct = mean_std([subnet_top1(r, spec, bn) for r in ct])
        inside_st = mean_std([subnet_top1(r, spec, bn) for r in st])
        alone = mean_std([r["by_bn"][bn]["main"]["top1"] for r in alone_runs])
        rows.append(
            {
                "spec": spec,
                "ct": inside_ct,
                "st": inside_st,
                "individual": alone,
                "ct_gap": alone["mean"] - inside_ct["mean"],
                "st_gap": alone["mean"] - inside_st["mean"],
            }
        )
    return rows


def loafing_change(before: dict, after: dict) -> list[str]:
    """Lines comparing the evaluations before and after fine-tuning (results dicts), per BN
    mode: the full network, the sub-networks' top-1 and their mean KL to the full network."""
    lines = [f"{'loafing':<28} {'full top-1':>10} {'subnets mean':>13} {'std':>6} {'min':>7} {'mean KL':>8}"]
    for bn in after.get("by_bn", {after.get("bn", ""): after}):
        for label, r in (("before", before), ("after", after)):
            r = r.get("by_bn", {}).get(bn, r)
            s = r["subnets"]
            kl = sum(p["kl"] for p in s["per_subnet"]) / max(1, len(s["per_subnet"]))
            lines.append(
                f"{label + f' ({bn} BN)':<28} {r['main']['top1']:>10.2f} {s['mean']:>13.2f} {s['std']:>6.2f} "
                f"{s['min']:>7.2f} {kl:>8.4f}"
            )
    return lines
