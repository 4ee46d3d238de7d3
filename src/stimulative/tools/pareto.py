"""Accuracy against cost for every sub-network of a trained run: top-1, parameters, FLOPs and
latency on this machine, the Pareto front, and the best sub-network under a budget.

``stimulative pareto RUN_DIR`` writes ``pareto.json`` and ``pareto.png`` into the run folder.
FLOPs are counted by ``torch.utils.flop_counter`` for one image (a multiply-add counts 2;
MACs are half); latency is the minimum (or median) wall time of a forward pass of ``latency_batch``
images, after warm-up, in inference mode on the chosen device, with the threads PyTorch
uses here. Latency is a measurement of this machine at this moment: other processes
running at the same time make it noisy.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.batchnorm import bn_protocol, needs_calibration
from ..core.elastic import ElasticNet
from ..core.sampling import BRANCH, Architecture, SamplingSpace, SubnetSpec, parse_spec, select_subnets
from ..core.spaces import build_space
from ..data import DataSource
from ..evaluation.scores import evaluate_subnets
from ..reporting.pareto_figure import plot_pareto
from ..runtime.files import read_json_or_none, write_json
from ..runtime.measure import count_params, forward_flops
from ..training.config import TrainConfig
from ..training.run_dir import RunDir


class SubnetModule(nn.Module):
    """One sub-network of an :class:`ElasticNet` as a plain module: the stem, the kept blocks
    in order (each on its path), the head. It shares the model's modules."""

    def __init__(self, model: ElasticNet, spec: SubnetSpec) -> None:
        super().__init__()
        model.architecture.validate(spec)
        self.stem, self.head = model.stem, model.head
        self.blocks = nn.ModuleList(model.stages[s][b] for s, b, _ in spec.flat())
        self.branch_only = [p == BRANCH for _, _, p in spec.flat()]
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block, branch in zip(self.blocks, self.branch_only, strict=True):
            h = block.run(h, BRANCH) if branch else block(h)
        return self.head(h)


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (no costlier-or-equal and at-least-as-
    accurate point is strictly better in one of them), by increasing cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def pick_under_budget(rows: Sequence[dict], budget_ms: float | None = None, budget_mflops: float | None = None) -> dict:
    """The most accurate sub-network within every given budget (ties: the cheaper)."""
    fits = [
        r
        for r in rows
        if (budget_ms is None or r["latency_ms"] <= budget_ms)
        and (budget_mflops is None or r["mflops"] <= budget_mflops)
    ]
    if not fits:
        cheapest_ms = min(r["latency_ms"] for r in rows)
        cheapest_mflops = min(r["mflops"] for r in rows)
        raise ValueError(
            f"no sub-network fits the budget ({_budget_text(budget_ms, budget_mflops)}); the cheapest takes "
            f"{cheapest_ms:.3g} ms and {cheapest_mflops:.4g} MFLOPs"
        )
    return max(fits, key=lambda r: (r["top1"], -r["latency_ms"], -r["mflops"]))


def _budget_text(budget_ms: float | None, budget_mflops: float | None) -> str:
    parts = ([f"{budget_ms:g} ms"] if budget_ms is not None else []) + (
        [f"{budget_mflops:g} MFLOPs"] if budget_mflops is not None else []
    )
    return " and ".join(parts)


def measure_subnets(
    model: ElasticNet,
    specs: Sequence[SubnetSpec],
    scores: dict[str, float],
    example: torch.Tensor,
    latency_batch: int = 1,
    repeats: int = 20,
    progress=None,
    latency_stat: str = "min",
) -> list[dict]:
    """One row per sub-network: spec, blocks, top-1 (from ``scores``), params, MFLOPs and
    latency in ms (``latency_ms`` is the ``latency_stat`` of the repeats; median and minimum
    are kept too). Latency is timed round-robin, one forward pass of each sub-network per
    round, so a burst of load elsewhere on the machine hits them all alike rather than a few;
    on a busy machine the minimum is the steadier estimate."""
    one = example[:1]
    batch = one.expand(latency_batch, *one.shape[1:]).contiguous()
    subs = [SubnetModule(model, spec).eval() for spec in specs]
    rows = [
        {
            "spec": spec.to_text(),
            "blocks": len(spec.flat()),
            "top1": scores[spec.to_text()],
            "params": count_params(sub),
            "mflops": forward_flops(sub, one) / 1e6,
        }
        for spec, sub in zip(specs, subs, strict=True)
    ]
    times: list[list[float]] = [[] for _ in subs]
    sync = torch.cuda.synchronize if batch.is_cuda else (lambda: None)
    with torch.inference_mode():
        for sub in subs:
            for _ in range(3):  # warm-up
                sub(batch)
        for _ in range(repeats):
            for i, sub in enumerate(subs):
                sync()
                t = time.perf_counter()
                sub(batch)
                sync()
                times[i].append(1000.0 * (time.perf_counter() - t))
            if progress is not None:
                progress(1)
    for row, ts in zip(rows, times, strict=True):
        row["latency_median_ms"], row["latency_min_ms"] = statistics.median(ts), min(ts)
        row["latency_ms"] = row[f"latency_{latency_stat}_ms"]
    return rows


