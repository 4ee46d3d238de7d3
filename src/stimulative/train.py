"""One training loop for common training (CT), stimulative training (ST) and individual
training of one sub-network, shaped like torchvision's reference script:
:func:`train_one_epoch`, :func:`evaluate_run`, :func:`main`."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .batchnorm import frozen_bn_stats
from .config import TrainConfig, config_from_dict
from .data import DataSource, load_data
from .elastic import ElasticNet, shared_prefix
from .evaluate import evaluate_full, evaluate_subnets, summarize
from .loss import stimulative_loss
from .models import create_model
from .sampling import Architecture, SamplingSpace, SubnetSpec, parse_spec, sample_subnet, select_subnets, step_generator
from .speed import prepare_model

# config fields that may change between a run and its resumption
RUNTIME_FIELDS = {"device", "workers", "progress", "log_every", "resume", "force", "out", "checkpoint_every", "eval_batch_size"}
RUNTIME_FIELDS |= {"channels_last", "compile"}  # how fast, not what is computed


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, a run folder in the way, ...)."""


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalars on the device: read them only when logging
    ce: torch.Tensor
    kl: torch.Tensor


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def build_space(arch: Architecture, min_depths: str) -> SamplingSpace:
    if not min_depths:
        return SamplingSpace.default(arch)
    try:
        mins = [int(t) for t in min_depths.split(",")]
    except ValueError:
        raise ValueError(f"--min-depths {min_depths!r}: write one integer per stage, e.g. 1,1,1") from None
    return SamplingSpace.from_min_depths(arch, mins)


def training_step(
    model: ElasticNet,
    x: torch.Tensor,
    y: torch.Tensor,
    subnets: list[SubnetSpec],
    kl_weight: float,
    temperature: float = 1.0,
    kl: str = "kl",
    kl_amplitude: float = 1.0,
    label_smoothing: float = 0.0,
    autocast=nullcontext,
) -> StepOutput:
    """Forward of Eq. 1 for one batch: the full network, then each sampled sub-network
    continuing from the full network's activation at the end of their shared prefix (in
    train mode both compute exactly the same there), with BN running statistics frozen.
    The caller takes one backward of the returned loss."""
    full = model.architecture.full()
    with autocast():
        main, trace = model.forward_trace(x, full)
        subs = []
        if subnets:
            full_steps = full.flat()
            with frozen_bn_stats(model):
                for spec in subnets:
                    k = shared_prefix(full_steps, spec.flat())
                    subs.append(model.forward_trace(x, spec, start=(k, trace[k]))[0])
    loss, ce, kl_sum = stimulative_loss(main, subs, y, kl_weight, temperature, kl, kl_amplitude, label_smoothing)
    return StepOutput(loss, ce, kl_sum)


