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
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed
from .batchnorm import frozen_bn_stats
from .config import TrainConfig, config_from_dict, parse_resolution
from .data import DataSource, load_data
from .elastic import ElasticNet, drop_path_scales, shared_prefix
from .evaluate import evaluate_subnets, summarize
from .loss import distillation_term, stimulative_loss
from .analysis.kl_tracking import record_kl
from .finetune import build_model, load_initial_weights, loafing_change
from .stpp import NAMED_SPACES, kl_weight_at, min_depths_for, resize_batch, shallowest, subnet_sides
from .sampling import Architecture, SamplingSpace, SubnetSpec, parse_spec, sample_subnet, select_subnets, step_generator
from .speed import prepare_model

# config fields that may change between a run and its resumption
RUNTIME_FIELDS = {"device", "workers", "progress", "log_every", "resume", "force", "out", "checkpoint_every", "eval_batch_size"}
RUNTIME_FIELDS |= {"channels_last", "compile", "low_memory"}  # how fast or how much memory, not what is computed
# like the number of processes, how BN statistics are split may change on resume (a run
# started on N GPUs without --ghost-batches keeps its BN semantics on one with --ghost-batches N)
RUNTIME_FIELDS |= {"ghost_batches", "sync_bn"}


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


def build_space(arch: Architecture, min_depths: str, flag: str = "--min-depths") -> SamplingSpace:
    """The sampling space of ``--min-depths``; a ValueError naming the flag if impossible."""
    if not min_depths:
        return SamplingSpace.default(arch)
    try:
        mins = min_depths_for(arch, min_depths)  # integers per stage, or a named space
    except ValueError:
        raise ValueError(f"{flag} {min_depths!r}: write one integer per stage, e.g. 1,1,1, or a named space ({', '.join(NAMED_SPACES)})") from None
    for s, (m, n) in enumerate(zip(mins, arch.stage_sizes)):
        if not 0 <= m <= n:
            raise ValueError(f"{flag} {min_depths!r}: stage {s} has {n} blocks, so its minimum depth must be in 0..{n}, not {m}")
    try:
        return SamplingSpace.from_min_depths(arch, mins)
    except ValueError as e:
        raise ValueError(f"{flag} {min_depths!r}: {e}") from None


