"""Ordered vs stochastic vs raw sampling for ST at the same budget (paper section 3.3)."""

from __future__ import annotations

from .subnet_stats import subnet_statistics


def compare_samplers(runs_by_sampler: dict[str, list[dict]], bn: str) -> dict[str, dict]:
    """Full-network and ordered-sub-network statistics of ST runs that differ only in the
    sampling rule (sub-networks are always evaluated over the ordered space)."""
    return {name: subnet_statistics(runs, bn) for name, runs in runs_by_sampler.items()}
