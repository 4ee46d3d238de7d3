"""The stimulative loss (paper Eq. 1) with the official code's options, as pure functions.

Eq. 1: ``main_coef * CE(main, y) + lam * sum_k L(main || sub_k)``, where ``L`` is a
sub-network loss (:mod:`stimulative.core.sub_losses`; paper: the KL) and the main network's
logits are the sub-networks' target (detached). Options (:class:`LossOptions`):

* ``norm_kd`` (the official KL- of ST++, :mod:`stimulative.core.logit_norm`): the main
  network's logits are normalised *before* its cross-entropy and before serving as the
  teacher; each sub-network's logits are normalised the same way;
* ``kl="kl-ln-inside"`` (ours, formerly ``kl-direction``): layer-normalise both logit vectors
  inside the KL term only (eps 1e-5); the main cross-entropy stays on the raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .logit_norm import adaptive_amplitude, normalize_logits
from .sub_losses import ST_LOSSES, dkd_loss, label_cross_entropy, soft_target_cross_entropy, softmax_mse

KL_KINDS = ("kl", "kl-ln-inside", "kl-direction")  # kl-direction: the old name of kl-ln-inside, kept for saved runs


@dataclass(frozen=True)
class LossOptions:
    """How Eq. 1's terms are computed (lambda comes from the step's plan)."""

    temperature: float = 1.0
    kl: str = "kl"  # which KL, for st_loss "kl"
    kl_amplitude: float = 1.0  # the amplitude A of kl-ln-inside and of norm_kd (official --amplitude)
    label_smoothing: float = 0.0  # of the main cross-entropy only
    st_loss: str = "kl"
    main_coef: float = 1.0  # multiplies the main cross-entropy only
    norm_kd: bool = False
    norm_kd_type: str = "default"

    @classmethod
    def from_config(cls, cfg) -> LossOptions:
        """The options of a configuration object with fields of the same names."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32, or as it is if wider (fp64: exact comparisons in tests)."""
    return t if t.dtype == torch.float64 else t.float()


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the batch.

    The teacher (the full network) is detached: it is a target, not a gradient path.
    Computed in fp32 whatever the autocast dtype."""
    t = at_least_fp32(teacher_logits.detach()) / temperature
    s = at_least_fp32(student_logits) / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean", log_target=True)
    return kl * temperature**2


def direction_kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0, amplitude: float = 1.0
) -> torch.Tensor:
    """``kl-ln-inside`` (ours): the KL of both logit vectors layer-normalised (eps 1e-5, times
    ``amplitude``), so only their direction is compared. Unlike the official KL-
    (``norm_kd``), the main network's cross-entropy is left on its raw logits."""
    t = F.layer_norm(at_least_fp32(teacher_logits.detach()), teacher_logits.shape[-1:]) * amplitude
    s = F.layer_norm(at_least_fp32(student_logits), student_logits.shape[-1:]) * amplitude
    return kl_divergence(t, s, temperature)


def distillation_term(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    kind: str = "kl",
    temperature: float = 1.0,
    amplitude: float = 1.0,
) -> torch.Tensor:
    """One sub-network's KL term: ``kl`` or ``kl-ln-inside`` (alias ``kl-direction``)."""
    if kind == "kl":
        return kl_divergence(teacher_logits, student_logits, temperature)
    if kind in ("kl-ln-inside", "kl-direction"):
        return direction_kl_divergence(teacher_logits, student_logits, temperature, amplitude)
    raise ValueError(f"unknown KL kind {kind!r}; choose from {', '.join(KL_KINDS)}")


def main_outputs(
    main_logits: torch.Tensor, options: LossOptions
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(logits for the main CE, the teacher (detached), v1's per-sample factor or None)``
    from the main network's logits, in fp32 (or fp64): normalised first under ``norm_kd``."""
    z = at_least_fp32(main_logits)
    if options.norm_kd:
        z = normalize_logits(z, options.norm_kd_type, options.kl_amplitude)
    scale = adaptive_amplitude(z) if options.norm_kd and options.norm_kd_type == "v1" else None
    return z, z.detach(), scale


def sub_network_loss(
    teacher: torch.Tensor,
    sub_logits: torch.Tensor,
    target: torch.Tensor,
    options: LossOptions,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """One sub-network's term of Eq. 1 (``options.st_loss``), its logits normalised first
    under ``norm_kd``; ``teacher`` and ``scale`` come from :func:`main_outputs`."""
    s = at_least_fp32(sub_logits)
    if options.norm_kd:
        s = normalize_logits(s, options.norm_kd_type, options.kl_amplitude)
    kind = options.st_loss
    if kind == "kl":
        if scale is not None:  # v1: both sides times the main network's per-sample factor, inside the KL only
            teacher, s = teacher * scale, s * scale
        return distillation_term(teacher, s, options.kl, options.temperature, options.kl_amplitude)
    if kind == "ce":
        return soft_target_cross_entropy(teacher, s)
    if kind == "ce-target":
        return label_cross_entropy(s, target)
    if kind == "dkd":
        return dkd_loss(teacher, s, target)
    if kind == "mse":
        return softmax_mse(teacher, s)
    raise ValueError(f"unknown st-loss {kind!r}; choose from {', '.join(ST_LOSSES)}")


def stimulative_loss(
    main_logits: torch.Tensor,
    sub_logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    lam: float = 1.0,
    options: LossOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paper Eq. 1: ``main_coef * CE(main, y) + lam * sum_k L(main || sub_k)``.

    ``target``: integer labels ``(B,)`` or soft targets ``(B, C)`` (mixup/CutMix).
    Returns ``(total, ce, sub_sum)``, tensors on the device (no host sync); ``ce`` is the
    main network's cross-entropy before ``main_coef``."""
    options = options or LossOptions()
    z, teacher, scale = main_outputs(main_logits, options)
    ce = F.cross_entropy(z, target, label_smoothing=options.label_smoothing)
    total_sub = main_logits.new_zeros((), dtype=torch.float32)
    if not sub_logits and options.main_coef == 1:  # common training: no ops (nor backward nodes) that add nothing
        return ce, ce, total_sub
    for sub in sub_logits:
        total_sub = total_sub + sub_network_loss(teacher, sub, target, options, scale)
    return options.main_coef * ce + lam * total_sub, ce, total_sub