def individual_step(
    model: ElasticNet, x: torch.Tensor, y: torch.Tensor, spec: SubnetSpec, label_smoothing: float = 0.0, autocast=nullcontext
) -> StepOutput:
    """Train one fixed sub-network alone (its BN statistics are its own)."""
    with autocast():
        logits = model(x, spec)
    ce = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    return StepOutput(ce, ce, torch.zeros_like(ce))


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on BN and biases, as is usual
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def train_one_epoch(
    model: ElasticNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    step_fn,
    first_step: int,
    scaler: torch.amp.GradScaler | None = None,
    on_step=None,
) -> dict[str, torch.Tensor]:
    """Run the epoch's batches. ``step_fn(x, y, step) -> StepOutput``. Sums stay on the
    device (no host sync per step); ``on_step(step, sums)`` is called after every step."""
    model.train()
    sums = {"loss": torch.zeros(()), "ce": torch.zeros(()), "kl": torch.zeros(()), "steps": 0}
    step = first_step
    for x, y in batches:
        out = step_fn(x, y, step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(out.loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out.loss.backward()
            optimizer.step()
        scheduler.step()
        step += 1
        for k in ("loss", "ce", "kl"):
            sums[k] = sums[k].to(out.loss.device) + getattr(out, k).detach().float()
        sums["steps"] += 1
        if on_step is not None:
            on_step(step, sums)
    return sums


def evaluate_run(
    model: ElasticNet, data: DataSource, cfg: TrainConfig, device: torch.device, specs: list[SubnetSpec], bn: str, desc: str = ""
) -> dict:
    """``{"bn", "main": {top1, top5, ce}, "subnets": {count, mean, std, min, max, per_subnet}}``."""
    calibration = (
        data.calibration_inputs(cfg.calib_images, cfg.eval_batch_size, cfg.seed, cfg.workers, str(device)) if bn == "recalibrated" else []
    )
    test = lambda: data.eval_batches(data.test, cfg.eval_batch_size, cfg.workers, str(device))  # noqa: E731
    if cfg.mode == "individual":
        main = evaluate_full_of(model, parse_spec(cfg.subnet), test(), calibration, bn)
    else:
        main = evaluate_full(model, test(), calibration, bn)
    bar = tqdm(total=len(specs) * math.ceil(len(data.test) / cfg.eval_batch_size), desc=desc or f"eval ({bn} BN)", disable=not cfg.progress, leave=False)
    scores = evaluate_subnets(model, specs, test(), calibration, bn, progress=bar.update)
    bar.close()
    return {"bn": bn, "main": main, "subnets": summarize(scores)}


def evaluate_full_of(model: ElasticNet, spec: SubnetSpec, batches, calibration, bn: str) -> dict[str, float]:
    """Top-1/top-5 of one sub-network treated as the network (individual training)."""
    scores = evaluate_subnets(model, [spec], batches, calibration, bn)
    return {"top1": scores[0].top1, "ce": scores[0].ce}


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": list(_flatten_python_state(random.getstate())),
    }


def _flatten_python_state(state):
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def prepare_run_dir(cfg: TrainConfig) -> TrainConfig:
    """Create the run folder, refuse to clobber another run, and on --resume take the
    saved configuration (flags may only change runtime options)."""
    run_dir = cfg.run_dir()
    config_path = os.path.join(run_dir, "config.yaml")
    holds_run = os.path.exists(config_path) or ckpt.latest_checkpoint(os.path.join(run_dir, "checkpoint"))
    if cfg.resume:
        if not holds_run:
            raise TrainingError(f"--resume: {run_dir!r} holds no run to continue")
        with open(config_path) as fh:
            saved = config_from_dict(yaml.safe_load(fh))
        for name, value in cfg.to_dict().items():
            if name not in RUNTIME_FIELDS and getattr(saved, name) != value and value != getattr(TrainConfig(), name):
                raise TrainingError(
                    f"--resume: {run_dir!r} was started with --{name.replace('_', '-')} {getattr(saved, name)!r}, not {value!r}"
                )
        for name in RUNTIME_FIELDS:
            setattr(saved, name, getattr(cfg, name))
        return saved
    if holds_run or (os.path.isdir(run_dir) and os.listdir(run_dir)):
        if not cfg.force:
            raise TrainingError(f"{run_dir!r} already holds files; pass --resume to continue it, --force to start over, or another --out")
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(config_path, "w") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
    return cfg


def main(cfg: TrainConfig) -> dict:
    """Train as configured, write the run folder, return the results."""
    cfg = prepare_run_dir(cfg)
    run_dir = cfg.run_dir()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    data = load_data(cfg.dataset, cfg.data_root, cfg.seed, cfg.train_fraction, cfg.download, cfg.augment, cfg.image_size)
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans).to(device)
    prepare_model(model, cfg.channels_last, cfg.compile)  # --channels-last; --compile, block by block
    arch = model.architecture
    space = build_space(arch, cfg.min_depths)
    fixed = None
    if cfg.mode == "individual":
        fixed = parse_spec(cfg.subnet)
        arch.validate(fixed)
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(data.train)} images)")
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext

    step, train_seconds = 0, 0.0
    ckpt_dir = os.path.join(run_dir, "checkpoint")
    found = ckpt.latest_checkpoint(ckpt_dir) if cfg.resume else None
    if found:
        meta = ckpt.load_meta(found)
        if meta.get("model") != cfg.model:
            raise ckpt.CheckpointError(f"checkpoint {found!r} is for model {meta.get('model')!r}, not {cfg.model!r}")
        ckpt.load_weights(found, model)
        state = ckpt.load_state(found)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, train_seconds = int(meta["step"]), float(meta["train_seconds"])

    kl_weight = cfg.effective_kl_weight()

    def step_fn(x, y, s):
        if fixed is not None:
            return individual_step(model, x, y, fixed, cfg.label_smoothing, autocast)
        subnets = []
        if kl_weight > 0:
            gen = step_generator(cfg.seed, s)
            subnets = [sample_subnet(space, arch, cfg.sampler, gen) for _ in range(cfg.subnets_per_step)]
        return training_step(model, x, y, subnets, kl_weight, cfg.temperature, cfg.kl, cfg.kl_amplitude, cfg.label_smoothing, autocast)

    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    writer = _tensorboard(run_dir)
    clock = time.perf_counter()

    def save(at_step: int) -> None:
        nonlocal clock, train_seconds
        now = time.perf_counter()
        train_seconds += now - clock
        clock = now
        _check_finite_weights(model, at_step)
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        meta = {"step": at_step, "epoch": at_step // steps_per_epoch, "train_seconds": train_seconds, "model": cfg.model,
                "num_classes": data.num_classes, "in_chans": data.in_chans, "config": cfg.to_dict()}
        ckpt.save_checkpoint(ckpt_dir, model, state, meta)

    bar = tqdm(total=total_steps, initial=step, desc=f"{cfg.mode} {cfg.model}", unit="step", disable=not cfg.progress)
    while step < total_steps:
        epoch, start = divmod(step, steps_per_epoch)
        batches = data.train_batches(cfg.batch_size, cfg.seed, epoch, start, cfg.workers, str(device))

        def on_step(s, sums, epoch=epoch):
            bar.update(1)
            if s % cfg.log_every == 0 or s % steps_per_epoch == 0:
                loss = sums["loss"].item() / sums["steps"]
                if not math.isfinite(loss):
                    raise TrainingError(f"non-finite loss at step {s} (epoch {epoch}); the last good checkpoint is kept in {ckpt_dir!r}")
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss, s)
            if cfg.checkpoint_every and s % cfg.checkpoint_every == 0 and s % steps_per_epoch:
                save(s)

        sums = train_one_epoch(model, optimizer, scheduler, batches, step_fn, step, scaler, on_step)
        step += sums["steps"]
        save(step)
        quick = evaluate_full(model, data.eval_batches(data.test, cfg.eval_batch_size, cfg.workers, str(device)), bn="running") if fixed is None else {}
        n = max(1, sums["steps"])
        record = {"epoch": epoch + 1, "step": step, "lr": scheduler.get_last_lr()[0],
                  "loss": sums["loss"].item() / n, "ce": sums["ce"].item() / n, "kl": sums["kl"].item() / n,
                  "test_top1_running_bn": quick.get("top1"), "train_seconds": train_seconds}
        with open(metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if writer is not None:
            for k in ("loss", "ce", "kl"):
                writer.add_scalar(f"epoch/{k}", record[k], epoch + 1)
            if quick:
                writer.add_scalar("epoch/test_top1_running_bn", quick["top1"], epoch + 1)
    bar.close()
    if writer is not None:
        writer.close()

    results = finish(model, data, cfg, device, space, train_seconds)
    print_summary(results)
    return results


def finish(model: ElasticNet, data: DataSource, cfg: TrainConfig, device: torch.device, space: SamplingSpace, train_seconds: float, out_name: str = "results.json", specs: list[SubnetSpec] | None = None) -> dict:
    """Evaluate the trained model in the configured BN mode(s) and write the results file."""
    arch = model.architecture
    if specs is None:
        specs = [parse_spec(cfg.subnet)] if cfg.mode == "individual" else select_subnets(space, arch, cfg.eval_subnets, cfg.seed)
    modes = ["recalibrated", "running"] if cfg.eval_bn == "both" else [cfg.eval_bn]
    by_bn = {bn: evaluate_run(model, data, cfg, device, specs, bn) for bn in modes}
    first = by_bn[modes[0]]
    results = {
        "mode": cfg.mode, "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed, "epochs": cfg.epochs,
        "train_seconds": train_seconds, "bn": first["bn"], "main": first["main"], "subnets": first["subnets"],
        "by_bn": by_bn, "space_size": space.size("ordered"), "subnets_evaluated": len(specs),
        "config": cfg.to_dict(),
    }
    path = os.path.join(cfg.run_dir(), out_name)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(results, fh, indent=1)
    os.replace(tmp, path)
    return results


def print_summary(results: dict) -> None:
    print(f"\n{results['mode'].upper()} {results['model']} on {results['dataset']} (seed {results['seed']}, {results['epochs']} epochs, {results['train_seconds']:.0f} s)")
    print(f"{'BN statistics':<14} {'full top-1':>10} {'subnets':>8} {'mean':>7} {'std':>6} {'min':>7} {'max':>7}")
    for bn, r in results["by_bn"].items():
        s = r["subnets"]
        print(f"{bn:<14} {r['main']['top1']:>10.2f} {s['count']:>8} {s['mean']:>7.2f} {s['std']:>6.2f} {s['min']:>7.2f} {s['max']:>7.2f}")


def _check_finite_weights(model: torch.nn.Module, step: int) -> None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise TrainingError(f"non-finite value in {name} at step {step}; the last good checkpoint is kept")


def _tensorboard(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(os.path.join(run_dir, "tb"))
