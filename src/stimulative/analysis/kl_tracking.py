"""KL(full network || sub-network) over all sub-networks of the space, recorded each epoch
on a fixed held-out batch (paper Fig. 7)."""

from __future__ import annotations

import os

import torch

from ..core.elastic import ElasticNet
from ..core.sampling import SubnetSpec
from ..evaluation.scores import evaluate_subnets
from ..runtime.files import append_record, read_records
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
    append_record(path, record)
    return record


def load_kl_tracking(run_dir: str) -> list[dict]:
    """The run's KL records, one per epoch, in epoch order (none if it tracked none)."""
    records = read_records(os.path.join(run_dir, "kl_tracking.jsonl"))
    latest = {r["epoch"]: r for r in records}  # a resumed run may repeat an epoch: keep the last
    return [latest[e] for e in sorted(latest)]