def pareto_run(
    run_dir: str,
    bn: str = "subnet",
    max_subnets: int | None = None,
    min_depths: str | None = None,
    latency_batch: int = 1,
    repeats: int = 20,
    budget_ms: float | None = None,
    budget_mflops: float | None = None,
    out: str = "pareto.json",
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    latency_stat: str = "min",
    seed: int | None = None,
    subnets: list[str] | None = None,
) -> dict:
    """Measure every sub-network of a run (or reuse ``out`` if it holds the same
    measurement), plot, and pick under the budget. Returns the written document. ``out`` is a
    file name inside the run folder or a path; ``seed`` (default: the run's) draws the sample."""
    _check_options(bn, out, latency_stat)
    path = os.path.join(run_dir, out)
    plot_path = path[: -len(".json")] + ".png"
    model, cfg, data, dev, meta = RunDir(run_dir).load(device)
    model.eval()
    arch = model.architecture
    space = build_space(arch, cfg.min_depths if min_depths is None else min_depths)
    specs = _chosen_subnets(space, arch, subnets, max_subnets or cfg.eval_subnets, cfg.seed if seed is None else seed)
    settings = {
        "bn": bn,
        "latency_batch": latency_batch,
        "latency_stat": latency_stat,
        "repeats": repeats,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "subnets": [s.to_text() for s in specs],
        "input": [meta["in_chans"], data.image_size, data.image_size],
    }
    rows = _reusable_rows(path, settings, force)
    if rows is None:
        scores = _top1_scores(model, cfg, data, dev, specs, bn, progress)
        example = next(iter(data.eval_batches(data.test, 1, 0, str(dev))))[0]
        bar = tqdm(total=repeats, desc="latency rounds", disable=not progress, leave=False)
        rows = measure_subnets(model, specs, scores, example, latency_batch, repeats, bar.update, latency_stat)
        bar.close()
    doc = {"run": run_dir, "model": cfg.model, "settings": settings, **_front(rows, arch), "pick": None}
    doc["pick"], failed = _budget_pick(rows, budget_ms, budget_mflops)  # the pick carries its front flags
    write_json(path, doc)
    title = f"{cfg.model}: {bn} BN, {latency_stat} latency of batch {latency_batch} on {dev}"
    plot_pareto(rows, plot_path, title=title, pick=doc["pick"])
    print_pareto(doc)
    print(f"written {path} and {plot_path}")
    if failed is not None:
        raise failed
    return doc


def _chosen_subnets(
    space: SamplingSpace, arch: Architecture, subnets: list[str] | None, count: int, seed: int
) -> list[SubnetSpec]:
    """The named sub-networks, else the space's (a seeded sample of ``count`` if larger)."""
    if not subnets:
        return select_subnets(space, arch, count, seed)
    specs = [parse_spec(text) for text in subnets]
    for spec in specs:
        arch.validate(spec)
    return specs


def _reusable_rows(path: str, settings: dict, force: bool) -> list[dict] | None:
    """The rows measured earlier at ``path`` with the same settings; None if there are none
    or ``force``. An earlier measurement with other settings is an error."""
    previous = _previous_measurement(path)
    if previous is None or force:
        return None
    if previous.get("settings") != settings:
        raise ValueError(
            f"{path!r} holds another measurement (other sub-networks or settings); pass --force to redo it, or "
            "--out another.json"
        )
    print(f"reusing the measurements in {path} (pass --force to measure again)")
    return previous["subnets"]


