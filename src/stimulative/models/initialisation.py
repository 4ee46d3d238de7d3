"""Initialisation options applied to a model once it is built (the official code's choices,
ours by default).

* BatchNorm: our ResNet-50/101 zero-initialise the last BN of every bottleneck branch (so
  every skippable block starts as the identity and every sub-network computes exactly what
  the full network computes at initialisation); the CIFAR ResNets and MobileNetV3 keep
  gamma = 1. The official code has gamma = 1 in every BN (:func:`bn_gamma_one`).
* Classifier: as each family builds it (MobileNetV3: N(0, 0.01^2); the ResNets: PyTorch's
  or Kaiming's), or the official code's N(0, 0.01^2) with bias 0 (:func:`classifier_normal`).
"""

from __future__ import annotations

from torch import nn

CLASSIFIER_INITS = ("model", "normal")


def bn_gamma_one(model: nn.Module) -> int:
    """Set gamma = 1 in every BatchNorm (beta is left as built: 0). Returns how many BNs."""
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            nn.init.ones_(m.weight)
            count += 1
    return count


def classifier_normal(model: nn.Module, std: float = 0.01) -> nn.Linear:
    """The last linear layer of ``model.head`` (the classifier): weight ~ N(0, std^2), bias 0."""
    head = getattr(model, "head", model)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("--classifier-init normal needs a linear classifier in the model's head; this model has none")
    fc = linears[-1]
    nn.init.normal_(fc.weight, 0.0, std)
    if fc.bias is not None:
        nn.init.zeros_(fc.bias)
    return fc


def apply_init_options(model: nn.Module, bn_zero_init: bool = True, classifier_init: str = "model") -> None:
    """``bn_zero_init`` False: gamma = 1 everywhere; ``classifier_init`` "normal": the official
    classifier. The defaults leave the model exactly as built (no random numbers drawn)."""
    if classifier_init not in CLASSIFIER_INITS:
        raise ValueError(f"unknown classifier-init {classifier_init!r}; choose from {', '.join(CLASSIFIER_INITS)}")
    if not bn_zero_init:
        bn_gamma_one(model)
    if classifier_init == "normal":
        classifier_normal(model)
