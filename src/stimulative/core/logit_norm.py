"""ST++'s logit normalisation ("KL-") as the official code applies it (its ``--norm_kd``,
``--norm_kd_type``, ``--amplitude``), as pure functions.

The official code normalises the main network's logits right after its forward and uses
the normalised logits for the main cross-entropy *and* (detached) as the sub-networks'
teacher; each sub-network's logits are normalised the same way before its loss. The
normalisation, per sample over the classes (``z`` of shape ``(B, C)``):

* ``default``: ``A * LN(z)``, ``LN(z) = (z - mean(z)) / sqrt(var(z) + 1e-7)``, the biased
  variance over the classes, no affine parameters;
* ``v1`` ("adaptive amplitude"): ``LN(z)``, the amplitude ignored; the KL then multiplies
  both sides by :func:`adaptive_amplitude` of the main network's normalised logits;
* ``v2``: ``A * z / max(||z||_2, 1e-7)``.

The official code hard-codes 1000 classes in its layer norm; here the class count is the
logits' last dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_KD_TYPES = ("default", "v1", "v2")
NORM_EPS = 1e-7  # the official code's eps, inside the square root (LN) or as the norm's floor (L2)


def layer_norm_logits(logits: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """``(z - mean) / sqrt(biased var + eps)`` over the last dimension, no affine."""
    return F.layer_norm(logits, logits.shape[-1:], None, None, eps)


def normalize_logits(logits: torch.Tensor, norm_type: str = "default", amplitude: float = 1.0) -> torch.Tensor:
    """The official ``--norm_kd`` normalisation of ``logits`` ``(B, C)`` (see the module
    docstring); gradients flow through it."""
    if norm_type == "default":
        return layer_norm_logits(logits) * amplitude
    if norm_type == "v1":
        return layer_norm_logits(logits)  # the official code ignores --amplitude here
    if norm_type == "v2":
        return F.normalize(logits, p=2.0, dim=-1, eps=NORM_EPS) * amplitude
    raise ValueError(f"unknown norm-kd-type {norm_type!r}; choose from {', '.join(NORM_KD_TYPES)}")


def adaptive_amplitude(normalized_main: torch.Tensor) -> torch.Tensor:
    """``v1``'s per-sample factor ``(B, 1)``: the unbiased standard deviation over the classes
    of the main network's (detached) normalised logits. For layer-normalised logits it is
    ``sqrt(C / (C - 1) * v / (v + eps))``, about ``sqrt(1000 / 999) = 1.0005`` for ImageNet."""
    return normalized_main.detach().std(dim=-1, keepdim=True)
