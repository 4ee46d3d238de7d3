"""The bench's statistics on synthetic timings (no clock is read)."""

from __future__ import annotations

import random

import pytest

from stimulative.tools.bench_stats import (
    MIN_PAIRS,
    MIN_PAIRS_AT_CAP,
    MIN_ROUNDS,
    Ratio,
    any_undecided,
    open_on_few_pairs,
    paired_ratio,
    repeat_until_precise,
    verdict,
)


def noisy(base: float, noise: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [base * (1 + rng.uniform(-noise, noise)) for _ in range(n)]


def test_a_clear_win_is_met_and_a_clear_loss_missed() -> None:
    r = paired_ratio(noisy(0.9, 0.01, 20, 1), noisy(1.0, 0.01, 20, 2))
    assert 0.85 < r.low <= r.value <= r.high < 0.95
    assert verdict(r, 1.0, higher_is_better=False) == "met"
    assert verdict(r, 1.0, higher_is_better=True) == "missed"
    assert verdict(r, 0.8, higher_is_better=True) == "met"


def test_an_interval_straddling_the_target_is_undecided() -> None:
    r = Ratio(value=1.0, low=0.95, high=1.05, pairs=10)
    assert verdict(r, 1.0, higher_is_better=True) == "undecided"
    assert verdict(r, 1.0, higher_is_better=False) == "undecided"
    assert verdict(r, 1.1, higher_is_better=False) == "met"


def test_pairing_cancels_a_shared_slow_spell() -> None:
    """Every pair slowed by the same factor (the machine's load) leaves the ratio exact."""
    load = [1, 3, 1, 10, 2, 1]
    r = paired_ratio([2.0 * f for f in load], [1.0 * f for f in load])
    assert (r.low, r.value, r.high) == (2.0, 2.0, 2.0)


def test_bootstrap_is_seeded_and_reproducible() -> None:
    a, b = noisy(1.0, 0.3, 15, 3), noisy(1.0, 0.3, 15, 4)
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    first = paired_ratio(a, b, seed=7)
    assert random.random() == expected_next  # its own generator: the global one is untouched
    assert paired_ratio(a, b, seed=7) == first
    assert first.low < first.value < first.high


def test_paired_ratio_rejects_unpaired_timings() -> None:
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def run_rule(noise: float, cap: float, decided=lambda: True, open_at_cap=None) -> dict:
    """The stopping rule on a fake clock: each round costs one second; ``open_at_cap(a, b)``."""
    a, b, clock = [], [], [0.0]
    rng = random.Random(0)

    def one_round() -> None:
        a.append(1.5 * (1 + rng.uniform(-noise, noise)))
        b.append(1.0 * (1 + rng.uniform(-noise, noise)))
        clock[0] += 1.0

    held = (lambda: open_at_cap(a, b)) if open_at_cap else (lambda: False)
    out = repeat_until_precise(
        one_round, lambda: [paired_ratio(a, b)], lambda: clock[0], cap, decided=decided, open_at_cap=held
    )
    return {**out, "pairs": len(a)}


def test_low_noise_stops_early_on_precision_with_its_minimum_pairs() -> None:
    """One pair a round: precise from the start, it stops when it has MIN_PAIRS (6) pairs; a
    ratio of two pairs a round (two draws) stops at the first round it may, the third."""
    assert run_rule(noise=0.005, cap=100) == {"rounds": MIN_PAIRS, "stopped_by": "precision", "pairs": MIN_PAIRS}
    a: list[float] = []
    two_a_round = repeat_until_precise(lambda: a.extend([1.5, 1.5]), lambda: [paired_ratio(a, a)], lambda: 0.0, 100)
    assert two_a_round == {"rounds": MIN_ROUNDS, "stopped_by": "precision"} and len(a) == 6 == MIN_PAIRS


def test_high_noise_stops_at_the_time_cap() -> None:
    out = run_rule(noise=0.9, cap=12)
    assert out["stopped_by"] == "time_cap" and out["rounds"] == 12


def test_a_precise_but_undecided_ratio_goes_on_until_decided_or_the_cap() -> None:
    calls = []
    decided_from_round_8 = lambda: calls.append(1) or len(calls) >= 3  # noqa: E731  (asked from round 6 on)
    assert run_rule(noise=0.005, cap=100, decided=decided_from_round_8) == {
        "rounds": 8, "stopped_by": "precision", "pairs": 8}  # fmt: skip
    never = run_rule(noise=0.005, cap=8, decided=lambda: False)
    assert never["stopped_by"] == "time_cap" and never["rounds"] == 8


def test_an_open_ratio_on_few_pairs_goes_on_past_the_cap_up_to_the_hard_cap() -> None:
    """At the cap, a ratio still open on few pairs holds the rule until it has them; a
    ratio that never settles stops at three times the cap."""
    until_12 = run_rule(noise=0.005, cap=8, decided=lambda: False, open_at_cap=lambda a, b: len(a) < 12)
    assert until_12 == {"rounds": 12, "stopped_by": "time_cap", "past_cap": 4, "pairs": 12}
    never = run_rule(noise=0.005, cap=8, decided=lambda: False, open_at_cap=lambda a, b: True)
    assert never == {"rounds": 24, "stopped_by": "hard_cap", "past_cap": 16, "pairs": 24}


def test_an_undecided_noisy_ratio_gets_its_minimum_pairs_at_the_cap() -> None:
    """A ratio of 1.5 judged against 1.5 stays undecided: past the cap of 20 rounds it goes
    on to :data:`MIN_PAIRS_AT_CAP` pairs, short of the hard cap (60)."""
    out = run_rule(noise=0.9, cap=20, open_at_cap=lambda a, b: open_on_few_pairs([(paired_ratio(a, b), 1.5, False)]))
    assert out == {"rounds": MIN_PAIRS_AT_CAP, "stopped_by": "time_cap", "past_cap": MIN_PAIRS_AT_CAP - 20,
                   "pairs": MIN_PAIRS_AT_CAP}  # fmt: skip


def test_open_on_few_pairs_names_undecided_or_wide_ratios_short_of_pairs() -> None:
    few, enough = MIN_PAIRS_AT_CAP - 1, MIN_PAIRS_AT_CAP
    undecided = Ratio(1.0, 0.95, 1.15, few)
    met_wide = Ratio(1.06, 0.92, 1.10, few)  # met against 1.10 on an interval of ±8.5 %
    met_narrow = Ratio(0.96, 0.93, 0.99, few)  # ±3 %
    assert open_on_few_pairs([(undecided, 1.1, False)])
    assert open_on_few_pairs([(met_narrow, 1.1, False), (met_wide, 1.1, False)])
    assert not open_on_few_pairs([(met_narrow, 1.1, False)])
    assert not open_on_few_pairs([(Ratio(1.0, 0.95, 1.15, enough), 1.1, False)])
    assert not open_on_few_pairs([(Ratio(1.06, 0.92, 1.10, enough), 1.1, False)])


def test_any_undecided_holds_whatever_the_pairs() -> None:
    many = 10 * MIN_PAIRS_AT_CAP
    assert any_undecided([(Ratio(0.97, 0.96, 0.99, many), 0.95, True), (Ratio(0.99, 0.94, 1.02, many), 0.95, True)])
    assert not any_undecided([(Ratio(0.97, 0.96, 0.99, many), 0.95, True), (Ratio(0.9, 0.8, 0.94, 3), 0.95, True)])


def test_once_per_round_computes_again_only_after_a_round() -> None:
    from stimulative.tools.bench_stats import once_per_round

    rounds, calls = [1], []
    cached = once_per_round(lambda: calls.append(len(rounds)) or len(calls), lambda: len(rounds))
    assert cached() == cached() == 1 and calls == [1]
    rounds.append(2)
    assert cached() == 2 and calls == [1, 2]
