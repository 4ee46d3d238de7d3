"""Where the time of the shared all-sub-network evaluation goes, against its limit.

The limit: sharing alone can at best save the repeated block runs, so the speedup of the
shared walk over the naive way is bounded by ``block runs naive / block runs shared`` (per
image, :func:`stimulative.tools.bench.block_runs`) — if blocks were all there is. The rest
is the parts that sharing does not remove or that the walk adds: BN re-estimation passes,
the stem (once per sub-network naively, once in the walk), the head (once per sub-network
in both), and the walk's bookkeeping and data movement (the remainder). Each part is timed
on its own, in eval mode, over the evaluation images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec
from ..runtime.measure import wall


@torch.no_grad()
def block_seconds(model: ElasticNet, inputs: Sequence[torch.Tensor], device: torch.device) -> dict:
    """Seconds of the stem, of each block (keyed ``(stage, index)``) and of the head, each
    timed alone on the full network's activations over ``inputs``."""
    stem = head = 0.0
    blocks: dict[tuple[int, int], float] = {}
    for x in inputs:
        stem += wall(lambda x=x: model.stem(x), device)
        h = model.stem(x)
        for s, stage in enumerate(model.stages):
            for b, block in enumerate(stage):
                blocks[(s, b)] = blocks.get((s, b), 0.0) + wall(lambda block=block, h=h: block(h), device)
                h = block(h)
        head += wall(lambda h=h: model.head(h), device)
    return {"stem": stem, "head": head, "blocks": blocks}


def walk_prefixes(specs: Sequence[SubnetSpec]) -> set[tuple]:
    """The distinct prefixes of the specs' block sequences: the blocks the shared walk runs."""
    return {spec.flat()[:i] for spec in specs for i in range(1, len(spec.flat()) + 1)}


def eval_parts(
    model: ElasticNet,
    specs: Sequence[SubnetSpec],
    inputs: Sequence[torch.Tensor],
    device: torch.device,
    measured: dict,
    runs: dict[str, int],
) -> dict:
    """The limit, the achieved speedup and its fraction of the limit, and the shared walk's
    seconds split into re-estimation, stem, head, blocks (estimated from the per-block
    seconds) and the remainder (bookkeeping and data movement). ``measured``: the
    :func:`naive_against_shared` entry (with calibration seconds)."""
    model.eval()
    t = block_seconds(model, inputs, device)
    block_of = lambda step: t["blocks"].get(step[:2], 0.0)  # noqa: E731 (a branch path: the block's own time)
    shared_blocks = sum(block_of(p[-1]) for p in walk_prefixes(specs))
    naive_blocks = sum(block_of(b) for spec in specs for b in spec.flat())
    limit = runs["naive"] / runs["shared"]
    achieved = measured["speedup"]
    inference = measured["shared_seconds"] - measured.get("shared_calibration_seconds", 0.0)
    parts = {
        "reestimation": measured.get("shared_calibration_seconds", 0.0),
        "stem": t["stem"],
        "head": t["head"] * len(specs),
        "blocks_estimate": shared_blocks,
    }
    parts["remainder"] = inference - parts["stem"] - parts["head"] - parts["blocks_estimate"]
    return {
        "block_run_limit": limit,
        "achieved_speedup": achieved,
        "fraction_of_limit": achieved / limit,
        "shared_seconds_parts": parts,
        "naive_seconds_parts_estimate": {
            "reestimation": measured.get("naive_calibration_seconds", 0.0),
            "stem": t["stem"] * len(specs),
            "head": t["head"] * len(specs),
            "blocks_estimate": naive_blocks,
        },
        "blocks_only_speedup_estimate": naive_blocks / shared_blocks if shared_blocks else None,
    }
