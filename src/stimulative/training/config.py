"""Training configuration: one typed dataclass. Command-line flags are generated from its
fields (``kl_weight`` <-> ``--kl-weight``), a YAML file may set any of them, flags override
the file, and the resolved configuration is written into every run folder and checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from ..core.batchnorm import BN_PROTOCOLS
from ..core.logit_norm import NORM_KD_TYPES
from ..core.loss import KL_KINDS
from ..core.resolution import parse_resolution
from ..core.sub_losses import NEEDS_LABELS, ST_LOSSES
from ..models.adapter import parse_model_args
from ..models.initialisation import CLASSIFIER_INITS
from ..transforms import AUTO_AUGMENTS
from .backward import BACKWARDS, LOW_MEMORY, per_subnet_conflict

MODES = ("st", "ct", "individual", "stochastic-depth")
AMP = ("none", "bf16", "fp16")
EVAL_BN = ("all", *BN_PROTOCOLS)
FORMER_KEYS = ("low_memory",)  # options renamed since, still read from YAML


POSITIVE = (
    "epochs",
    "val_every",
    "batch_size",
    "lr",
    "temperature",
    "subnets_per_step",
    "calib_images",
    "eval_subnets",
    "eval_batch_size",
    "track_kl_images",
    "log_every",
    "image_size",
    "kl_amplitude",
)
NOT_NEGATIVE = (
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "kl_weight",
    "workers",
    "checkpoint_every",
    "ghost_batches",
    "resize",
    "main_coef",
)


def _opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    # what to train
    mode: str = _opt(
        "st",
        "st: stimulative training; ct: common training (no KL); individual: train --subnet alone; stochastic-depth: "
        "CT with blocks dropped per sample (Huang et al. 2016), see --drop-path-rate",
        MODES,
    )
    model: str = _opt("resnet20", "registered model name (see `stimulative models`)")
    dataset: str = _opt("digits", "digits (shipped with scikit-learn), cifar10, cifar100 or imagefolder")
    data_root: str = _opt(
        "data", "folder holding cifar-10-batches-py / cifar-100-python, or train/ and val/ for imagefolder"
    )
    download: bool = _opt(False, "download CIFAR into --data-root if it is missing")
    train_fraction: float = _opt(1.0, "seeded, stratified fraction of the training split to use")
    val_fraction: float = _opt(
        0.1,
        "fraction of the training split held out (fixed, stratified) for the per-epoch validation top-1 and the "
        "best epoch; the test split is used only at the end; 0: no validation split",
    )
    val_every: int = _opt(
        1,
        "validate every N epochs and after the last (the best epoch is chosen among those validated): each "
        "validation re-estimates the full network's BN on --calib-images training images, which on a small data set "
        "(the digits: about a third of an epoch) is most of the trainer's time beyond the steps",
    )
    select_on_test: bool = _opt(
        False,
        "per-epoch numbers and the best epoch on the test split instead (what the official code does with ImageNet's "
        "val set); results.json then says so",
    )
    augment: bool = _opt(
        False, "digits only: random shifts of up to one pixel (CIFAR/ImageNet always use the paper's augmentations)"
    )
    image_size: int = _opt(
        224,
        "imagefolder crop size, for training and evaluation unless --train-crop-size / --val-crop-size say otherwise",
    )
    train_crop_size: int = _opt(
        0, "imagefolder: random-resized-crop side for training (official 224; its best ST++ run 200); 0: --image-size"
    )
    val_resize_size: int = _opt(
        0,
        "imagefolder: evaluation images are resized to this side before the centre crop (official 256; its best ST++ "
        "run 240, chosen on ImageNet val); 0: round(val crop / 0.875)",
    )
    val_crop_size: int = _opt(0, "imagefolder: evaluation centre-crop side (official 224); 0: --image-size")
    auto_augment: str = _opt(
        "none",
        "CIFAR/imagefolder: an augmentation policy (torchvision v2), after colour jitter: randaugment (1 op, "
        "magnitude 9, as the official with_RA_torch), trivialaugment (TrivialAugmentWide), autoaugment (ImageNet "
        "policy for imagefolder, CIFAR-10 policy for CIFAR)",
        AUTO_AUGMENTS,
    )
    random_erasing: float = _opt(
        0.0, "CIFAR/imagefolder: probability of v2.RandomErasing after normalisation (the official with_RE: 0.5)"
    )
    color_jitter: float = _opt(
        0.0, "CIFAR/imagefolder: ColorJitter brightness = contrast = saturation = this (the official code: 0.4)"
    )
    lighting: float = _opt(
        0.0,
        "CIFAR/imagefolder: AlexNet PCA lighting noise of this std on [0, 1] images (the official code: 0.1, "
        "applied to uint8 images, where it is nearly a no-op)",
    )
    mixup: float = _opt(
        0.0,
        "mixup alpha on training batches (v2.MixUp; the official code: 0.2); soft targets for the main CE and the "
        "--st-loss; 0: off",
    )
    cutmix: float = _opt(
        0.0,
        "CutMix alpha on training batches (v2.CutMix; the official code: 1.0); with --mixup one of the two per batch",
    )
    skip_corrupt: bool = _opt(
        False,
        "imagefolder: check every image up front, skip and count the unreadable or corrupt ones (default: stop "
        "naming the first one met)",
    )
    resize: int = _opt(
        0,
        "digits/CIFAR: resize images to this side for models that need larger inputs (e.g. 32 for "
        "timm:vit_tiny_patch16_224); 0 keeps the data set's size",
    )
    model_args: str = _opt(
        "", "timm:/torchvision: models: keyword arguments of the model, e.g. drop_path_rate=0.1,dynamic_img_size=True"
    )
    pretrained_file: str = _opt(
        "",
        "timm:/torchvision: models: local weights of the original model (.safetensors or a state dict; never "
        "downloaded); a classifier for other classes is re-initialised",
    )
    init_from: str = _opt(
        "",
        "fine-tune: start from a previous run's weights (its folder) or a weights file of this model; loafing is "
        "measured before training (results_before.json) and after",
    )
    bn_zero_init: bool = _opt(
        True,
        "keep the models' zero-initialised last BN gamma of each residual branch (resnet50/resnet101 and their _cifar "
        "variants have one; the CIFAR ResNets and MobileNetV3 have gamma = 1 anyway): every skippable block then "
        "starts as the identity, so every sub-network equals the full network at initialisation. "
        "--no-bn-zero-init: gamma = 1 in every BN, as the official code",
    )
    classifier_init: str = _opt(
        "model",
        "classifier initialisation: model (as each family builds it) or normal (weight ~ N(0, 0.01^2), bias 0, as "
        "the official code)",
        CLASSIFIER_INITS,
    )
    # optimisation (paper's CIFAR recipe, shorter)
    epochs: int = _opt(30, "training epochs")
    batch_size: int = _opt(64, "global batch size (all ranks together)")
    lr: float = _opt(0.05, "peak learning rate for the global batch (cosine decay)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum (the official code: on)")
    weight_decay: float = _opt(3e-5, "weight decay")
    wd_all_params: bool = _opt(
        False,
        "weight decay on every parameter, BN and biases included (the official code); default: on the weights of "
        "convolutions and linear layers only",
    )
    min_lr_ratio: float = _opt(
        0.0,
        "floor of the learning rate as a fraction of --lr: the cosine becomes max(cosine, this) (the official "
        "--min_lr with --min_lr_coef 1e-4 is 1e-4); 0: no floor",
    )
    warmup_epochs: float = _opt(0.0, "linear learning-rate warm-up, in epochs")
    label_smoothing: float = _opt(0.0, "label smoothing of the main cross-entropy")
    # stimulative training
    kl_weight: float = _opt(1.0, "lambda of Eq. 1: weight of each sub-network's KL term (ct forces 0)")
    temperature: float = _opt(1.0, "softmax temperature T of the KL (the term is scaled by T^2)")
    kl: str = _opt(
        "kl",
        "which KL (with --st-loss kl): kl: KL of the softened outputs (paper Eq. 1); kl-ln-inside (ours; old name "
        "kl-direction, still accepted): both logit vectors layer-normalised (eps 1e-5, times --kl-amplitude) inside "
        "the KL only, the main cross-entropy on raw logits. The official ST++ KL- is --norm-kd",
        KL_KINDS,
    )
    kl_amplitude: float = _opt(
        1.0, "amplitude A of the normalised logits, for --norm-kd (the official --amplitude) and kl-ln-inside"
    )
    norm_kd: bool = _opt(
        False,
        "the official ST++ KL- (--norm_kd): normalise the main network's logits (see --norm-kd-type) before its "
        "cross-entropy and as the sub-networks' teacher, and each sub-network's logits the same way before its loss",
    )
    norm_kd_type: str = _opt(
        "default",
        "--norm-kd's normalisation (official --norm_kd_type): default: A * layer norm (no affine, eps 1e-7); v1: "
        "layer norm, A ignored, and inside the KL both sides times the per-sample unbiased std of the main network's "
        "normalised logits (about 1.0005 at 1000 classes); v2: A * z / ||z||_2",
        NORM_KD_TYPES,
    )
    st_loss: str = _opt(
        "kl",
        "each sub-network's loss (official --st_loss): kl (official default; see --kl); ce: soft-target "
        "cross-entropy to the main network's probabilities, no temperature; ce-target: cross-entropy to the labels; "
        "dkd: decoupled KD with alpha = beta = T = 1; mse: mean squared difference of the softmax outputs",
        ST_LOSSES,
    )
    main_coef: float = _opt(1.0, "multiplies the main network's cross-entropy only (official --main_coef)")
    subnets_per_step: int = _opt(
        1,
        "sub-networks sampled per step, their terms summed, each weighted by --kl-weight. With six on the digits "
        "(3 seeds): the official ST++ recipe, --norm-kd at lambda 1, trained best; plain KL at lambda 1 collapsed "
        "in one seed of three; plain KL at lambda 1/6 trained. With plain KL, scale --kl-weight by about 1/n",
    )
    subnet_bn_update: bool = _opt(
        False,
        "the sub-network passes update the BN running statistics, as the official code does (each sub-network then "
        "runs whole, from its stem); default: they normalise with their batch statistics and leave the running "
        "statistics to the full network",
    )
    sampler: str = _opt("ordered", "sub-network sampling rule", ("ordered", "stochastic", "raw"))
    min_depths: str = _opt(
        "",
        "sampling space: minimum blocks kept per stage, e.g. 3,3,3,3, or a named space: default (1 per stage, the "
        "official default), all (only shape-changing blocks kept), half, atleastK (ours: at least K per stage), "
        "space1..space7 (the official ResNet-50 spaces: space3 keeps at least 3,3,3,3, 8 sub-networks), "
        "ours-mbv3-144/48/6 (our MobileNetV3-Large presets of 144, 48 and 6 sub-networks)",
    )
    sandwich: bool = _opt(
        False,
        "also train the shallowest sub-network of the space at every step (the sandwich rule), besides the sampled "
        "ones",
    )
    kl_schedule: str = _opt(
        "constant",
        "lambda schedule over training after --kl-start-epoch: constant, cosine-up (0 -> lambda) or cosine-down "
        "(lambda -> 0)",
        ("constant", "cosine-up", "cosine-down"),
    )
    kl_start_epoch: float = _opt(
        0.0, "lambda is 0 before this epoch (common training first), then follows --kl-schedule"
    )
    subnet_resolution: str = _opt(
        "",
        "ST++: each sub-network sees the batch resized to a random side in this range, as fractions of the input "
        "side, e.g. 0.43,1 (empty: the full network's input)",
    )
    subnet: str = _opt("", "individual mode: the sub-network to train alone, e.g. 1,1,1")
    drop_path_rate: float = _opt(
        0.5,
        "stochastic-depth mode: drop probability of the last block; block l of L is dropped with probability l/L "
        "times this (Huang et al.'s linear rule, their p_L = 1 - 0.5); only skippable blocks are dropped",
    )
    # evaluation
    eval_bn: str = _opt(
        "all",
        "BN protocol(s) of the final evaluation: full (the full network's statistics re-estimated on --calib-images "
        "training images, used by every sub-network: the paper's), subnet (each sub-network re-estimated: what a "
        "deployment does), running (the statistics as trained), or all three",
        EVAL_BN,
    )
    calib_images: int = _opt(2000, "training images the BN statistics are re-estimated on (full and subnet protocols)")
    eval_min_depths: str = _opt(
        "", "sampling space to evaluate, as minimum depths per stage (default: the training space)"
    )
    eval_subnets: int = _opt(1000, "evaluate every sub-network of the space, or a seeded sample of this many if larger")
    eval_batch_size: int = _opt(500, "batch size for evaluation and recalibration")
    track_kl: bool = _opt(
        False,
        "each epoch, record KL(full || sub) of every evaluated sub-network on a fixed held-out batch "
        "(kl_tracking.jsonl)",
    )
    track_kl_images: int = _opt(256, "size of the held-out batch for --track-kl")
    # running
    seed: int = _opt(0, "seed of everything: initialisation, data order, sampled sub-networks")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto")
    amp: str = _opt("none", "mixed precision: bf16 (CPU or GPU) or fp16 (GPU, with a grad scaler)", AMP)
    deterministic: bool = _opt(True, "deterministic algorithms (bit-exact resume on CPU); off enables cudnn.benchmark")
    channels_last: bool = _opt(
        False, "channels-last (NHWC) memory format for weights and activations (faster convolutions on recent GPUs)"
    )
    backward: str = _opt(
        "auto",
        "how ST back-propagates several sub-networks: joint: one backward through every sub-network's graph; "
        "per-subnet: each sub-network's term back-propagated to where it branches off the full network right after "
        "its forward, so one sub-network's activations are held at a time (same gradients up to the order of float "
        "summation; one process, no fp16 grad scaler, no ghost batches, no --subnet-bn-update); auto: per-subnet when "
        "a step trains more than one sub-network (--sandwich's included) and per-subnet is allowed, else joint. "
        "--low-memory: per-subnet",
        BACKWARDS,
    )
    compile: bool = _opt(
        False,
        "torch.compile the stem, the head and each block on its own, so that changing the sub-network does not "
        "recompile",
    )
    workers: int = _opt(2, "data loader worker processes (CIFAR/ImageNet)")
    log_every: int = _opt(50, "steps between logged training losses")
    checkpoint_every: int = _opt(0, "steps between checkpoints besides the one at each epoch end (0: epochs only)")
    out: str = _opt("", "run folder (default: runs/<mode>-<model>-<dataset>-s<seed>)")
    resume: bool = _opt(False, "continue the run in --out from its last checkpoint")
    force: bool = _opt(False, "start over in an --out folder that already holds a run")
    progress: bool = _opt(True, "show progress bars")
    # several processes (torchrun): --batch-size and --lr stay those of the global batch
    sync_bn: bool = _opt(
        False,
        "GPU only (NCCL): BatchNorm statistics over the global batch across all processes (SyncBatchNorm); an error "
        "on CPU",
    )
    same_subnets_across_ranks: bool = _opt(
        True,
        "every process draws the same sub-networks, seeded by (seed, step), without communication; with "
        "--no-same-subnets-across-ranks each draws its own and the averaged gradient mixes them, each sub-network's "
        "KL weighing 1/processes (same expectation, more sub-networks per step)",
    )
    ghost_batches: int = _opt(
        0,
        "BatchNorm normalises each of this many equal parts of the global batch on its own (ghost batches), the "
        "parts split among the processes; 0: one part per process, as DDP does. Fixed, it keeps a run's BN semantics "
        "on any number of processes: one process with --ghost-batches N trains like N processes (running statistics "
        "follow the first part, as DDP keeps rank 0's)",
    )

    def run_dir(self) -> str:
        return self.out or os.path.join("runs", f"{self.mode}-{self.model}-{self.dataset}-s{self.seed}")

    def effective_kl_weight(self) -> float:
        return self.kl_weight if self.mode == "st" else 0.0

    def validate(self) -> TrainConfig:
        """Raise ValueError naming the first impossible value."""
        self._check_choices_and_numbers()
        self._check_ranges()
        self._check_running()
        self._check_loss()
        self._check_data()
        parse_resolution(self.subnet_resolution)
        if self.model_args:
            parse_model_args(self.model_args)
        return self

    def _check_choices_and_numbers(self) -> None:
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"unknown {f.name.replace('_', '-')} {value!r}; choose from {', '.join(choices)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")

    def _check_ranges(self) -> None:
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.min_lr_ratio < 1:
            raise ValueError(f"--min-lr-ratio must be in [0, 1), got {self.min_lr_ratio}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in [0, 2**32), got {self.seed}")
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"--drop-path-rate must be in [0, 1), got {self.drop_path_rate}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.kl_start_epoch < self.epochs:
            raise ValueError(f"--kl-start-epoch must be in [0, --epochs), got {self.kl_start_epoch}")
        if self.mode == "individual" and not self.subnet:
            raise ValueError("individual mode trains one sub-network alone: name it with --subnet, e.g. --subnet 1,1,1")
        if self.resize and self.dataset == "imagefolder":
            raise ValueError("--resize applies to digits and CIFAR; imagefolder crops to --image-size")

    def _check_running(self) -> None:
        if self.sync_bn and (self.ghost_batches or not self.same_subnets_across_ranks):
            # SyncBatchNorm synchronises at every BN call: all ranks must run the same layers
            raise ValueError(
                "--sync-bn normalises over the whole global batch: it excludes --ghost-batches and "
                "--no-same-subnets-across-ranks"
            )
        conflict = per_subnet_conflict(self) if self.backward == "per-subnet" else None
        if conflict:
            raise ValueError(conflict)
        if self.pretrained_file and (not self.bn_zero_init or self.classifier_init != "model"):
            raise ValueError(
                "--no-bn-zero-init and --classifier-init initialise a model trained from scratch; with "
                "--pretrained-file the loaded weights would be overwritten: drop them"
            )
        if self.resume and self.force:
            raise ValueError("--resume continues a run and --force starts it over; choose one")

    def _check_loss(self) -> None:
        if self.kl != "kl" and self.norm_kd:
            raise ValueError(
                f"--kl {self.kl} normalises inside the KL and --norm-kd normalises every logit already: choose one"
            )
        if self.kl != "kl" and self.st_loss != "kl":
            raise ValueError(
                f"--kl {self.kl} chooses the KL of --st-loss kl; it has no effect with --st-loss "
                f"{self.st_loss}: drop it"
            )
        if self.norm_kd_type != "default" and not self.norm_kd:
            raise ValueError(f"--norm-kd-type {self.norm_kd_type} chooses --norm-kd's normalisation: add --norm-kd")

    def _check_data(self) -> None:
        for name in ("random_erasing", "color_jitter", "lighting", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        for name in ("train_crop_size", "val_resize_size", "val_crop_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
            if getattr(self, name) and self.dataset != "imagefolder":
                raise ValueError(f"--{name.replace('_', '-')} applies to imagefolder; CIFAR and digits keep their size")
        if self.random_erasing > 1:
            raise ValueError(f"--random-erasing is a probability in [0, 1], got {self.random_erasing}")
        image_options = {"auto_augment": self.auto_augment != "none"}
        image_options |= {n: getattr(self, n) > 0 for n in ("random_erasing", "color_jitter", "lighting")}
        used = [n for n, on in image_options.items() if on]
        if used and self.dataset == "digits":
            raise ValueError(
                f"--{used[0].replace('_', '-')} applies to CIFAR and imagefolder (digits are 8x8 standardised "
                "tensors); digits take --augment, --mixup and --cutmix"
            )
        if (self.mixup or self.cutmix) and self.st_loss in NEEDS_LABELS:
            raise ValueError(
                f"--st-loss {self.st_loss} needs integer labels, and --mixup/--cutmix give soft targets: choose one"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One flag per dataclass field; defaults stay None so we can tell what was given."""
    parser.add_argument(
        "--config",
        metavar="YAML",
        help="YAML file of options; flags given here override it. An option its mode does not read is an error "
        "(a warning when --mode here overrides the file's)",
    )
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            parser.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)
    if any(f.name == "backward" for f in fields(cls)):  # the flag --backward replaced, kept for old commands
        parser.add_argument(
            "--low-memory",
            dest="backward",
            action="store_const",
            const="per-subnet",
            default=None,
            help="the same as --backward per-subnet (its former name)",
        )