def check_input_size(model: ElasticNet, in_chans: int, side: int, device: torch.device) -> None:
    """Raise a ValueError if the model cannot run on ``side`` x ``side`` inputs."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, side, side, device=device))
    except Exception as e:  # noqa: BLE001 - whatever the model raises, the flag is the cause
        raise ValueError(
            f"--subnet-resolution: the model cannot run on {side}x{side} inputs ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "use a model that takes any input size, or a range that stays within the sizes it takes"
        ) from None
    finally:
        model.train(was_training)


def joint_forward(
    model: ElasticNet, x: torch.Tensor, subnets: list[SubnetSpec], ghost_batches: int = 1, main_spec: SubnetSpec | None = None,
    sub_inputs: list[torch.Tensor | None] | None = None, keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of the main network (the full one, or ``main_spec``) and of each sub-network,
    ``((B, classes), [(B, classes), ...])``. Each sub-network continues from the main
    network's activation at the end of their shared prefix (in train mode both compute
    exactly the same there), with BN running statistics frozen.

    With ``ghost_batches`` > 1, BN normalises each equal part of the batch on its own, as
    each rank of a DDP run normalises its share; only the first part updates the running
    statistics (DDP keeps rank 0's). Under DDP this whole function is the forward of the
    wrapped module (:class:`stimulative.distributed.JointForward`): every network or
    sub-network pass of a step belongs in here (DDP wants one forward per backward).

    ``sub_inputs[i]``, if given and not None, is sub-network ``i``'s own input (ST++'s
    smaller inputs): it then runs from its stem, sharing nothing with the main network.

    ``keep`` ``(B, blocks)``: stochastic depth's per-sample branch scales for the main
    network (:func:`stimulative.elastic.drop_path_scales`)."""
    main_spec = main_spec or model.architecture.full()
    main_steps = main_spec.flat()
    mains, subs = [], [[] for _ in subnets]
    for g, xg in enumerate(x.chunk(ghost_batches) if ghost_batches > 1 else [x]):
        kg = None if keep is None else keep.chunk(ghost_batches)[g] if ghost_batches > 1 else keep
        with frozen_bn_stats(model) if g else nullcontext():
            main, trace = model.forward_trace(xg, main_spec, keep=kg)
        mains.append(main)
        if subnets:
            with frozen_bn_stats(model):
                for i, spec in enumerate(subnets):
                    own = sub_inputs[i] if sub_inputs is not None else None
                    if own is not None:
                        subs[i].append(model(own.chunk(ghost_batches)[g] if ghost_batches > 1 else own, spec))
                        continue
                    k = shared_prefix(main_steps, spec.flat())
                    subs[i].append(model.forward_trace(xg, spec, start=(k, trace[k]))[0])
    cat = lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts)  # noqa: E731
    return cat(mains), [cat(p) for p in subs]


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
    ghost_batches: int = 1,
    runner=None,
    sub_inputs: list[torch.Tensor | None] | None = None,
    keep: torch.Tensor | None = None,
) -> StepOutput:
    """Forward of Eq. 1 for one batch (:func:`joint_forward`, or ``runner``, the
    DDP-wrapped :func:`joint_forward`, called as ``runner(x, subnets, ghost_batches)``).
    ``sub_inputs``: per sub-network, its own resized input or None (see joint_forward);
    ``keep``: stochastic depth's per-sample branch scales of the main network, or None.
    The caller takes one backward of the returned loss."""
    with autocast():
        extra = {"sub_inputs": sub_inputs} if sub_inputs is not None else {}
        if keep is not None:
            extra["keep"] = keep
        main, subs = (runner or partial(joint_forward, model))(x, subnets, ghost_batches, **extra)
    loss, ce, kl_sum = stimulative_loss(main, subs, y, kl_weight, temperature, kl, kl_amplitude, label_smoothing)
    return StepOutput(loss, ce, kl_sum)


def low_memory_step(
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
    sub_inputs: list[torch.Tensor | None] | None = None,
) -> StepOutput:
    """:func:`training_step` with the peak memory of about CT plus one sub-network: each
    sub-network's KL term is back-propagated right after its forward, down to its branch
    point on the full network (the end of their shared prefix), and its graph freed; the
    gradients arriving at each branch point are summed. The returned loss has Eq. 1's value,
    and its backward (the caller's, as usual) carries the cross-entropy and those summed
    gradients through the full network once. Same gradients as the joint backward up to
    rounding. The sub-networks' parameter gradients are accumulated here, so the caller
    zeroes gradients before the step, not between it and the backward."""
    full = model.architecture.full()
    full_steps = full.flat()
    with autocast():
        main, trace = model.forward_trace(x, full)
    ce = F.cross_entropy(main.float(), y, label_smoothing=label_smoothing)
    teacher = main.detach()
    kl_sum = torch.zeros((), dtype=torch.float32, device=main.device)
    at_branch: dict[int, torch.Tensor] = {}
    with frozen_bn_stats(model):
        for i, spec in enumerate(subnets):
            own = sub_inputs[i] if sub_inputs is not None else None
            k = 0 if own is not None else shared_prefix(full_steps, spec.flat())
            h = None if own is not None else trace[k].detach().requires_grad_()
            with autocast():
                logits = model(own, spec) if own is not None else model.forward_trace(x, spec, start=(k, h))[0]
            term = distillation_term(teacher, logits, kl, temperature, kl_amplitude)
            (kl_weight * term).backward()
            kl_sum = kl_sum + term.detach()
            if h is not None:
                at_branch[k] = at_branch[k] + h.grad if k in at_branch else h.grad
    # the branch points' gradients enter through a term of value 0: <trace[k], g> - its value
    carry = sum(((trace[k] * g.to(trace[k].dtype)).float().sum() for k, g in at_branch.items()), torch.zeros((), device=main.device))
    loss = ce + (carry - carry.detach()) + kl_weight * kl_sum
    return StepOutput(loss, ce, kl_sum)


