"""Model families (one file each) and the registry they register into."""

from . import cifar_resnet, mobilenetv3, resnet  # noqa: F401  (register the families)
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