def resolve_config(args: argparse.Namespace, cls: type = TrainConfig) -> TrainConfig:
    """Dataclass defaults, then the YAML file, then the flags given on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml_options(args.config, cls))
    for f in fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    return cls(**values).validate()


def load_yaml_options(path: str, cls: type = TrainConfig) -> dict[str, Any]:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as e:
        raise ValueError(f"cannot read config {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config {path!r} is not a text (UTF-8) YAML file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config {path!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {path!r} must be a mapping of option: value")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in FORMER_KEYS and "backward" in known:  # low_memory: the boolean --backward replaced
            name, value = "backward", LOW_MEMORY[value] if isinstance(value, bool) else value
        if name not in known:
            raise ValueError(f"config {path!r}: unknown option {key!r}")
        out[name] = _coerce(value, known[name], path)
    return out


def _coerce(value: Any, f: dataclasses.Field, path: str) -> Any:
    kind = {"int": int, "float": float, "str": str, "bool": bool}[
        f.type if isinstance(f.type, str) else f.type.__name__
    ]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return kind(value)
        except ValueError:
            pass
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"config {path!r}: {f.name} must be {kind.__name__}, got {value!r}")
    return value


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a saved configuration (unknown keys from other versions are ignored, BN
    protocol names written before the protocols were named are translated, a run saved
    before the validation split existed keeps its whole training split, and one saved before
    --backward keeps the step it was trained with)."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in data.items() if k in known}
    values["eval_bn"] = LEGACY_EVAL_BN.get(values.get("eval_bn"), values.get("eval_bn", "all"))
    values.setdefault("val_fraction", 0.0)  # saved before the validation split existed: trained on all of it
    # saved before --backward: trained with the joint step unless low_memory was true
    values.setdefault("backward", LOW_MEMORY[bool(data.get("low_memory", False))])
    return TrainConfig(**values)


LEGACY_EVAL_BN = {"both": "all", "recalibrated": "subnet"}
