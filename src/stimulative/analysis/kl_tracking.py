"""KL(full network || sub-network) over all sub-networks of the space, recorded each epoch
on a fixed held-out batch (paper Fig. 7)."""

from __future__ import annotations

import json
import os

import torch

from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec
from ..evaluation.scores import evaluate_subnets
from .stats import quantiles


def record_kl(
    model: ElasticNet, specs: list[SubnetSpec], batch: tuple[torch.Tensor, torch.Tensor], epoch: int, path: str
) -> dict:
    """Append one line ``{"epoch", "min", "q1", "median", "q3", "max", "values": {spec: kl}}``
    to ``path``. The full network's running BN statistics are used, as during training; the
    full network itself (KL 0 to itself) is left out."""
    full = model.architecture.full()
    scores = evaluate_subnets(model, [s for s in specs if s != full], [batch], bn="running")
    values = {s.spec: s.kl for s in scores}
    record = {"epoch": epoch, **quantiles(list(values.values())), "values": values}
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def load_kl_tracking(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "kl_tracking.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    latest = {r["epoch"]: r for r in records}  # a resumed run may repeat an epoch: keep the last
    return [latest[e] for e in sorted(latest)]
