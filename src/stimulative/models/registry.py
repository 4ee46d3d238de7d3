"""Model registry: ``@register_model`` on a factory, ``create_model(name, **kw)``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable

from ..core.elastic import ElasticNet
from .adapter import create_adapted, is_adapted_name

_MODELS: dict[str, Callable[..., ElasticNet]] = {}


def register_model(fn: Callable[..., ElasticNet]) -> Callable[..., ElasticNet]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, **kwargs) -> ElasticNet:
    """Build a registered model, e.g. ``create_model("resnet20", num_classes=10, in_chans=1)``,
    or adapt any timm/torchvision residual network, e.g. ``create_model("timm:resnet50",
    image_size=32, pretrained_file="resnet50.safetensors")`` (see :mod:`.adapter`)."""
    if is_adapted_name(name):
        return create_adapted(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if name not in _MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose from {', '.join(list_models())}, or timm:NAME / torchvision:NAME"
        )
    return _MODELS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
