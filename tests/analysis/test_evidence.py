"""The sweep's statistics: paired differences to CT with t intervals, Holm's adjustment,
pooled comparisons, the written conclusion (numbers from the JSON), and the FLOPs count."""

import re

import pytest

from stimulative.analysis.evidence import (
    analyse_cells,
    conclusion_markdown,
    holm,
    t_interval,
    verdict_of,
)
from stimulative.studies.sweep import ct_cell, sd_cell, st_cell


def test_t_interval_matches_the_textbook():
    r = t_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / 3**0.5  # t(0.975, 2) * s / sqrt(n)
    assert r["ci95"] == pytest.approx([2 - half, 2 + half])
    assert r["p"] == pytest.approx(0.0742, abs=1e-3)  # t = 3.46 on 2 degrees of freedom
    assert t_interval([1.0, 1.0])["p"] == 0.0 and t_interval([0.0, 0.0])["p"] == 1.0
    with pytest.raises(ValueError):
        t_interval([1.0])


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([0.9, 0.9]) == [1.0, 1.0]
    assert (
        verdict_of([0.1, 2]) == "better"
        and verdict_of([-2, -0.1]) == "worse"
        and verdict_of([-1, 1]) == "no clear difference"
    )


def _results(full: float, sub_mean: float, worst: float, seconds: float = 10.0) -> dict:
    by_bn = {
        bn: {"main": {"top1": full}, "subnets": {"mean": sub_mean, "min": worst, "std": 3.0}}
        for bn in ("recalibrated", "running")
    }
    return {"by_bn": by_bn, "train_seconds": seconds}


def _cell(cell, values, flops=1e12):
    runs = [{"seed": s, "results": _results(*v), "destruction": None} for s, v in enumerate(values)]
    return {
        **cell.describe(),
        "runs": runs,
        "flops": {"per_step": flops / 100, "steps": 100, "total": flops, "samples": 1},
    }


def _evidence():
    cells = [
        _cell(ct_cell(0.1, 30), [(90, 70, 40), (92, 71, 42), (91, 69, 41)]),
        # ST: full network 2 points better in every seed (+ a little noise), sub-networks far better
        _cell(st_cell(0.1, 30, core=True), [(92, 85, 70, 14), (94.5, 86, 71, 14), (92.5, 84, 69, 14)], 1.4e12),
        _cell(st_cell(0.1, 30, kl_weight=2.0), [(89, 84, 70), (91, 85, 72), (90, 83, 71)], 1.4e12),  # 1 point worse
        _cell(sd_cell(0.1, 30, 0.5, core=True), [(91, 75, 50), (91, 76, 52), (92, 74, 50)]),
    ]
    return analyse_cells(cells)


def test_paired_comparisons_and_verdict():
    ev = _evidence()
    comps = {(c["cell"], c["baseline"], c["bn"], c["metric"]): c for c in ev["comparisons"]}
    st = comps[("10pct-e30/st-l1-t1-n1-kl", "10pct-e30/ct", "recalibrated", "full")]
    assert st["diffs"] == [2.0, 2.5, 1.5] and st["seeds"] == [0, 1, 2]
    assert st["verdict"] == "better" and st["kind"] == "st vs CT"
    worse = comps[("10pct-e30/st-l2-t1-n1-kl", "10pct-e30/ct", "recalibrated", "full")]
    assert worse["diffs"] == [-1.0, -1.0, -1.0] and worse["verdict"] == "worse"
    assert ("10pct-e30/st-l1-t1-n1-kl", "10pct-e30/sd-p0.5", "recalibrated", "sub_worst") in comps
    v = ev["verdict"]["recalibrated"]
    assert v["st_vs_ct_full"]["cells"] == 2 and v["st_vs_ct_full"]["better"] == 1 and v["st_vs_ct_full"]["worse"] == 1
    assert [c["cell"] for c in v["st_full_better"]] == ["10pct-e30/st-l1-t1-n1-kl"]
    assert v["best_st_per_group"]["10pct-e30"]["cell"] == "10pct-e30/st-l1-t1-n1-kl"
    assert v["cost_vs_ct"]["10pct-e30"]["st"]["flops_ratio"] == pytest.approx(1.4)
    assert v["cost_vs_ct"]["10pct-e30"]["st"]["seconds_ratio"] == pytest.approx(1.4)
    pooled = v["pooled"]["ST vs CT | all | full"]
    assert pooled["n"] == 3 and pooled["mean"] == pytest.approx(2.0)
    cell = ev["cells"]["10pct-e30/ct"]
    assert cell["metrics"]["recalibrated"]["full"]["mean"] == pytest.approx(91.0) and cell["n"] == 3


def test_conclusion_numbers_come_from_the_json():
    ev = _evidence()
    text = conclusion_markdown(ev)
    v = ev["verdict"]["recalibrated"]
    st = v["st_full_better"][0]
    assert f"{st['mean']:+.2f} [{st['ci95'][0]:+.2f}, {st['ci95'][1]:+.2f}]" in text
    assert "Of 2 ST cells, 1 beat CT beyond noise" in text
    pooled = v["pooled"]["ST vs SD | all | sub_worst"]
    assert f"worst sub-network {pooled['mean']:+.2f}" in text
    # every signed number in the text is one of the JSON's numbers, rounded
    numbers = set()

    def collect(x):
        if isinstance(x, dict):
            for y in x.values():
                collect(y)
        elif isinstance(x, list):
            for y in x:
                collect(y)
        elif isinstance(x, float):
            numbers.add(f"{x:+.2f}")

    collect(ev)
    for n in re.findall(r"[+-]\d+\.\d\d", text):
        assert n in numbers, n


def test_pooling_averages_each_seed_over_the_epochs_budgets():
    cells = [
        _cell(ct_cell(0.1, 30), [(90, 70, 40), (90, 70, 40), (90, 70, 40)]),
        _cell(st_cell(0.1, 30, core=True), [(91, 85, 70), (92, 85, 70), (93, 85, 70)]),
        _cell(ct_cell(0.1, 100), [(90, 70, 40), (90, 70, 40)]),
        _cell(st_cell(0.1, 100, core=True), [(93, 85, 70), (94, 85, 70)]),
    ]
    pooled = {(p["kind"], p["split"], p["metric"], p["bn"]): p for p in analyse_cells(cells)["pooled"]}
    p = pooled[("ST vs CT", "10pct", "full", "recalibrated")]
    assert p["n"] == 3 and p["pairs"] == 5 and p["seeds"] == [0, 1, 2]
    assert p["diffs"] == [2.0, 3.0, 3.0]  # seed 0: (1 + 3) / 2, seed 1: (2 + 4) / 2, seed 2: 3
    assert p["groups"] == ["10pct-e100", "10pct-e30"]