def individual_step(
    model: ElasticNet, x: torch.Tensor, y: torch.Tensor, spec: SubnetSpec, label_smoothing: float = 0.0, autocast=nullcontext,
    ghost_batches: int = 1, runner=None,
) -> StepOutput:
    """Train one fixed sub-network alone (its BN statistics are its own)."""
    with autocast():
        logits, _ = (runner or partial(joint_forward, model))(x, [], ghost_batches, spec)
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


def new_epoch_sums() -> dict:
    """Running sums of one epoch: losses on the device (no host sync per step), the step
    count, and ``first_bad``: the 1-based step whose loss was first non-finite, or -1."""
    return {"loss": torch.zeros(()), "ce": torch.zeros(()), "kl": torch.zeros(()), "steps": 0, "first_bad": torch.tensor(-1)}


def train_one_epoch(
    model: ElasticNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    step_fn,
    first_step: int,
    scaler: torch.amp.GradScaler | None = None,
    on_step=None,
    sums: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Run the epoch's batches. ``step_fn(x, y, step) -> StepOutput``. Sums stay on the
    device (no host sync per step); ``on_step(step, sums)`` is called after every step.
    ``sums`` continues the sums of an epoch resumed in its middle."""
    model.train()
    sums = new_epoch_sums() if sums is None else sums
    step = first_step
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)  # before the step: low_memory_step accumulates gradients in it
        out = step_fn(x, y, step)
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
        bad = sums["first_bad"].to(out.loss.device)
        sums["first_bad"] = torch.where((bad < 0) & ~torch.isfinite(out.loss.detach()), step, bad)
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
    else:  # under torchrun: each rank a share of the test images, each counted once
        main = distributed.evaluate_full_sharded(model, data.test, lambda d: data.eval_batches(d, cfg.eval_batch_size, cfg.workers, str(device)), calibration, bn)
    lo, hi = distributed.shard_bounds(len(specs))  # under torchrun: each rank a share of the sub-networks
    bar = tqdm(total=(hi - lo) * math.ceil(len(data.test) / cfg.eval_batch_size), desc=desc or f"eval ({bn} BN)", disable=not cfg.progress or not distributed.is_main(), leave=False)
    scores = distributed.evaluate_subnets_sharded(model, specs, test, calibration, bn, progress=bar.update)
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


def _saved_config(run_dir: str) -> TrainConfig:
    """The configuration a run was started with: its config.yaml, else its checkpoint's."""
    path = os.path.join(run_dir, "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if not isinstance(data, dict):
            raise ValueError("not a mapping of option: value")
    except (OSError, ValueError, yaml.YAMLError) as e:
        found = ckpt.latest_checkpoint(os.path.join(run_dir, "checkpoint"))
        if found is None:
            reason = e.strerror if isinstance(e, OSError) else str(e).splitlines()[0]
            raise TrainingError(f"--resume: cannot read {path!r} ({reason}) and the run has no checkpoint") from None
        data = ckpt.load_meta(found)["config"]
    try:
        return config_from_dict(data).validate()
    except (TypeError, ValueError) as e:
        raise TrainingError(f"--resume: the saved configuration of {run_dir!r} is invalid: {str(e).splitlines()[0]}") from None


def _holds_run(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, "config.yaml")) or ckpt.latest_checkpoint(os.path.join(run_dir, "checkpoint")) is not None


def resolve_run(cfg: TrainConfig) -> TrainConfig:
    """Check the run folder without writing anything: refuse to clobber another run, and on
    --resume return the saved configuration (flags may only change runtime options)."""
    run_dir = cfg.run_dir()
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise TrainingError(f"--out {run_dir!r} is a file, not a folder")
    holds_run = _holds_run(run_dir)
    if cfg.resume:
        if not holds_run:
            raise TrainingError(f"--resume: {run_dir!r} holds no run to continue")
        saved = _saved_config(run_dir)
        for name, value in cfg.to_dict().items():
            if name not in RUNTIME_FIELDS and getattr(saved, name) != value and value != getattr(TrainConfig(), name):
                raise TrainingError(
                    f"--resume: {run_dir!r} was started with --{name.replace('_', '-')} {getattr(saved, name)!r}, not {value!r}"
                )
        # runtime options given on this command line win; the others keep the run's own
        # (a bare `--out RUN --resume` continues exactly as the run was started)
        defaults = TrainConfig()
        for name in RUNTIME_FIELDS:
            if name in ("resume", "force", "out") or getattr(cfg, name) != getattr(defaults, name):
                setattr(saved, name, getattr(cfg, name))
        return saved
    if holds_run or (os.path.isdir(run_dir) and os.listdir(run_dir)):
        if not cfg.force:
            raise TrainingError(f"{run_dir!r} already holds files; pass --resume to continue it, --force to start over, or another --out")
        if not holds_run:
            raise TrainingError(f"--force: {run_dir!r} holds files but no run (no config.yaml, no checkpoint); refusing to delete them")
    return cfg


def create_run_dir(cfg: TrainConfig) -> None:
    """Create the run folder (emptied first with --force) and write config.yaml atomically.
    Called once every input has been checked, so bad input never touches the folder."""
    run_dir = cfg.run_dir()
    if cfg.resume:
        return
    if cfg.force and _holds_run(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.yaml")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path + ".tmp", path)


def prepare_run_dir(cfg: TrainConfig) -> TrainConfig:
    """:func:`resolve_run` then :func:`create_run_dir`."""
    cfg = resolve_run(cfg)
    create_run_dir(cfg)
    return cfg


def truncate_records(path: str, keep) -> None:
    """Keep the JSON-lines records of ``path`` for which ``keep(record)`` holds, dropping
    work that a resumed run redoes and any partial line left by a crash, so the file reads
    as one uninterrupted run. Rewritten atomically."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            try:
                if isinstance(record, dict) and keep(record):
                    kept.append(json.dumps(record) + "\n")
            except (KeyError, TypeError):
                continue
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.writelines(kept)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(path + ".tmp", path)


def main(cfg: TrainConfig) -> dict:
    """Train as configured, write the run folder, return the results. Every input is checked
    before anything is written, so a bad one leaves an existing folder untouched.

    Started by ``torchrun`` with several processes, it trains with DistributedDataParallel
    (see :mod:`stimulative.distributed`); only rank 0 writes into the run folder."""
    with distributed.distributed_session(resolve_device(cfg.device)) as env:
        return _train(cfg, env)


def _global_sums(sums: dict, device: torch.device) -> dict:
    """The epoch's sums over all ranks: losses averaged (each rank saw an equal share of
    every batch), the first non-finite step the earliest of any rank."""
    if not distributed.is_dist():
        return sums
    losses = torch.stack([sums[k].to(device).float() for k in ("loss", "ce", "kl")])
    losses = distributed.all_reduce(losses) / distributed.get_world_size()
    never = torch.iinfo(torch.int64).max
    bad = sums["first_bad"].to(device)
    bad = distributed.all_reduce(torch.where(bad < 0, never, bad), "min")
    return {**sums, "loss": losses[0], "ce": losses[1], "kl": losses[2], "first_bad": torch.where(bad == never, -1, bad)}


def _train(cfg: TrainConfig, env: distributed.DistEnv) -> dict:
    cfg = resolve_run(cfg)
    run_dir = cfg.run_dir()
    device = env.device
    seed_everything(cfg.seed, cfg.deterministic)
    data = load_data(cfg.dataset, cfg.data_root, cfg.seed, cfg.train_fraction, cfg.download, cfg.augment, cfg.image_size,
                     resize=cfg.resize, skip_corrupt=cfg.skip_corrupt, workers=cfg.workers)
    # any registered model, or a timm:/torchvision: one adapted (with --pretrained-file)
    log = print if env.is_main else (lambda _: None)
    model = build_model(cfg, data.num_classes, data.in_chans, data.image_size, pretrained=not cfg.resume, log=log)
    if cfg.init_from and not cfg.resume:  # fine-tuning: on --resume the checkpoint's weights win
        log(f"fine-tuning from {load_initial_weights(model, cfg.init_from)}")
    model = model.to(device)
    if cfg.subnet_resolution:  # ST++'s smaller inputs: the model must take them (CNNs do; a ViT built for one size does not)
        check_input_size(model, data.in_chans, max(1, round(parse_resolution(cfg.subnet_resolution)[0] * data.image_size)), device)
    if cfg.sync_bn:
        model = distributed.convert_sync_bn(model, device)
    prepare_model(model, cfg.channels_last, cfg.compile)  # --channels-last; --compile, block by block
    arch = model.architecture
    space = build_space(arch, cfg.min_depths)
    if cfg.eval_min_depths:
        build_space(arch, cfg.eval_min_depths, "--eval-min-depths")  # checked now, used after training
    fixed = None
    if cfg.mode == "individual":
        fixed = parse_spec(cfg.subnet)
        try:
            arch.validate(fixed)
        except ValueError as e:
            raise ValueError(f"--subnet {cfg.subnet!r}: {e}") from None
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(data.train)} images)")
    bn_groups = cfg.ghost_batches or env.world_size  # BN groups of the global batch
    if bn_groups % env.world_size or cfg.batch_size % bn_groups:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must split evenly into {bn_groups} BN groups (--ghost-batches), "
                         f"and the groups evenly among the {env.world_size} process(es)")
    ghost_batches = bn_groups // env.world_size  # per process
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(model, cfg)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, total_steps, warmup))
    if cfg.low_memory and env.enabled:
        raise ValueError("--low-memory back-propagates each sub-network on its own, which DDP's one backward per forward does not allow: drop it under torchrun")
    scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext

    step, train_seconds, resumed_sums = 0, 0.0, None
    ckpt_dir = os.path.join(run_dir, "checkpoint")
    found = ckpt.latest_checkpoint(ckpt_dir) if cfg.resume else None
    if found:
        meta = ckpt.load_meta(found)
        ckpt.check_compatible(found, meta, cfg.model, data.num_classes, data.in_chans)
        ckpt.load_weights(found, model)
        state = ckpt.load_state(found)
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"training state of {found!r} does not fit this run ({str(e).splitlines()[0]})") from None
        step, train_seconds = meta["step"], float(meta.get("train_seconds", 0.0))
        if not 0 <= step <= total_steps:
            raise ckpt.CheckpointError(f"checkpoint {found!r} is at step {step}, outside this run's {total_steps} steps")
        resumed_sums = state.get("epoch_sums")
    distributed.barrier()  # every rank has read the folder before rank 0 changes it
    if env.is_main:
        create_run_dir(cfg)  # every input is valid: only now touch the folder

    kl_weight = cfg.effective_kl_weight()
    kl_start = int(cfg.kl_start_epoch * steps_per_epoch)
    smallest = shallowest(space, arch, cfg.sampler) if cfg.sandwich else None
    resolution = parse_resolution(cfg.subnet_resolution)
    runner = None  # under torchrun: DDP around the joint forward of the network and its sub-networks
    if env.enabled:
        if fixed is not None:
            distributed.freeze_unused(model, [(s, b) for s, b, _ in fixed.flat()])
        runner = distributed.wrap_ddp(distributed.JointForward(model, joint_forward), env)

    def step_fn(x, y, s):
        if fixed is not None:
            return individual_step(model, x, y, fixed, cfg.label_smoothing, autocast, ghost_batches, runner)
        subnets, sub_inputs = [], None
        lam = kl_weight_at(kl_weight, s, total_steps, kl_start, cfg.kl_schedule)  # lambda schedule
        if lam > 0:
            gen = step_generator(cfg.seed, s) if cfg.same_subnets_across_ranks else distributed.rank_generator(cfg.seed, s, env.rank)
            subnets = [sample_subnet(space, arch, cfg.sampler, gen) for _ in range(cfg.subnets_per_step)]
            if smallest is not None:  # the sandwich rule
                subnets.append(smallest)
            if resolution is not None:  # ST++: each sub-network on a random smaller input
                sides = subnet_sides(gen, len(subnets), x.shape[-1], *resolution)
                sub_inputs = [resize_batch(x, side) for side in sides]
        keep = None
        if cfg.mode == "stochastic-depth":  # blocks dropped per sample, seeded by (seed, step[, rank])
            gen = distributed.rank_generator(cfg.seed, s, env.rank)  # rank 0: step_generator(seed, step)
            keep = drop_path_scales(arch, cfg.drop_path_rate, x.shape[0], gen)
        if cfg.low_memory and subnets:
            return low_memory_step(model, x, y, subnets, lam, cfg.temperature, cfg.kl, cfg.kl_amplitude, cfg.label_smoothing, autocast, sub_inputs)
        return training_step(model, x, y, subnets, lam, cfg.temperature, cfg.kl, cfg.kl_amplitude, cfg.label_smoothing, autocast, ghost_batches, runner, sub_inputs, keep)

    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    # on resume, records of the work to redo go; at an epoch boundary the epoch's own
    # records are written again (from the checkpoint's sums), whether or not the killed
    # process got to write them
    redo_epoch_end = bool(found) and step > 0 and step % steps_per_epoch == 0 and resumed_sums is not None
    if cfg.resume and env.is_main:
        last = step - 1 if redo_epoch_end else step
        truncate_records(metrics_path, lambda r: r["step"] <= last)
        truncate_records(os.path.join(run_dir, "kl_tracking.jsonl"), lambda r: r["epoch"] * steps_per_epoch < step)
    distributed.barrier()
    writer = _tensorboard(run_dir, purge_step=step if cfg.resume else None) if env.is_main else None
    clock = time.perf_counter()

    def check_finite(sums: dict, epoch: int) -> None:
        bad = int(sums["first_bad"])
        if bad >= 0:
            last = ckpt.latest_checkpoint(ckpt_dir)
            kept = f"the last good checkpoint {last!r} (step {ckpt.load_meta(last)['step']}) is kept" if last else "no checkpoint had been written yet"
            raise TrainingError(f"non-finite loss at step {bad} (epoch {epoch + 1}); training stopped; {kept}")

    def save(at_step: int, sums: dict, epoch: int) -> None:
        nonlocal clock, train_seconds
        sums = _global_sums(sums, device)
        check_finite(sums, epoch)
        distributed.broadcast_buffers(model)  # rank 0's BN running statistics, as DDP keeps
        _check_finite_weights(model, at_step)
        now = time.perf_counter()
        train_seconds += now - clock
        clock = now
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                 "epoch_sums": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in sums.items()}}
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        meta = {"step": at_step, "epoch": at_step // steps_per_epoch, "train_seconds": train_seconds, "model": cfg.model,
                "num_classes": data.num_classes, "in_chans": data.in_chans, "config": cfg.to_dict(), "world_size": env.world_size}
        if env.is_main:
            ckpt.save_checkpoint(ckpt_dir, model, state, meta)

    def end_of_epoch(epoch: int, sums: dict) -> None:
        """The epoch's record in metrics.jsonl (and TensorBoard), after its checkpoint."""
        at_step = (epoch + 1) * steps_per_epoch
        quick = distributed.evaluate_full_sharded(model, data.test, lambda d: data.eval_batches(d, cfg.eval_batch_size, cfg.workers, str(device)), bn="running") if fixed is None else {}
        sums = _global_sums(sums, device)
        if not env.is_main:
            return
        n = max(1, sums["steps"])
        record = {"epoch": epoch + 1, "step": at_step, "lr": scheduler.get_last_lr()[0],
                  "loss": float(sums["loss"]) / n, "ce": float(sums["ce"]) / n, "kl": float(sums["kl"]) / n,
                  "test_top1_running_bn": quick.get("top1"), "train_seconds": train_seconds}
        with open(metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if kl_tracking is not None:
            record_kl(model, *kl_tracking, epoch + 1, os.path.join(run_dir, "kl_tracking.jsonl"))
        if writer is not None:
            for k in ("loss", "ce", "kl"):
                writer.add_scalar(f"epoch/{k}", record[k], at_step)
            if quick:
                writer.add_scalar("epoch/test_top1_running_bn", quick["top1"], at_step)

    kl_tracking = None
    if cfg.track_kl and fixed is None:  # paper Fig. 7: KL to every sub-network on a fixed held-out batch
        x_kl, y_kl = next(data.eval_batches(data.test, cfg.track_kl_images, 0, str(device)))
        kl_tracking = (select_subnets(space, arch, cfg.eval_subnets, cfg.seed), (x_kl, y_kl))
        if step == 0 and env.is_main:
            record_kl(model, *kl_tracking, 0, os.path.join(run_dir, "kl_tracking.jsonl"))

    if redo_epoch_end:
        end_of_epoch(step // steps_per_epoch - 1, resumed_sums)

    before = None
    if (cfg.init_from or cfg.pretrained_file) and fixed is None:  # fine-tuning: loafing before training
        before_path = os.path.join(run_dir, "results_before.json")
        if step == 0:
            before = finish(model, data, cfg, device, space, 0.0, out_name="results_before.json")
            if env.is_main:
                print("before fine-tuning:")
                print_summary(before)
        elif os.path.exists(before_path):
            with open(before_path, encoding="utf-8") as fh:
                before = json.load(fh)

    bar = tqdm(total=total_steps, initial=step, desc=f"{cfg.mode} {cfg.model}", unit="step", disable=not cfg.progress or not env.is_main)
    while step < total_steps:
        epoch, start = divmod(step, steps_per_epoch)
        batches = data.train_batches(cfg.batch_size, cfg.seed, epoch, start, cfg.workers, str(device), env.rank, env.world_size)
        sums = resumed_sums if (resumed_sums is not None and start > 0) else new_epoch_sums()
        if start > 0 and resumed_sums is None:
            sums["steps"] = start  # a checkpoint without sums: average over the steps we see
        resumed_sums = None

        def on_step(s, sums, epoch=epoch):
            bar.update(1)
            if s % cfg.log_every == 0 or s % steps_per_epoch == 0:
                sums = _global_sums(sums, device)
                check_finite(sums, epoch)
                loss = float(sums["loss"]) / sums["steps"]
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.4f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss, s)
            if cfg.checkpoint_every and s % cfg.checkpoint_every == 0 and s % steps_per_epoch:
                save(s, sums, epoch)

        sums = train_one_epoch(model, optimizer, scheduler, batches, step_fn, step, scaler, on_step, sums)
        step = epoch * steps_per_epoch + sums["steps"]
        save(step, sums, epoch)
        end_of_epoch(epoch, sums)
    bar.close()
    if writer is not None:
        writer.close()

    results = finish(model, data, cfg, device, space, train_seconds)
    if env.is_main:
        print_summary(results)
        if before is not None:
            print("\n" + "\n".join(loafing_change(before, results)))
    return results


def finish(model: ElasticNet, data: DataSource, cfg: TrainConfig, device: torch.device, space: SamplingSpace, train_seconds: float, out_name: str = "results.json", specs: list[SubnetSpec] | None = None) -> dict:
    """Evaluate the trained model in the configured BN mode(s) and write the results file."""
    arch = model.architecture
    if specs is None:
        if cfg.eval_min_depths:
            space = build_space(arch, cfg.eval_min_depths, "--eval-min-depths")
        specs = [parse_spec(cfg.subnet)] if cfg.mode == "individual" else select_subnets(space, arch, cfg.eval_subnets, cfg.seed)
    modes = ["recalibrated", "running"] if cfg.eval_bn == "both" else [cfg.eval_bn]
    by_bn = {bn: evaluate_run(model, data, cfg, device, specs, bn) for bn in modes}
    first = by_bn[modes[0]]
    results = {
        "mode": cfg.mode, "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed, "epochs": cfg.epochs,
        "train_seconds": train_seconds, "bn": first["bn"], "main": first["main"], "subnets": first["subnets"],
        "by_bn": by_bn, "space_size": space.size("ordered"), "num_classes": data.num_classes, "subnets_evaluated": len(specs),
        "skipped_images": len(data.skipped),
        "config": cfg.to_dict(),
    }
    if not distributed.is_main():  # every rank has the results; rank 0 writes them
        return results
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


def _tensorboard(run_dir: str, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # on resume, purge_step drops the events logged after the checkpoint (they are redone)
    return SummaryWriter(os.path.join(run_dir, "tb"), purge_step=purge_step)
