"""The limit of the shared all-sub-network evaluation, and where the time goes.

The limit is the speedup over the naive way that a perfect walk would get: one that does
only the module work the walk cannot avoid and adds nothing (no bookkeeping, no copies). Its
seconds are estimated from per-module seconds (:func:`module_seconds`: the stem, each block
and the head timed in context, in full-network passes over the very evaluation and
calibration batches, the median of :data:`REPEATS` passes):

- inference: the stem once, each distinct prefix's last block once, the head once per
  distinct sub-network;
- ``subnet`` protocol, re-estimation too: the same in calibration mode (train-mode BN) over
  the calibration batches, the head only up to its last BN layer
  (:func:`stimulative.core.batchnorm.bn_prefix`).

``fraction_of_limit`` is the perfect walk's seconds over the walk's (median) seconds, and
``limit = achieved / fraction_of_limit``: the achieved speedup with the walk's seconds
replaced by the perfect walk's, i.e. measured naive seconds over the perfect walk's, paired
as the achieved speedup is. The naive side is measured, not estimated: the naive way pays
per sub-network what no module timing holds (saving, resetting and restoring every BN
statistic: for MobileNetV3 at the quick sizes 0.35 s of its 1.7 s with running
statistics), and a ratio of two estimates came out below the achieved speedup (2.9 vs 3.6).
``naive_estimate`` and ``overhead`` (measured minus estimated seconds, per pass) show it.
``block_run_ratio`` is the block-run count (:func:`stimulative.tools.bench.block_runs`):
every block weighs the same and the stem and head weigh nothing, so it is no bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.batchnorm import bn_prefix, calibration_mode, preserved_bn_state
from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec
from ..runtime.measure import wall
from .bench_stats import median

REPEATS = 5  # passes per head variant; the median: one slow pass moves a module's time little


@torch.no_grad()
def module_seconds(
    model: ElasticNet, inputs: Sequence[torch.Tensor], calibration: Sequence[torch.Tensor], device: torch.device
) -> dict:
    """Seconds per module, summed over the batches: ``eval`` (eval mode, evaluation
    batches) and ``calibration`` (calibration mode, calibration batches), each with
    ``stem``, ``blocks`` (per stage, per block) and ``head``; ``calibration`` also
    ``head_bn``: the head up to its last BN layer (0 without BN in the head)."""
    model.eval()
    out = {"eval": _seconds(model, inputs, device, {"head": model.head})}
    part = bn_prefix(model.head)
    heads = {"head": model.head} | ({"head_bn": part} if part is not None else {})
    with preserved_bn_state(model), calibration_mode(model):
        out["calibration"] = {"head_bn": 0.0} | _seconds(model, calibration, device, heads)
    model.eval()
    return out


def _seconds(model: ElasticNet, batches: Sequence[torch.Tensor], device: torch.device, heads: dict) -> dict:
    """Per module, the median over full-network passes of its seconds in the pass: timed in
    context (weights as cold as a forward leaves them), not in a loop of its own that keeps
    them in cache. Each pass ends in one head variant (one timed after another would find
    the weights warm): :data:`REPEATS` passes per variant."""
    names = list(heads)
    runs = [_one_pass(model, batches, device, names[r % len(names)], heads) for r in range(REPEATS * len(names))]
    out = {"stem": median([t["stem"] for t in runs])}
    out["blocks"] = [
        [median([t["blocks"][s][b] for t in runs]) for b in range(len(stage))] for s, stage in enumerate(model.stages)
    ]
    out.update({name: median([t[name] for t in runs if name in t]) for name in names})
    return out


def _one_pass(model: ElasticNet, batches: Sequence[torch.Tensor], device: torch.device, head: str, heads: dict) -> dict:
    """One full-network pass over ``batches``, each module timed."""
    t = {"stem": 0.0, "blocks": [[0.0] * len(stage) for stage in model.stages], head: 0.0}
    for x in batches:
        dt, h = _timed(model.stem, x, device)
        t["stem"] += dt
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                dt, h = _timed(block, h, device)
                t["blocks"][s][b] += dt
        t[head] += _timed(heads[head], h, device)[0]
    return t


def _timed(fn: Callable, x: torch.Tensor, device: torch.device) -> tuple[float, object]:
    out = []
    return wall(lambda: out.append(fn(x)), device), out[0]


def prefixes(specs: Sequence[SubnetSpec]) -> set[tuple]:
    """The distinct prefixes of the specs' block sequences: the tree nodes the walk runs."""
    return {spec.flat()[:i] for spec in specs for i in range(1, len(spec.flat()) + 1)}


