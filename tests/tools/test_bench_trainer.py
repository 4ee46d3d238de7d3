"""Part e of the bench: the trainer against a bare loop, on fake runs (synthetic per-epoch
timings, calls counted) and on one tiny real run of each (steps counted, not timed)."""

from __future__ import annotations

import contextlib

import pytest

from stimulative.tools.bench_trainer import (
    TrainerWork,
    bare_epochs,
    bench_trainer,
    trainer_comparisons,
    trainer_epochs,
    trainer_step_flops,
)


def flops(epochs: int) -> dict[str, list[list[float]]]:
    """Every step's FLOPs, by epoch (4 steps each, as the fake runs): ST twice CT's."""
    return {"ct": [[1.0] * 4] * epochs, "st": [[2.0] * 4] * epochs}


def fake_runs(ct: float, bare: float, st: float, calls: list[str]):
    """Each kind's epoch is 4 steps of ``seconds / 4`` and 1.5x that in whole; every started
    run and every epoch logged in ``calls``."""

    @contextlib.contextmanager
    def start(kind: str):
        calls.append(f"start {kind}")
        seconds = {"ct": ct, "bare": bare, "st": st}[kind]

        def epoch() -> tuple[list[float], float]:
            calls.append(kind)
            return [seconds / 4] * 4, seconds * 1.5

        yield epoch
        calls.append(f"end {kind}")

    return start


def test_runs_advance_in_lockstep_and_stop_on_a_precise_ratio() -> None:
    calls: list[str] = []
    work = TrainerWork(epochs=2)
    out = bench_trainer(work, "cpu", 100.0, lambda s: None, fake_runs(1.0, 0.9, 2.0, calls), flops(2))
    starts = ["start ct", "start bare", "start st"]
    ends = ["end st", "end bare", "end ct"]
    warm_up = [*starts, "bare", "ct", "st", *ends]
    assert calls[: len(warm_up)] == warm_up  # one epoch each
    # three rounds (then the intervals are exact); CT always in the middle, the chain reversed with
    # every epoch and round
    orders = [["bare", "ct", "st", "st", "ct", "bare"], ["st", "ct", "bare", "bare", "ct", "st"],
              ["bare", "ct", "st", "st", "ct", "bare"]]  # fmt: skip
    assert calls[len(warm_up) :] == [c for order in orders for c in (*starts, *order, *ends)]
    assert out["repeats"] == {"rounds": 3, "stopped_by": "precision"}
    assert out["ratios"]["ct_trainer_over_bare_steps"]["value"] == pytest.approx(0.9)
    assert out["ratios"]["ct_trainer_over_bare_same_work"]["value"] == pytest.approx(0.9)
    assert out["ratios"]["ct_trainer_over_bare_without_validation"]["value"] == pytest.approx(0.6)
    assert out["ratios"]["st_over_ct_trainer_wall_over_flops"]["value"] == pytest.approx(1.0)
    assert out["ratios"]["ct_trainer_over_bare_steps"]["pairs"] == 6  # 3 rounds x 2 epochs
    assert out["runs"]["ct"][0]["step_count"] == 2 * 4  # every step timed
    assert out["verdicts"] == {
        "ct_trainer_over_bare_steps": "missed",  # 0.9 < 0.95
        "ct_trainer_over_bare_same_work": "missed",
        "st_over_ct_trainer_wall_over_flops": "met",  # 1.0 <= 1.10
    }


def test_a_fast_trainer_meets_its_target() -> None:
    out = bench_trainer(TrainerWork(), "cpu", 100.0, lambda s: None, fake_runs(1.0, 1.0, 3.0, []), flops(4))
    assert out["verdicts"]["ct_trainer_over_bare_steps"] == "met"
    assert out["verdicts"]["st_over_ct_trainer_wall_over_flops"] == "missed"  # 3/1 over 2 = 1.5


def clocked_trainer(monkeypatch, ct_seconds, cap: float) -> dict:
    """The bench of fake runs whose clock is the CT epochs run (4 per round, the warm-up's one
    first); the CT trainer's n-th epoch takes ``ct_seconds(n)`` against the bare loop's 1.0,
    the ST trainer's twice that (twice the FLOPs)."""
    from types import SimpleNamespace

    from stimulative.tools import bench_trainer as module

    calls: list[str] = []

    @contextlib.contextmanager
    def start(kind: str):
        def epoch() -> tuple[list[float], float]:
            calls.append(kind)
            ct = ct_seconds(calls.count("ct"))
            seconds = {"ct": ct, "bare": 1.0, "st": 2 * ct}[kind]  # ST: CT's time per FLOP
            return [seconds / 4] * 4, seconds

        yield epoch

    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: float(calls.count("ct"))))
    return bench_trainer(TrainerWork(epochs=4), "cpu", cap, lambda s: None, start, flops(4))


