"""The limit of shared evaluation on made-up module seconds, computed here by hand."""

from __future__ import annotations

import pytest
import torch

from stimulative.core.sampling import SubnetSpec
from stimulative.models import create_model
from stimulative.tools import bench_eval_parts
from stimulative.tools.bench_eval_parts import REPEATS, eval_parts, module_seconds, naive_estimate, shared_estimate

# two stages of two blocks; the four ordered sub-networks (1 or 2 blocks per stage)
SPECS = [SubnetSpec.ordered(d) for d in ((1, 1), (1, 2), (2, 1), (2, 2))]
SECONDS = {
    "eval": {"stem": 100.0, "blocks": [[1.0, 2.0], [10.0, 20.0]], "head": 7.0},
    "calibration": {"stem": 200.0, "blocks": [[4.0, 8.0], [40.0, 80.0]], "head": 9.0, "head_bn": 6.0},
}
# per sub-network: 1+10, 1+10+20, 1+2+10, 1+2+10+20 = 11 + 31 + 13 + 33 = 88 (x4 in calibration)
NAIVE_BLOCKS = 88.0
# the walk's tree: 0.0 | 0.0,1.0 | 0.0,1.0,1.1 | 0.0,0.1 | 0.0,0.1,1.0 | 0.0,0.1,1.0,1.1: 1+10+20+2+10+20
SHARED_BLOCKS = 63.0


def test_naive_runs_everything_per_subnetwork() -> None:
    est = naive_estimate(SECONDS, SPECS, "subnet")
    assert est["eval"] == {"stem": 400.0, "blocks": NAIVE_BLOCKS, "head": 28.0}
    assert est["calibration"] == {"stem": 800.0, "blocks": 4 * NAIVE_BLOCKS, "head": 36.0}
    assert set(naive_estimate(SECONDS, SPECS, "running")) == {"eval"}


def test_perfect_walk_runs_the_stem_and_each_prefix_once() -> None:
    est = shared_estimate(SECONDS, SPECS, "subnet")
    assert est["eval"] == {"stem": 100.0, "blocks": SHARED_BLOCKS, "head": 4 * 7.0}
    assert est["calibration"] == {"stem": 200.0, "blocks": 4 * SHARED_BLOCKS, "head": 4 * 6.0}  # up to the last BN
    running = shared_estimate(SECONDS, SPECS, "running")
    assert running == {"eval": {"stem": 100.0, "blocks": SHARED_BLOCKS, "head": 4 * 7.0}}
    # a sub-network listed twice is one leaf of the walk, two runs of the naive way
    twice = SPECS + SPECS[:1]
    assert shared_estimate(SECONDS, twice, "running") == running
    assert naive_estimate(SECONDS, twice, "running")["eval"]["head"] == 5 * 7.0


@pytest.mark.parametrize("bn", ["subnet", "running"])
def test_limit_is_the_measured_naive_over_the_perfect_walk(bn: str) -> None:
    """Here the achieved speedup is naive / shared seconds exactly, so the limit is naive
    over the perfect walk's seconds."""
    perfect = {"subnet": 100 + 63 + 28 + 200 + 4 * 63 + 24, "running": 100 + 63 + 28}[bn]
    measured = {"naive_seconds": 2000.0, "shared_seconds": 1.25 * perfect, "speedup": 2000.0 / (1.25 * perfect)}
    if bn == "subnet":
        measured |= {"naive_calibration_seconds": 1500.0, "shared_calibration_seconds": 1.25 * (200 + 4 * 63 + 24)}
    out = eval_parts(SECONDS, SPECS, measured, {"naive": 12, "shared": 6}, bn)
    assert out["limit"] == pytest.approx(2000.0 / perfect)
    assert out["fraction_of_limit"] == pytest.approx(0.8)  # the walk takes 1.25x the perfect walk's seconds
    assert out["block_run_ratio"] == 2.0 and out["achieved_speedup"] == measured["speedup"]
    overhead = out["overhead"]["shared"]
    assert sum(overhead.values()) == pytest.approx(0.25 * perfect)
    if bn == "subnet":
        assert overhead["calibration"] == pytest.approx(0.25 * (200 + 4 * 63 + 24))
        assert out["overhead"]["naive"]["calibration"] == pytest.approx(1500.0 - (800 + 4 * NAIVE_BLOCKS + 36))
    else:
        assert out["overhead"]["naive"] == {"eval": pytest.approx(2000.0 - (400 + NAIVE_BLOCKS + 28))}


def test_module_seconds_sums_batches(monkeypatch) -> None:
    """With every call taking 1 s, a module's seconds count the batches."""
    monkeypatch.setattr(bench_eval_parts, "wall", lambda fn, device: (fn(), 1.0)[1])
    model = create_model("mobilenetv3_large_cifar", num_classes=10)
    inputs = list(torch.randn(12, 3, 8, 8).split(8))  # chunks of 8 and 4 rows
    out = module_seconds(model, inputs, inputs[:1], torch.device("cpu"))
    ev, cal = out["eval"], out["calibration"]
    assert ev["stem"] == 2.0 and ev["head"] == 2.0 and cal["stem"] == 1.0 and cal["head"] == cal["head_bn"] == 1.0
    assert [len(s) for s in ev["blocks"]] == [len(s) for s in model.stages]
    assert all(t == 2.0 for stage in ev["blocks"] for t in stage)
    assert not model.training
    # a head without BN layers: nothing of it runs in calibration
    resnet = module_seconds(create_model("resnet20", num_classes=10), inputs, inputs, torch.device("cpu"))
    assert resnet["calibration"]["head_bn"] == 0.0


def test_module_seconds_times_each_module_in_full_network_passes(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(bench_eval_parts, "wall", lambda fn, device: (calls.append(1), fn(), 1.0)[2])
    model = create_model("resnet20", num_classes=10)
    module_seconds(model, [torch.randn(2, 3, 8, 8)], [torch.randn(2, 3, 8, 8)], torch.device("cpu"))
    blocks = sum(len(s) for s in model.stages)
    # REPEATS passes in eval mode, REPEATS in calibration mode (the whole head: no BN in it)
    assert len(calls) == REPEATS * 2 * (1 + blocks + 1)


def test_fraction_is_the_perfect_walk_over_the_walk_and_the_limit_follows_the_paired_speedup() -> None:
    """The achieved speedup is a paired median, not naive / shared of the medians: the limit
    scales it by the walk's seconds over the perfect walk's, so achieved / limit is the fraction."""
    perfect = 100 + 63 + 28
    measured = {"naive_seconds": 1000.0, "shared_seconds": 2.0 * perfect, "speedup": 3.0}
    out = eval_parts(SECONDS, SPECS, measured, {"naive": 12, "shared": 6}, "running")
    assert out["fraction_of_limit"] == pytest.approx(0.5) and out["limit"] == pytest.approx(6.0)