def _passes(bn: str) -> tuple[str, ...]:
    return ("calibration", "eval") if bn == "subnet" else ("eval",)


def naive_estimate(seconds: dict, specs: Sequence[SubnetSpec], bn: str) -> dict:
    """Module seconds the naive way runs (``seconds``: :func:`module_seconds`), by pass and
    part: per sub-network the stem, its blocks and the whole head."""
    out = {}
    for mode in _passes(bn):
        t = seconds[mode]
        blocks = sum(t["blocks"][s][b] for spec in specs for s, b, _ in spec.flat())
        out[mode] = {"stem": t["stem"] * len(specs), "blocks": blocks, "head": t["head"] * len(specs)}
    return out


def shared_estimate(seconds: dict, specs: Sequence[SubnetSpec], bn: str) -> dict:
    """Seconds a perfect walk needs, by pass and part: the stem once, each distinct prefix's
    last block once, the head per distinct sub-network (re-estimation: up to its last BN
    layer)."""
    leaves = len(set(specs))
    head = {"calibration": "head_bn", "eval": "head"}
    out = {}
    for mode in _passes(bn):
        t = seconds[mode]
        blocks = sum(t["blocks"][p[-1][0]][p[-1][1]] for p in prefixes(specs))
        out[mode] = {"stem": t["stem"], "blocks": blocks, "head": t[head[mode]] * leaves}
    return out


def perfect_seconds(seconds: dict, specs: Sequence[SubnetSpec], bn: str) -> float:
    """The perfect walk's seconds under protocol ``bn`` (:func:`shared_estimate`, summed)."""
    return _total(shared_estimate(seconds, specs, bn))


def eval_parts(seconds: dict, specs: Sequence[SubnetSpec], measured: dict, runs: dict[str, int], bn: str) -> dict:
    """The limit, the achieved speedup and its fraction of the limit, the block-run count
    ratio, both estimates and each way's overhead (measured minus estimated seconds, per
    pass). ``seconds``: :func:`module_seconds`; ``measured``: the
    :func:`stimulative.tools.bench.naive_against_shared` entry of protocol ``bn`` (with
    calibration seconds under ``subnet``)."""
    naive, shared = naive_estimate(seconds, specs, bn), shared_estimate(seconds, specs, bn)
    fraction = _total(shared) / measured["shared_seconds"]
    achieved = measured["speedup"]
    paired = {}
    if "fraction_of_limit_interval" in measured:  # measured round by round: the paired medians and intervals
        fraction = measured["fraction_of_limit_interval"]["value"]
        paired = {k: measured[k] for k in ("limit_interval", "fraction_of_limit_interval")}
    return {
        "limit": measured["limit_interval"]["value"] if paired else achieved / fraction,
        "achieved_speedup": achieved,
        "fraction_of_limit": fraction,
        **paired,
        "block_run_ratio": runs["naive"] / runs["shared"],
        "naive_estimate": naive,
        "shared_estimate": shared,
        "overhead": {way: _overhead(measured, way, est) for way, est in (("naive", naive), ("shared", shared))},
    }


def _total(estimate: dict) -> float:
    return sum(sum(parts.values()) for parts in estimate.values())


def _overhead(measured: dict, way: str, estimate: dict) -> dict:
    """Measured minus estimated seconds per pass: what the way adds to the modules' work."""
    calibration = measured.get(f"{way}_calibration_seconds", 0.0)
    out = {"eval": measured[f"{way}_seconds"] - calibration - sum(estimate["eval"].values())}
    if "calibration" in estimate:
        out["calibration"] = calibration - sum(estimate["calibration"].values())
    return out