def test_a_trainer_undecided_at_the_cap_goes_on_to_the_hard_cap(monkeypatch) -> None:
    """CT epochs alternating 1.0 and 1.1 s: the ratio straddles 0.95 for ever. Past the cap of
    10 (round 3) the rounds go on, past 48 pairs, until three times the cap (30: round 8)."""
    out = clocked_trainer(monkeypatch, lambda n: 1.0 + 0.1 * (n % 2), cap=10.0)
    assert out["verdicts"]["ct_trainer_over_bare_steps"] == "undecided"
    assert out["repeats"] == {"rounds": 8, "stopped_by": "hard_cap", "past_cap": 5}
    long = clocked_trainer(monkeypatch, lambda n: 1.0 + 0.1 * (n % 2), cap=40.0)  # 48 pairs do not stop it
    assert long["ratios"]["ct_trainer_over_bare_steps"]["pairs"] > 48
    assert long["repeats"]["stopped_by"] == "hard_cap"


def test_a_trainer_met_on_a_wide_interval_goes_on_to_its_minimum_pairs(monkeypatch) -> None:
    """CT epochs alternating 0.75 and 1.0 s: the steps ratio is met (over 0.95 whatever the
    resampling) on an interval wider than +-5 %, so past the cap of 16 (round 4) the rounds go
    on until it has MIN_PAIRS_AT_CAP pairs (12 rounds of 4 epochs), short of the hard cap."""
    from stimulative.tools.bench_stats import MIN_PAIRS_AT_CAP

    out = clocked_trainer(monkeypatch, lambda n: 0.75 + 0.25 * (n % 2), cap=16.0)
    assert out["verdicts"]["ct_trainer_over_bare_steps"] == "met"
    assert out["ratios"]["ct_trainer_over_bare_steps"]["rel_half_width"] > 0.05
    assert out["ratios"]["ct_trainer_over_bare_steps"]["pairs"] == MIN_PAIRS_AT_CAP == 48
    assert out["repeats"] == {"rounds": 12, "stopped_by": "time_cap", "past_cap": 8}


def test_comparisons_pair_the_ith_epochs() -> None:
    def runs_of(*epochs: list[float]) -> list[dict]:
        return [
            {"steps": e, "whole": [2 * s for s in e], "whole_sum": [3 * s for s in e], "step_count": 10} for e in epochs
        ]

    runs = {
        "ct": runs_of([1.0, 2.0], [4.0, 1.0]),
        "bare": runs_of([1.0, 2.0], [4.0, 1.0]),
        "st": runs_of([2.0, 4.0], [8.0, 2.0]),
    }
    r = trainer_comparisons(runs, flops(2))
    assert (r["ct_trainer_over_bare_steps"].low, r["ct_trainer_over_bare_steps"].high) == (1.0, 1.0)
    assert r["ct_trainer_over_bare_without_validation"].value == 0.5
    assert r["st_over_ct_trainer_wall_over_flops"].value == 1.0
    assert r["st_over_ct_trainer_wall_over_flops"].pairs == 4
    # each epoch over its own FLOPs: the second epochs' ST steps cost 4 units, so they run at twice CT's speed
    uneven = trainer_comparisons(runs, {"ct": [[1.0], [1.0]], "st": [[2.0], [4.0]]})
    assert uneven["st_over_ct_trainer_wall_over_flops"].low == 0.5
    assert uneven["st_over_ct_trainer_wall_over_flops"].value == 0.75


def test_the_real_runs_train_the_same_steps_and_time_every_epoch() -> None:
    work = TrainerWork(epochs=2, train_fraction=0.2)
    with trainer_epochs(work, "ct", "cpu") as trainer, bare_epochs(work, "cpu") as bare:
        epochs = {"trainer": [trainer() for _ in range(work.epochs)], "bare": [bare() for _ in range(work.epochs)]}
    steps = {k: [len(each) for each, _ in v] for k, v in epochs.items()}
    assert steps["trainer"] == steps["bare"] and all(n > 0 for n in steps["bare"])
    counted = trainer_step_flops(work)  # every step counted, epoch by epoch, as the runs take them
    assert [len(f) for f in counted["ct"]] == [len(f) for f in counted["st"]] == steps["trainer"]
    assert sum(map(sum, counted["st"])) > sum(map(sum, counted["ct"]))
    for run in epochs.values():
        # an epoch's whole time holds its steps and the validation after them
        assert all(0 < sum(each) < whole for each, whole in run)


def test_an_epoch_counts_its_median_step_and_its_end_as_timed() -> None:
    from stimulative.tools.bench_trainer import epoch_times

    # a stall (the 0.9 s step) does not count beyond a typical step; the end work counts whole
    t = epoch_times([[0.1, 0.1, 0.9, 0.1], [0.2, 0.2, 0.2]], [1.5, 1.0])
    assert t["steps"] == pytest.approx([0.4, 0.6])
    assert t["end"] == pytest.approx([0.3, 0.4])
    assert t["whole"] == pytest.approx([0.7, 1.0])
    assert t["steps_sum"] == pytest.approx([1.2, 0.6]) and t["whole_sum"] == [1.5, 1.0]
    # steps of different FLOPs (ST's sub-networks): the median seconds per FLOP times the epoch's FLOPs
    t = epoch_times([[0.1, 0.2, 0.6]], [1.0], [[1.0, 2.0, 6.0]])
    assert t["steps"] == pytest.approx([0.9])  # the median step times 3 would say 0.6
    with pytest.raises(ValueError, match="3 timed steps against 2 counted"):
        epoch_times([[0.1, 0.2, 0.6]], [1.0], [[1.0, 2.0]])