def _budget_pick(
    rows: list[dict], budget_ms: float | None, budget_mflops: float | None
) -> tuple[dict | None, ValueError | None]:
    """``(pick, None)``: the best sub-network under the budget (None without a budget), or
    ``(None, error)`` when none fits (the measurements are still worth writing)."""
    if budget_ms is None and budget_mflops is None:
        return None, None
    try:
        pick = pick_under_budget(rows, budget_ms, budget_mflops)
    except ValueError as e:
        return None, e
    return {"budget_ms": budget_ms, "budget_mflops": budget_mflops, **pick}, None


def _check_options(bn: str, out: str, latency_stat: str) -> None:
    if latency_stat not in ("median", "min"):
        raise ValueError(f"unknown latency statistic {latency_stat!r}; choose from median, min")
    bn_protocol(bn)
    if not out.endswith(".json") or (os.path.basename(out) == out and out in RunDir.OWN_FILES):
        raise ValueError(f"--out {out!r}: give a new .json file name")


def _top1_scores(
    model: ElasticNet,
    cfg: TrainConfig,
    data: DataSource,
    dev: torch.device,
    specs: Sequence[SubnetSpec],
    bn: str,
    progress: bool,
) -> dict[str, float]:
    """Top-1 on the test split of every sub-network, by spec, with the run's BN calibration."""
    calibration = (
        data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed, 0, str(dev))
        if needs_calibration(bn)
        else []
    )
    test = data.eval_batches(data.test, cfg.eval_batch_size, 0, str(dev))
    bar = tqdm(
        total=len(specs) * math.ceil(len(data.test) / cfg.eval_batch_size),
        desc=f"top-1 ({bn} BN)",
        disable=not progress,
        leave=False,
    )
    scores = {s.spec: s.top1 for s in evaluate_subnets(model, specs, test, calibration, bn, progress=bar.update)}
    bar.close()
    return scores


def _front(rows: list[dict], arch: Architecture) -> dict:
    """The rows marked with their place on the Pareto fronts by latency and by FLOPs, and the
    full network's row (None if it was not measured)."""
    by_ms = pareto_front([r["latency_ms"] for r in rows], [r["top1"] for r in rows])
    by_flops = pareto_front([r["mflops"] for r in rows], [r["top1"] for r in rows])
    for i, r in enumerate(rows):
        r["pareto_latency"], r["pareto_flops"] = i in by_ms, i in by_flops
    return {"subnets": rows, "full": next((r for r in rows if parse_spec(r["spec"]) == arch.full()), None)}


def print_pareto(doc: dict) -> None:
    rows = doc["subnets"]
    front = [r for r in rows if r["pareto_latency"]]
    print(f"{len(rows)} sub-networks of {doc['model']}; Pareto front by latency ({len(front)}):")
    print(f"{'sub-network':<22} {'blocks':>6} {'top-1':>7} {'params':>10} {'MFLOPs':>9} {'ms':>8}")
    for r in sorted(front, key=lambda r: r["latency_ms"]):
        print(
            f"{r['spec']:<22} {r['blocks']:>6} {r['top1']:>7.2f} {r['params']:>10,} {r['mflops']:>9.3f} "
            f"{r['latency_ms']:>8.3f}"
        )
    if doc.get("full"):
        f = doc["full"]
        print(f"full network {f['spec']}: top-1 {f['top1']:.2f}, {f['mflops']:.3f} MFLOPs, {f['latency_ms']:.3f} ms")
    pick = doc.get("pick")
    if pick:
        print(
            f"best under {_budget_text(pick['budget_ms'], pick['budget_mflops'])}: {pick['spec']} "
            f"(top-1 {pick['top1']:.2f}, {pick['mflops']:.3f} MFLOPs, {pick['latency_ms']:.3f} ms); "
            f"deploy it with: stimulative export {doc['run']} --subnet {pick['spec']} --bn {doc['settings']['bn']}"
        )


def _previous_measurement(path: str) -> dict | None:
    """The pareto file already at ``path``, None if there is none; an unreadable one is an
    error (it is never overwritten without --force)."""
    if not os.path.exists(path):
        return None
    previous = read_json_or_none(path)
    if previous is None:
        raise ValueError(f"{path!r} exists but is not a readable pareto file; pass --force to overwrite it")
    return previous
