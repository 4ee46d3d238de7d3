"""Statistics of all sub-networks (paper Fig. 5, Table 1): max, mean, std, min of their top-1,
over seeds, for each training method and sampling-space size."""

from __future__ import annotations

from .stats import mean_std

FIELDS = ("mean", "std", "min", "max")


def subnet_statistics(runs: list[dict], bn: str) -> dict:
    """Mean ± std over seeds of the full network's top-1 and of each sub-network statistic."""
    out = {"main": mean_std([r["by_bn"][bn]["main"]["top1"] for r in runs])}
    for f in FIELDS:
        out[f] = mean_std([r["by_bn"][bn]["subnets"][f] for r in runs])
    out["count"] = runs[0]["by_bn"][bn]["subnets"]["count"]
    return out
