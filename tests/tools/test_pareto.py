"""`stimulative pareto`: top-1, parameters, FLOPs, latency per sub-network; front; budget."""

from __future__ import annotations

import json

import pytest
import torch

from stimulative.cli import main as cli
from stimulative.core.sampling import SamplingSpace, enumerate_subnets, parse_spec
from stimulative.models import create_model
from stimulative.runtime.measure import count_params
from stimulative.runtime.measure import forward_flops as count_flops
from stimulative.tools.pareto import SubnetModule, pareto_front, pick_under_budget
from stimulative.training.run_dir import RunDir

from ..tiny import tiny_flags

TINY = tiny_flags(epochs=1, batch_size=32, calib_images=64, eval_bn="running")


def test_pareto_front_keeps_the_non_dominated_points():
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    accs = [50.0, 60.0, 55.0, 58.0, 70.0, 40.0]
    assert pareto_front(costs, accs) == [5, 0, 1, 4]


def test_budget_pick():
    rows = [
        {"spec": "1,1", "top1": 80.0, "latency_ms": 1.0, "mflops": 10.0},
        {"spec": "2,1", "top1": 85.0, "latency_ms": 2.0, "mflops": 20.0},
        {"spec": "2,2", "top1": 90.0, "latency_ms": 3.0, "mflops": 30.0},
        {"spec": "1,2", "top1": 85.0, "latency_ms": 1.5, "mflops": 25.0},
    ]
    assert pick_under_budget(rows, budget_ms=2.0)["spec"] == "1,2"  # same top-1, faster
    assert pick_under_budget(rows, budget_mflops=20.0)["spec"] == "2,1"
    assert pick_under_budget(rows, budget_ms=10, budget_mflops=24)["spec"] == "2,1"
    with pytest.raises(ValueError, match="cheapest takes 1 ms"):
        pick_under_budget(rows, budget_ms=0.5)


def test_subnet_module_is_the_subnetwork_and_counts_only_its_blocks():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).eval()
    arch = model.architecture
    x = torch.randn(4, 1, 8, 8)
    for spec in [*list(enumerate_subnets(SamplingSpace.default(arch), arch))[:5], parse_spec("0.2r/0.1/0")]:
        with torch.no_grad():
            assert torch.equal(SubnetModule(model, spec)(x), model(x, spec))
    small, full = SubnetModule(model, parse_spec("1,1,1")), SubnetModule(model, arch.full())
    assert count_params(small) < count_params(full) == count_params(model)
    assert 0 < count_flops(small, x[:1]) < count_flops(full, x[:1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r20"
    assert cli(["train", "--model", "resnet20", "--out", str(out), *TINY]) == 0
    return out


def test_pareto_run_measures_plots_and_picks(run, capsys):
    assert (
        cli(
            [
                "pareto",
                str(run),
                "--max-subnets",
                "6",
                "--repeats",
                "3",
                "--bn",
                "running",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    doc = json.loads((run / "pareto.json").read_text())
    assert (run / "pareto.png").stat().st_size > 0
    rows = doc["subnets"]
    assert len(rows) == 6 and doc["pick"] is None
    model = RunDir(str(run)).load("cpu").model.eval()
    image = torch.zeros(1, *doc["settings"]["input"])
    for r in rows:
        sub = SubnetModule(model, parse_spec(r["spec"]))
        assert r["blocks"] == len(parse_spec(r["spec"]).flat()) and r["params"] == count_params(sub)
        assert r["mflops"] == pytest.approx(count_flops(sub, image) / 1e6)
        assert 0 < r["latency_ms"] == r["latency_min_ms"] <= r["latency_median_ms"]  # --latency-stat min
    # each front climbs in top-1 as the cost grows, and every sub-network is matched or beaten by one on it
    for cost, flag in (("latency_ms", "pareto_latency"), ("mflops", "pareto_flops")):
        front = sorted((r for r in rows if r[flag]), key=lambda r: r[cost])
        assert front and all(a["top1"] < b["top1"] for a, b in zip(front, front[1:]))
        assert all(any(f[cost] <= r[cost] and f["top1"] >= r["top1"] for f in front) for r in rows)
    # a budget reuses the measurements and picks the best under it
    budget = sorted(r["mflops"] for r in rows)[2]
    assert (
        cli(
            [
                "pareto",
                str(run),
                "--max-subnets",
                "6",
                "--repeats",
                "3",
                "--bn",
                "running",
                "--budget-mflops",
                str(budget),
            ]
        )
        == 0
    )
    assert "reusing the measurements" in capsys.readouterr().out
    doc2 = json.loads((run / "pareto.json").read_text())
    assert [r["latency_ms"] for r in doc2["subnets"]] == [r["latency_ms"] for r in rows]
    pick = doc2["pick"]
    assert pick["mflops"] <= budget
    assert pick["top1"] == max(r["top1"] for r in rows if r["mflops"] <= budget)
    # other settings are another measurement: refused unless --force
    assert cli(["pareto", str(run), "--max-subnets", "4", "--repeats", "3", "--bn", "running"]) == 2
    assert "another measurement" in capsys.readouterr().err
    # an impossible budget: a clear error, the measurements kept
    assert (
        cli(["pareto", str(run), "--max-subnets", "6", "--repeats", "3", "--bn", "running", "--budget-ms", "1e-9"]) == 2
    )
    assert "no sub-network fits the budget" in capsys.readouterr().err
    assert len(json.loads((run / "pareto.json").read_text())["subnets"]) == 6


def test_pareto_takes_named_subnets_and_an_out_folder(run, tmp_path):
    # issue 16: --subnets as in evaluate, --out a folder holding pareto.json and pareto.png
    out = tmp_path / "p" / "q"
    argv = ["pareto", str(run), "--subnets", "1,1,1", "3,3,3", "--repeats", "2", "--out", str(out)]
    assert cli([*argv, "--threads", "1", "--no-progress"]) == 0
    doc = json.loads((out / "pareto.json").read_text())
    assert [r["spec"] for r in doc["subnets"]] == ["1,1,1", "3,3,3"]
    assert (out / "pareto.png").stat().st_size > 0
