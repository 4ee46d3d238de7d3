"""Model registry: ``@register_model`` on a factory, ``create_model(name, **kw)``, ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core.elastic import ElasticNet
from .adapter import AdapterError, _default_size, adapt, create_adapted, is_adapted_name

_MODELS: dict[str, Callable[..., ElasticNet]] = {}


def register_model(fn: Callable[..., ElasticNet]) -> Callable[..., ElasticNet]:
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(
    name: str | nn.Module,
    num_classes: int | None = None,
    in_chans: int = 3,
    example: torch.Tensor | None = None,
    **kwargs,
) -> ElasticNet:
    """A stimulative model (an :class:`ElasticNet`) from a name or a model you already have:

    * a registered name: ``create_model("resnet20", num_classes=10, in_chans=1)``;
    * a timm/torchvision name, built and adapted: ``create_model("timm:resnet50",
      image_size=32, pretrained_file="resnet50.safetensors")`` (see :mod:`.adapter`);
    * an ``nn.Module`` instance (any timm/torchvision-style residual network, e.g.
      ``torchvision.models.resnet18(num_classes=10)``), adapted in place of a copy: the
      returned network shares its modules and weights. ``example`` is an input batch of the
      size it will see; without one, a random batch of ``in_chans`` channels and
      ``image_size`` (default: the model's own, 224 for ImageNet models). ``num_classes``,
      if given, must match the model's output;
    * an :class:`ElasticNet`, returned as it is.

    ``num_classes`` defaults to 10 for a name."""
    if isinstance(name, ElasticNet):
        return name
    if isinstance(name, nn.Module):
        return _adapt_instance(name, num_classes, in_chans, example, **kwargs)
    if example is not None:
        raise TypeError("create_model: `example` is for an nn.Module instance; a named model is built for its inputs")
    num_classes = 10 if num_classes is None else num_classes
    if is_adapted_name(name):
        return create_adapted(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if name not in _MODELS:
        raise ValueError(
            f"unknown model {name!r}; choose from {', '.join(list_models())}, or timm:NAME / torchvision:NAME"
        )
    return _MODELS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)


def _adapt_instance(
    model: nn.Module,
    num_classes: int | None,
    in_chans: int,
    example: torch.Tensor | None,
    image_size: int | None = None,
) -> ElasticNet:
    """:func:`.adapter.adapt` with an example batch made up if none is given, on the
    model's device (the probe runs the model once)."""
    if example is None:
        size = image_size or _default_size(model)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        example = torch.randn(2, in_chans, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    net = adapt(model, example, type(model).__name__)
    if num_classes is not None:
        with torch.no_grad():
            out = net.eval()(example)
        if out.shape[-1] != num_classes:
            raise AdapterError(
                f"{type(model).__name__} outputs {out.shape[-1]} classes, not num_classes={num_classes}: build it "
                "with the classifier you want, then pass it"
            )
    return net.train(was_training)
