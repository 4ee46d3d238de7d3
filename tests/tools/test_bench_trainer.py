"""Part e of the bench: the trainer against a bare loop, on fake runs (synthetic per-epoch
timings, calls counted) and on one tiny real run of each (images and epochs counted, not timed)."""

from __future__ import annotations

import pytest

from stimulative.tools.bench_trainer import (
    TrainerWork,
    bare_loop,
    bench_trainer,
    run_trainer,
    trainer_comparisons,
)


def fake_runs(ct: float, bare: float, st: float, calls: list[str], epochs: int = 2):
    """Each kind's epoch always takes the same step seconds, and 1.5x that in whole; calls logged."""

    def run(kind: str) -> dict:
        calls.append(kind)
        seconds = {"ct": ct, "bare": bare, "st": st}[kind]
        steps, whole = [seconds] * epochs, [seconds * 1.5] * epochs
        return {"steps": steps, "whole": whole, "steps_sum": steps, "whole_sum": whole, "images": 100 * epochs}

    return run


def test_runs_are_interleaved_and_stop_on_a_precise_ratio() -> None:
    calls: list[str] = []
    out = bench_trainer(TrainerWork(), "cpu", 100.0, lambda s: None, fake_runs(1.0, 0.9, 2.0, calls), flop_ratio=2.0)
    assert calls[:2] == ["bare", "ct"]  # warm-up
    assert calls[2:] == ["ct", "bare", "st"] * 3  # three paired rounds, then the intervals are exact
    assert out["repeats"] == {"rounds": 3, "stopped_by": "precision"}
    assert out["ratios"]["ct_trainer_over_bare_steps"]["value"] == pytest.approx(0.9)
    assert out["ratios"]["ct_trainer_over_bare_same_work"]["value"] == pytest.approx(0.9)
    assert out["ratios"]["ct_trainer_over_bare_without_validation"]["value"] == pytest.approx(0.6)
    assert out["ratios"]["st_over_ct_trainer_wall_over_flops"]["value"] == pytest.approx(1.0)
    assert out["ratios"]["ct_trainer_over_bare_steps"]["pairs"] == 6  # 3 rounds x 2 epochs
    assert out["verdicts"] == {
        "ct_trainer_over_bare_steps": "missed",  # 0.9 < 0.95
        "ct_trainer_over_bare_same_work": "missed",
        "st_over_ct_trainer_wall_over_flops": "met",  # 1.0 <= 1.10
    }


def test_a_fast_trainer_meets_its_target() -> None:
    out = bench_trainer(TrainerWork(), "cpu", 100.0, lambda s: None, fake_runs(1.0, 1.0, 3.0, []), flop_ratio=2.0)
    assert out["verdicts"]["ct_trainer_over_bare_steps"] == "met"
    assert out["verdicts"]["st_over_ct_trainer_wall_over_flops"] == "missed"  # 3/1 over 2 = 1.5


def test_comparisons_pair_the_ith_epochs() -> None:
    def runs_of(*epochs: list[float]) -> list[dict]:
        return [
            {"steps": e, "whole": [2 * s for s in e], "whole_sum": [3 * s for s in e], "images": 10} for e in epochs
        ]

    runs = {
        "ct": runs_of([1.0, 2.0], [4.0, 1.0]),
        "bare": runs_of([1.0, 2.0], [4.0, 1.0]),
        "st": runs_of([2.0, 4.0], [8.0, 2.0]),
    }
    r = trainer_comparisons(runs, flop_ratio=2.0)
    assert (r["ct_trainer_over_bare_steps"].low, r["ct_trainer_over_bare_steps"].high) == (1.0, 1.0)
    assert r["ct_trainer_over_bare_without_validation"].value == 0.5
    assert r["st_over_ct_trainer_wall_over_flops"].value == 1.0
    assert r["st_over_ct_trainer_wall_over_flops"].pairs == 4


def test_the_real_runs_train_the_same_images_and_time_every_epoch() -> None:
    work = TrainerWork(epochs=2, train_fraction=0.2)
    trainer, bare = run_trainer(work, "ct", "cpu"), bare_loop(work, "cpu")
    assert trainer["images"] == bare["images"] > 0 and trainer["images"] % work.batch_size == 0
    for run in (trainer, bare):
        assert len(run["steps"]) == len(run["whole"]) == len(run["whole_sum"]) == work.epochs
        # an epoch's whole time holds its steps and the validation after them
        assert all(0 < s < w for s, w in zip(run["steps"], run["whole"]))
        assert all(0 < s < w for s, w in zip(run["steps_sum"], run["whole_sum"]))
        assert all(e > 0 for e in run["end"])


def test_an_epoch_counts_its_median_step_and_its_end_as_timed() -> None:
    from stimulative.tools.bench_trainer import epoch_times

    # a stall (the 0.9 s step) does not count beyond a typical step; the end work counts whole
    t = epoch_times([[0.1, 0.1, 0.9, 0.1], [0.2, 0.2, 0.2]], [1.5, 1.0])
    assert t["steps"] == pytest.approx([0.4, 0.6])
    assert t["end"] == pytest.approx([0.3, 0.4])
    assert t["whole"] == pytest.approx([0.7, 1.0])
    assert t["steps_sum"] == pytest.approx([1.2, 0.6]) and t["whole_sum"] == [1.5, 1.0]
