"""Ratios of paired timings with a bootstrap interval, the verdict of a target by that
interval, and the rule for when to stop repeating. Pure (no clocks, no torch): the bench
feeds it timings, the tests feed it synthetic ones.

Timings are *paired*: the i-th timing of A and the i-th of B were taken back to back, so a
slow spell of the machine hits both and cancels in their ratio. The interval is a seeded
percentile bootstrap of the median of the per-pair ratios (the median: one pair hit by a
hiccup moves it little).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

T = TypeVar("T")

CONFIDENCE = 0.95
RESAMPLES = 2000
REL_HALF_WIDTH = 0.05  # stop when the interval's half-width is within 5 % of the ratio
MIN_ROUNDS = 3  # before any stop
# A ratio stops by precision on at least this many pairs: the range of n pairs holds their
# median with probability 1 - 2 / 2**n, 97 % for 6 and 75 % for 3, and a bootstrap interval
# of the median of 3 pairs (at most their range) is no 95 % interval.
MIN_PAIRS = 6
# At the time cap, a ratio with a target still open on fewer pairs than this goes on (up to
# HARD_CAP_FACTOR times the cap): in the quick benches of this project's 2-core machines,
# 14 to 18 pairs of resnet50_cifar's steps gave intervals of +-8 to 13 % (the same verdict
# met in one run, undecided in the next), 40 to 57 pairs of any model's +-3 to 6 %.
MIN_PAIRS_AT_CAP = 48
HARD_CAP_FACTOR = 3.0


@dataclass(frozen=True)
class Ratio:
    """The median per-pair ratio and its bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float
    pairs: int

    @property
    def rel_half_width(self) -> float:
        return (self.high - self.low) / 2 / self.value if self.value else float("inf")

    def scaled(self, by: float) -> Ratio:
        """The ratio divided by a constant (e.g. wall ratio / FLOP ratio): the interval scales too."""
        return Ratio(self.value / by, self.low / by, self.high / by, self.pairs)

    def to_dict(self) -> dict:
        return {**asdict(self), "rel_half_width": self.rel_half_width}


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def paired_ratio(num: Sequence[float], den: Sequence[float], seed: int = 0) -> Ratio:
    """Median of ``num[i] / den[i]`` with a seeded percentile-bootstrap interval."""
    if len(num) != len(den) or not num:
        raise ValueError("paired_ratio needs two equally long, non-empty lists of timings")
    ratios = [a / b for a, b in zip(num, den)]
    rng = random.Random(seed)  # own generator: reproducible, and no effect on anyone's global state
    boot = sorted(median(rng.choices(ratios, k=len(ratios))) for _ in range(RESAMPLES))
    tail = (1 - CONFIDENCE) / 2
    low = boot[int(tail * (RESAMPLES - 1))]
    high = boot[int((1 - tail) * (RESAMPLES - 1))]
    return Ratio(median(ratios), low, high, len(ratios))


def verdict(r: Ratio, target: float, higher_is_better: bool) -> str:
    """ "met" / "missed" when the whole interval is on one side of the target, else "undecided"."""
    good_low, good_high = (
        (r.low >= target, r.high >= target) if higher_is_better else (r.high <= target, r.low <= target)
    )
    if good_low and good_high:
        return "met"
    if not good_low and not good_high:
        return "missed"
    return "undecided"


def precise_enough(ratios: Sequence[Ratio], rel_half_width: float = REL_HALF_WIDTH) -> bool:
    return all(r.pairs >= MIN_PAIRS and r.rel_half_width <= rel_half_width for r in ratios)


def repeat_until_precise(
    one_round: Callable[[], None],
    current: Callable[[], Sequence[Ratio]],
    elapsed: Callable[[], float],
    time_cap: float,
    max_rounds: int = 1000,
    decided: Callable[[], bool] = lambda: True,
    open_at_cap: Callable[[], bool] = lambda: False,
) -> dict:
    """Run ``one_round()`` (one timing of every configuration, interleaved) until every ratio
    of ``current()`` is within :data:`REL_HALF_WIDTH` and ``decided()`` (every target's
    interval clear of it: a ratio within 5 % of its target needs more than 5 % precision to
    give the same verdict twice), or ``elapsed()`` passes ``time_cap`` (at least
    :data:`MIN_ROUNDS` rounds) and ``open_at_cap()`` is false (:func:`open_on_few_pairs`),
    or passes :data:`HARD_CAP_FACTOR` times the cap. Returns why it stopped and after how
    many rounds (``past_cap``: the rounds run after the cap for ``open_at_cap``)."""
    rounds, at_cap = 0, None
    while True:
        one_round()
        rounds += 1
        if rounds >= MIN_ROUNDS and precise_enough(current()) and decided():
            return _stopped(rounds, "precision", at_cap)
        if rounds >= MIN_ROUNDS and elapsed() >= time_cap:
            at_cap = rounds if at_cap is None else at_cap
            if not open_at_cap():
                return _stopped(rounds, "time_cap", at_cap)
            if elapsed() >= HARD_CAP_FACTOR * time_cap:
                return _stopped(rounds, "hard_cap", at_cap)
        if rounds >= max_rounds:
            return _stopped(rounds, "max_rounds", at_cap)


def _stopped(rounds: int, why: str, at_cap: int | None) -> dict:
    out = {"rounds": rounds, "stopped_by": why}
    if at_cap is not None and rounds > at_cap:
        out["past_cap"] = rounds - at_cap
    return out


def open_on_few_pairs(judged: Iterable[tuple[Ratio, float, bool]]) -> bool:
    """Whether a ratio with a target (``(ratio, target, higher is better)``) is still open
    on fewer than :data:`MIN_PAIRS_AT_CAP` pairs: undecided, or decided on an interval wider
    than the precision goal (a verdict on a wide interval near its target is met by luck as
    much as by its speed: 1.06 [0.92, 1.10] on 14 pairs against 1.10)."""
    return any(
        r.pairs < MIN_PAIRS_AT_CAP and (verdict(r, goal, higher) == "undecided" or r.rel_half_width > REL_HALF_WIDTH)
        for r, goal, higher in judged
    )


def any_undecided(judged: Iterable[tuple[Ratio, float, bool]]) -> bool:
    """Whether a ratio with a target (``(ratio, target, higher is better)``) is undecided,
    whatever its pairs: the trainer's rule at the cap, its pairs being cheap (a quick round of
    three epoch pairs takes about 7 s) and its ratios near their target (0.97-1.00 against 0.95)."""
    return any(verdict(r, goal, higher) == "undecided" for r, goal, higher in judged)


def once_per_round(compute: Callable[[], T], rounds: Callable[[], int]) -> Callable[[], T]:
    """``compute()`` again only when ``rounds()`` has changed: the stopping rule, its verdicts
    and the scheduling of a round all read the same bootstraps, which take a good part of a
    second per round and would otherwise come out of the time cap two or three times."""
    memo: dict[int, T] = {}

    def cached() -> T:
        n = rounds()
        if n not in memo:
            memo.clear()
            memo[n] = compute()
        return memo[n]

    return cached
