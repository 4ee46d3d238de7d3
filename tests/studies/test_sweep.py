"""`stimulative sweep`: the documented grid and budget selection, and a tiny resumable sweep."""

import json
import os

import pytest

from stimulative.cli import main as cli
from stimulative.studies import digits_design
from stimulative.studies import sweep as sw


def test_ofat_design_covers_every_factor_in_every_group():
    cells = sw.prioritised_cells("ofat")
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids)) == 6 * 14  # (2 splits x 3 epochs) x (CT, 10 ST, 3 SD)
    assert [c.name for c in cells[:3]] == ["ct", "st-l1-t1-n1-kl", "sd-p0.5"]
    assert all(c.core and c.epochs == 30 for c in cells[:6])
    for group in {c.group for c in cells}:
        members = [c for c in cells if c.group == group]
        opts = [dict(c.options) for c in members if c.mode == "st"]
        assert {o["kl_weight"] for o in opts} == set(sw.LAMBDAS)
        assert {o["temperature"] for o in opts} == set(sw.TEMPERATURES)
        assert {o["subnets_per_step"] for o in opts} == set(sw.SUBNETS_PER_STEP)
        assert {o["kl"] for o in opts} == set(sw.KL_KINDS) and {o["sandwich"] for o in opts} == {False, True}
        assert sum(c.mode == "ct" for c in members) == 1
        assert {dict(c.options)["drop_path_rate"] for c in members if c.mode == "stochastic-depth"} == set(
            sw.DROP_PATH_RATES
        )
    assert len(sw.prioritised_cells("full")) == 6 * (1 + 4 * 3 * 3 * 2 * 2 - 1 + 1 + 3)
    with pytest.raises(ValueError, match="unknown design"):
        sw.prioritised_cells("nope")


def test_cells_round_trip_through_their_saved_configuration(tmp_path):
    for cell in sw.prioritised_cells("ofat"):
        cfg = cell.config(0, str(tmp_path)).validate()
        back = sw.cell_of(cfg)
        assert back == cell and back.id == cell.id
    assert sw.st_cell(0.1, 30, kl="kl-direction", sandwich=True).label == "ST λ=1 T=1 n=1 KL- +sandwich"


def test_budget_selects_a_prefix_of_the_priorities_that_fits():
    cells = sw.prioritised_cells("ofat")
    last = []
    for minutes in (1, 5, 10, 30, 60):
        chosen = sw.select_cells(cells, minutes, 3)
        assert sum(sw.estimate_seconds(c) for c in chosen) * 3 <= minutes * 60
        assert set(c.id for c in last) <= set(c.id for c in chosen)  # more time, more cells
        with_ct = {c.group for c in chosen if c.mode == "ct"}
        assert all(c.group in with_ct for c in chosen)  # every cell has its paired baseline
        assert [c.id for c in chosen] == [c.id for c in cells if c in chosen]  # in priority order
        last = chosen
    assert [c.id for c in sw.select_cells(cells, 10, 3)][:6] == [c.id for c in cells[:6]]
    assert sw.select_cells(cells, 0, 3) == cells
    # ST with more sub-networks and the sandwich rule cost more
    e = sw.estimate_seconds
    assert (
        e(sw.st_cell(1.0, 30, subnets_per_step=6))
        > e(sw.st_cell(1.0, 30, sandwich=True))
        > e(sw.st_cell(1.0, 30))
        > e(sw.Cell(1.0, 30, "ct"))
    )


TINY = {"eval_subnets": 4, "calib_images": 64, "eval_bn": "running", "batch_size": 32}


def test_tiny_sweep_writes_each_run_at_once_and_resumes(tmp_path, monkeypatch):
    cells = [sw.ct_cell(0.1, 1), sw.Cell(0.1, 1, "st", tuple(sw.DEFAULT_ST.items()))]  # not core: no destruction (slow)
    monkeypatch.setattr(digits_design, "prioritised_cells", lambda design="ofat": cells)
    out = str(tmp_path / "sweep")
    ev = sw.sweep(out, budget_minutes=0, seeds=(0, 1), progress=False, extra=TINY)
    lines = [json.loads(line) for line in open(os.path.join(out, "sweep.jsonl"))]
    assert [(r["cell"], r["seed"]) for r in lines] == [
        ("10pct-e1/ct", 0),
        ("10pct-e1/ct", 1),
        ("10pct-e1/st-l1-t1-n1-kl", 0),
        ("10pct-e1/st-l1-t1-n1-kl", 1),
    ]
    assert set(ev["cells"]) == {"10pct-e1/ct", "10pct-e1/st-l1-t1-n1-kl"}
    comps = [c for c in ev["comparisons"] if c["bn"] == "running" and c["metric"] == "full"]
    assert len(comps) == 1 and comps[0]["seeds"] == [0, 1]
    assert ev["cells"]["10pct-e1/st-l1-t1-n1-kl"]["flops"]["total"] > ev["cells"]["10pct-e1/ct"]["flops"]["total"] > 0
    for name in ("evidence.json", "conclusion.md", "plan.json", "plans.jsonl", "flops.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.path.exists(os.path.join(out, "figures", "evidence_full_vs_cost_running.png"))
    assert cli(["report", out, "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "when does ST improve the full network" in md and "| 10pct-e1 | ST λ=1 T=1 n=1 KL |" in md
    assert (tmp_path / "report" / "report.html").read_text().count("data:image/png;base64") == len(ev["figures"]) > 0
    # an interrupted sweep: one run lost its results, the log has a partial last line
    kept = os.path.join(sw.run_dir(out, cells[0], 0), "results.json")
    lost = os.path.join(sw.run_dir(out, cells[1], 1), "results.json")
    before = os.path.getmtime(kept)
    os.remove(lost)
    with open(os.path.join(out, "sweep.jsonl"), "a") as fh:
        fh.write('{"cell": "10pct-e1/s')
    sw.sweep(out, budget_minutes=0, seeds=(0, 1), progress=False, extra=TINY)
    assert os.path.exists(lost) and os.path.getmtime(kept) == before  # only the lost run was redone
    assert len(sw._logged_runs(os.path.join(out, "sweep.jsonl"))) == 4


def test_cli_dry_run_and_errors(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(["sweep", "--dry-run", "--budget", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10pct-e30/ct" in text and "estimated" in text and not out.exists()
    assert cli(["sweep", "--dry-run", "--seeds", "0", "--out", str(out)]) != 0
    assert "at least 2 seeds" in capsys.readouterr().err
    assert cli(["sweep", "--dry-run", "--budget", "-1", "--out", str(out)]) != 0


def test_only_restricts_to_matching_cells_with_their_ct():
    cells = sw.restrict(sw.prioritised_cells("ofat"), ("full-e100/st-l2-*", "10pct-e30/sd*"))
    assert [c.id for c in cells] == [
        "10pct-e30/ct",
        "10pct-e30/sd-p0.5",
        "10pct-e30/sd-p0.1",
        "10pct-e30/sd-p0.2",
        "full-e100/ct",
        "full-e100/st-l2-t1-n1-kl",
    ]
    with pytest.raises(ValueError, match="no cell matches"):
        sw.restrict(sw.prioritised_cells("ofat"), ("nothing",))
