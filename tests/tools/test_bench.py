"""The bench's machinery on a tiny workload (no timing assertions: benchmarks are not tests)."""

from __future__ import annotations

import json

import pytest
import torch

from stimulative.cli import main as cli_main
from stimulative.runtime.measure import count_flops, peak_memory
from stimulative.tools.bench import BenchConfig, Sizes, format_table, run_bench

TINY = Sizes(batch=4, image=8, eval_images=6, calib_images=5, draws=2, passes=1)


def test_count_flops_and_peak_memory() -> None:
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16

    # 4 MB + 4 MB held together, then 8 MB after freeing them: the peak is 8 MB, not 16
    def work():
        x, y = torch.empty(1_000_000), torch.empty(1_000_000)
        del x, y
        return torch.empty(2_000_000)

    peak = peak_memory(work, torch.device("cpu"))
    assert 8_000_000 <= peak < 9_000_000


@pytest.fixture(scope="module")
def results() -> dict:
    return run_bench(BenchConfig(models=["resnet20"], sizes={"resnet20": TINY}), log=lambda s: None)


def test_results_hold_the_measurements_and_the_targets(results) -> None:
    e = results["models"]["resnet20"]
    for key in ("st_over_ct_wall", "st_over_ct_flops", "vs_reference_speedup", "wall_over_flops"):
        assert set(e[key]) == {"1", "6"} and all(v > 0 for v in e[key].values())
    assert 1.0 <= e["st_over_ct_flops"]["1"] <= e["st_over_ct_flops"]["6"]
    # the reference way recomputes the shared prefixes: never fewer FLOPs than ours
    assert all(v >= 1.0 for v in e["vs_reference_flop_saving"].values())
    assert all(g["relative"] < 1e-4 for g in e["gradients_vs_reference"].values())
    assert e["shared_eval_max_abs_diff"] <= 1e-5 and e["shared_eval_speedup"] > 0
    assert e["eval"]["subnets"] == 27 and e["eval"]["deletion"]["subnets"] == 7
    assert set(e["peak_memory_mb"]) == {"ct", "st1", "reference1", "low1", "st6", "reference6", "low6"}
    assert all(g["relative"] < 1e-4 for g in e["low_memory_gradients_vs_joint"].values())
    assert set(e["low_memory_wall_over_flops"]) == {"1", "6"}
    assert results["machine"]["versions"]["torch"] == torch.__version__
    assert set(e["targets_met"]) >= {"wall_over_flops_1", "shared_eval_identical", "shared_eval_speedup"}
    assert "resnet20" in format_table(results)


def test_bench_command_writes_json_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--quick", "--models", "resnet20", "--skip-eval", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["quick"] is True and "resnet20" in data["models"]
    assert "ST/CT wall" in capsys.readouterr().out
    assert cli_main(["bench", "--quick", "--models", "resnet20", "--out", str(out)]) == 2
    assert cli_main(["bench", "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
