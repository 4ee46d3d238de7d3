"""The bench's machinery on a tiny workload (no timing assertions: benchmarks are not tests)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from stimulative.cli import main as cli_main
from stimulative.core.sampling import parse_spec
from stimulative.models import create_model
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


def test_flops_match_an_independent_count(results) -> None:
    """CT's step is one forward and backward of the full network; the reference way adds a
    forward and backward of each sampled sub-network, from the stem."""
    e = results["models"]["resnet20"]
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    x, y = torch.randn(TINY.batch, 3, TINY.image, TINY.image), torch.randint(10, (TINY.batch,))

    def forward_backward(spec=None) -> int:
        return count_flops(lambda: F.cross_entropy(model(x, spec), y).backward())

    ct = forward_backward()
    assert e["flops_per_step"]["ct"] == ct
    for n in (1, 6):
        per_draw = [ct + sum(forward_backward(parse_spec(s)) for s in draw[:n]) for draw in e["sampled_subnets"]]
        assert e["flops_per_step"][f"reference{n}"] == pytest.approx(sum(per_draw) / len(per_draw))
    # ours shares the prefixes: fewer FLOPs than the reference way, more than CT
    assert ct < e["flops_per_step"]["st1"] < e["flops_per_step"]["reference1"]
    assert e["flops_per_step"]["st1"] < e["flops_per_step"]["st6"] < e["flops_per_step"]["reference6"]
    assert e["flops_per_step"]["low6"] == e["flops_per_step"]["st6"]  # --low-memory: same work, other order


def test_ratios_are_those_of_the_measurements(results) -> None:
    e = results["models"]["resnet20"]
    seconds, flops = e["per_step_seconds"], e["flops_per_step"]
    for n in ("1", "6"):
        assert e["st_over_ct_wall"][n] == pytest.approx(seconds[f"st{n}"] / seconds["ct"])
        assert e["st_over_ct_flops"][n] == pytest.approx(flops[f"st{n}"] / flops["ct"])
        assert e["wall_over_flops"][n] == pytest.approx(e["st_over_ct_wall"][n] / e["st_over_ct_flops"][n])
        assert e["vs_reference_speedup"][n] == pytest.approx(seconds[f"reference{n}"] / seconds[f"st{n}"])
        assert e["vs_reference_flop_saving"][n] == pytest.approx(flops[f"reference{n}"] / flops[f"st{n}"])
        assert e["low_memory_wall_over_flops"][n] == pytest.approx(
            seconds[f"low{n}"] / seconds["ct"] / e["st_over_ct_flops"][n]
        )
        assert e["targets_met"][f"wall_over_flops_{n}"] == (e["wall_over_flops"][n] <= 1.10)
    ev = e["eval"]["recalibrated"]
    assert e["shared_eval_speedup"] == pytest.approx(ev["naive_seconds"] / ev["shared_seconds"])
    assert ev["calibration_speedup"] == pytest.approx(
        ev["naive_calibration_seconds"] / ev["shared_calibration_seconds"]
    )
    table = format_table(results)
    assert f"{e['st_over_ct_flops']['1']:.2f}/{e['st_over_ct_flops']['6']:.2f}" in table


def test_gradients_logits_and_memory(results) -> None:
    e = results["models"]["resnet20"]
    assert all(g["relative"] < 1e-4 for g in e["gradients_vs_reference"].values())
    assert all(g["relative"] < 1e-4 for g in e["low_memory_gradients_vs_joint"].values())
    assert e["shared_eval_max_abs_diff"] <= 1e-5 and e["targets_met"]["shared_eval_identical"]
    assert e["eval"]["subnets"] == 27 and e["eval"]["deletion"]["subnets"] == 7
    # 27 sub-networks of 1 to 3 blocks per stage: 27 x 6 blocks one at a time; the walk runs
    # each distinct prefix once: 3 in the first stage, 3 x 3 in the second, 9 x 3 in the third
    assert e["eval"]["block_runs"] == {"naive": 27 * 6, "shared": 3 + 9 + 27}
    memory = e["peak_memory_mb"]
    assert set(memory) == {"ct", "st1", "reference1", "low1", "st6", "reference6", "low6"}
    # one backward through 6 sub-networks holds their activations together; --low-memory does not
    assert memory["ct"] < memory["st6"] and memory["low6"] < memory["st6"]
    assert results["machine"]["versions"]["torch"] == torch.__version__


def test_bench_command_writes_json_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--quick", "--models", "resnet20", "--skip-eval", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["quick"] is True and "resnet20" in data["models"]
    assert "ST/CT wall" in capsys.readouterr().out
    assert cli_main(["bench", "--quick", "--models", "resnet20", "--out", str(out)]) == 2
    assert cli_main(["bench", "--models", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
