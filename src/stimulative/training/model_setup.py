"""Where a run's network comes from: built from its configuration (a registered model, or any
timm/torchvision residual network through the adapter), then, for fine-tuning, started from
local pretrained weights of the original model (``--pretrained-file``) or from a previous
run (``--init-from``). Fine-tuning runs measure loafing before training and after."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from ..core.elastic import ElasticNet
from ..models import create_model
from ..models.adapter import is_adapted_name
from ..runtime.weights import WeightsFileError, read_weights, state_dict_mismatch
from . import checkpoint as ckpt
from .config import TrainConfig


def build_model(
    cfg: TrainConfig,
    num_classes: int,
    in_chans: int,
    image_size: int,
    pretrained: bool = True,
    log: Callable[[str], None] = print,
) -> ElasticNet:
    """The run's model. timm/torchvision models get the input side (for ViT-like models
    that need it), ``--model-args`` and, if ``pretrained``, ``--pretrained-file``."""
    if not is_adapted_name(cfg.model):
        for name in ("model_args", "pretrained_file"):
            if getattr(cfg, name, ""):
                raise ValueError(
                    f"--{name.replace('_', '-')} applies to timm:NAME and torchvision:NAME models, not {cfg.model!r}"
                )
        return create_model(cfg.model, num_classes=num_classes, in_chans=in_chans)
    return create_model(
        cfg.model,
        num_classes=num_classes,
        in_chans=in_chans,
        image_size=image_size,
        model_args=cfg.model_args,
        pretrained_file=cfg.pretrained_file if pretrained else "",
        log=log,
    )


def load_initial_weights(model: nn.Module, source: str) -> str:
    """Load the weights to fine-tune from: a run folder (its last checkpoint), a checkpoint
    folder, or a weights file of this model (``.safetensors``, or a state dict saved with
    ``torch.save`` and read with ``weights_only=True``). Returns what was loaded."""
    if not os.path.exists(source):
        raise ValueError(f"--init-from {source!r}: no such file or folder")
    if os.path.isdir(source):
        folder = os.path.join(source, "checkpoint") if os.path.isdir(os.path.join(source, "checkpoint")) else source
        found = ckpt.latest_checkpoint(folder)
        if found is None:
            raise ValueError(
                f"--init-from {source!r}: no checkpoint there; give a run folder written by `stimulative train`"
            )
        ckpt.load_weights(found, model)
        return found
    try:
        state = read_weights(source)
    except WeightsFileError as e:
        raise ValueError(f"--init-from {source!r}: cannot read it ({e})") from None
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(
            f"--init-from {source!r} {mismatch}; for weights of the original timm/torchvision model use "
            "--pretrained-file"
        )
    model.load_state_dict(state)
    return source


def check_input_size(model: ElasticNet, in_chans: int, side: int, device: torch.device) -> None:
    """Raise a ValueError if the model cannot run on ``side`` x ``side`` inputs."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_chans, side, side, device=device))
    except Exception as e:  # noqa: BLE001 - whatever the model raises, the flag is the cause
        raise ValueError(
            f"--subnet-resolution: the model cannot run on {side}x{side} inputs "
            f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "use a model that takes any input size, or a range that stays within the sizes it takes"
        ) from None
    finally:
        model.train(was_training)
