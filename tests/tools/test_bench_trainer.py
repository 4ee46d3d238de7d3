"""Part e of the bench: the trainer against a bare loop, on fake runs (synthetic timings,
calls counted) and on one tiny real run of each (images counted, not timed)."""

from __future__ import annotations

import pytest

from stimulative.tools.bench_trainer import (
    TrainerWork,
    bare_loop,
    bench_trainer,
    run_trainer,
    trainer_comparisons,
)


def fake_runs(ct: float, bare: float, st: float, calls: list[str]):
    """Each kind always takes the same seconds for 100 images; the calls are logged."""

    def run(kind: str) -> dict:
        calls.append(kind)
        seconds = {"ct": ct, "bare": bare, "st": st}[kind]
        return {"step_seconds": seconds, "train_seconds": seconds * 1.5, "fit_seconds": seconds * 2, "images": 100}

    return run


def test_runs_are_interleaved_and_stop_on_a_precise_ratio() -> None:
    calls: list[str] = []
    out = bench_trainer(TrainerWork(), "cpu", 100.0, lambda s: None, fake_runs(1.0, 0.9, 2.0, calls), flop_ratio=2.0)
    assert calls[:2] == ["bare", "ct"]  # warm-up
    assert calls[2:] == ["ct", "bare", "st"] * 3  # three paired rounds, then the intervals are exact
    assert out["repeats"] == {"rounds": 3, "stopped_by": "precision"}
    assert out["ratios"]["ct_trainer_over_bare_steps"]["value"] == pytest.approx(0.9)
    assert out["ratios"]["ct_trainer_over_bare_train_seconds"]["value"] == pytest.approx(0.6)
    assert out["ratios"]["st_over_ct_trainer_wall_over_flops"]["value"] == pytest.approx(1.0)
    assert out["verdicts"] == {
        "ct_trainer_over_bare_steps": "missed",  # 0.9 < 0.95
        "ct_trainer_over_bare_train_seconds": "missed",
        "st_over_ct_trainer_wall_over_flops": "met",  # 1.0 <= 1.10
    }


def test_a_fast_trainer_meets_its_target() -> None:
    out = bench_trainer(TrainerWork(), "cpu", 100.0, lambda s: None, fake_runs(1.0, 1.0, 3.0, []), flop_ratio=2.0)
    assert out["verdicts"]["ct_trainer_over_bare_steps"] == "met"
    assert out["verdicts"]["st_over_ct_trainer_wall_over_flops"] == "missed"  # 3/1 over 2 = 1.5


def test_comparisons_pair_the_ith_runs() -> None:
    runs = {
        "ct": [{"step_seconds": s, "train_seconds": s, "images": 10} for s in (1.0, 2.0, 4.0)],
        "bare": [{"step_seconds": s, "images": 10} for s in (1.0, 2.0, 4.0)],
        "st": [{"step_seconds": s, "train_seconds": s, "images": 10} for s in (2.0, 4.0, 8.0)],
    }
    r = trainer_comparisons(runs, flop_ratio=2.0)
    assert (r["ct_trainer_over_bare_steps"].low, r["ct_trainer_over_bare_steps"].high) == (1.0, 1.0)
    assert r["st_over_ct_trainer_wall_over_flops"].value == 1.0


def test_the_real_runs_train_the_same_images() -> None:
    work = TrainerWork(epochs=1, train_fraction=0.2)
    trainer, bare = run_trainer(work, "ct", "cpu"), bare_loop(work, "cpu")
    assert trainer["images"] == bare["images"] > 0 and trainer["images"] % work.batch_size == 0
    assert set(trainer) == {"step_seconds", "train_seconds", "fit_seconds", "images"}
