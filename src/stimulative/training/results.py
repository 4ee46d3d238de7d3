"""The evaluation that ends a run: the full network and the sub-networks in the configured
BN mode(s), summarised in the results file of the run folder and a console table."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..core.batchnorm import BN_PROTOCOLS, needs_calibration
from ..core.elastic import ElasticNet
from ..core.sampling import SamplingSpace, SubnetSpec, parse_spec, select_subnets
from ..core.spaces import build_space
from ..data import DataSource
from ..evaluation.scores import evaluate_subnets, summarize
from ..evaluation.sharded import evaluate_full_sharded, evaluate_subnets_sharded
from ..runtime.distributed import is_main, shard_bounds
from ..runtime.files import write_json
from .config import TrainConfig
from .run_dir import RunDir


def evaluate_run(
    model: ElasticNet,
    data: DataSource,
    cfg: TrainConfig,
    device: torch.device,
    specs: list[SubnetSpec],
    bn: str,
    calibration: list[torch.Tensor],
    desc: str = "",
    split: str = "test",
) -> dict:
    """``{"bn", "main": {top1, top5, ce}, "subnets": {count, mean, std, min, max, per_subnet}}``
    on the ``split`` images (see :func:`split_of`); ``calibration``: the re-estimation images
    (unused under ``running``)."""
    images = split_of(data, split)
    test = lambda: data.eval_batches(images, cfg.eval_batch_size, cfg.workers, str(device))  # noqa: E731
    run_bn = bn
    if cfg.mode == "individual":
        # the trained sub-network is this run's whole network: "full" re-estimates its statistics
        run_bn = "subnet" if bn == "full" else bn
        main = evaluate_full_of(model, parse_spec(cfg.subnet), test(), calibration, run_bn)
    else:  # under torchrun: each rank a share of the test images, each counted once
        main = evaluate_full_sharded(
            model,
            images,
            lambda d: data.eval_batches(d, cfg.eval_batch_size, cfg.workers, str(device)),
            calibration,
            bn,
        )
    lo, hi = shard_bounds(len(specs))  # under torchrun: each rank a share of the sub-networks
    bar = tqdm(
        total=(hi - lo) * math.ceil(len(images) / cfg.eval_batch_size),
        desc=desc or f"eval ({bn} BN)",
        disable=not cfg.progress or not is_main(),
        leave=False,
    )
    scores = evaluate_subnets_sharded(model, specs, test, calibration, run_bn, progress=bar.update)
    bar.close()
    return {"bn": bn, "main": main, "subnets": summarize(scores)}


SPLITS = ("test", "val", "train")


def split_of(data: DataSource, split: str):
    """The images of ``split``: the test split, the validation hold-out, or the training
    images (with test-time transforms: Eq. 4 is stated for training losses)."""
    images = {"test": data.test, "val": data.val, "train": data.calibration}.get(split, "unknown")
    if isinstance(images, str):
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if images is None:
        raise ValueError("this run has no validation split (--val-fraction 0)")
    return images


def evaluate_full_of(model: ElasticNet, spec: SubnetSpec, batches, calibration, bn: str) -> dict[str, float]:
    """Top-1/top-5 of one sub-network treated as the network (individual training)."""
    scores = evaluate_subnets(model, [spec], batches, calibration, bn)
    return {"top1": scores[0].top1, "ce": scores[0].ce}


def finish(
    model: ElasticNet,
    data: DataSource,
    cfg: TrainConfig,
    device: torch.device,
    space: SamplingSpace,
    train_seconds: float,
    out_name: str = RunDir.RESULTS,
    specs: list[SubnetSpec] | None = None,
    extra: dict | None = None,
    split: str = "test",
    calibration: list[torch.Tensor] | None = None,
) -> dict:
    """Evaluate the trained model in the configured BN protocol(s) and write the results
    file (``extra``: more entries for it, e.g. the best epoch). ``calibration``: the
    re-estimation images if the caller holds them already (built once here otherwise)."""
    arch = model.architecture
    if specs is None:
        if cfg.eval_min_depths:
            space = build_space(arch, cfg.eval_min_depths, "--eval-min-depths")
        specs = (
            [parse_spec(cfg.subnet)]
            if cfg.mode == "individual"
            else select_subnets(space, arch, cfg.eval_subnets, cfg.seed)
        )
    modes = list(BN_PROTOCOLS) if cfg.eval_bn == "all" else [cfg.eval_bn]
    if calibration is None and any(needs_calibration(bn) for bn in modes):
        calibration = data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed, cfg.workers,
                                              str(device))  # fmt: skip
    by_bn = {
        bn: evaluate_run(model, data, cfg, device, specs, bn, calibration if needs_calibration(bn) else [], split=split)
        for bn in modes
    }
    first = by_bn[modes[0]]
    results = {
        "mode": cfg.mode,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "train_seconds": train_seconds,
        "bn": first["bn"],
        "main": first["main"],
        "subnets": first["subnets"],
        "by_bn": by_bn,
        "split": split,
        "space_size": space.size("ordered"),
        "num_classes": data.num_classes,
        "subnets_evaluated": len(specs),
        "skipped_images": len(data.skipped),
        **(extra or {}),
        "config": cfg.to_dict(),
    }
    if not is_main():  # every rank has the results; rank 0 writes them
        return results
    write_json(RunDir(cfg.run_dir()).file(out_name), results)
    return results


def print_summary(results: dict) -> None:
    print(
        f"\n{results['mode'].upper()} {results['model']} on {results['dataset']} (seed {results['seed']}, "
        f"{results['epochs']} epoch{'s' if results['epochs'] != 1 else ''}, {results['train_seconds']:.0f} s)"
    )
    print(f"{'BN protocol':<14} {'full top-1':>10} {'subnets':>8} {'mean':>7} {'std':>6} {'min':>7} {'max':>7}")
    for bn, r in results["by_bn"].items():
        s = r["subnets"]
        print(
            f"{bn:<14} {r['main']['top1']:>10.2f} {s['count']:>8} {s['mean']:>7.2f} {s['std']:>6.2f} "
            f"{s['min']:>7.2f} {s['max']:>7.2f}"
        )
