"""Small statistics shared by the analyses: mean and spread over seeds, quartiles."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    n = len(values)
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": m, "std": s, "n": n, "values": list(values)}


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """min, q1, median, q3, max (linear interpolation)."""
    v = sorted(values)

    def q(p: float) -> float:
        pos = p * (len(v) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return v[lo] + (v[hi] - v[lo]) * (pos - lo)

    return {"min": v[0], "q1": q(0.25), "median": q(0.5), "q3": q(0.75), "max": v[-1]}


def fmt(ms: dict[str, float], digits: int = 2) -> str:
    """``mean ± std``."""
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def fmt_interval(c: dict) -> str:
    """A signed mean and its 95 % interval: ``+1.23 [-0.40, +2.86]``."""
    return f"{c['mean']:+.2f} [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
