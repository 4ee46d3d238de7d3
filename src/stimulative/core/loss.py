"""The stimulative loss (paper Eq. 1) and ST++'s direction-only KL ("KL-"), as pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

KL_KINDS = ("kl", "kl-direction")


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) * T^2, averaged over the batch.

    The teacher (the full network) is detached: it is a target, not a gradient path.
    Computed in fp32 whatever the autocast dtype."""
    t = teacher_logits.detach().float() / temperature
    s = student_logits.float() / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), reduction="batchmean", log_target=True)
    return kl * temperature**2


def direction_kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0, amplitude: float = 1.0
) -> torch.Tensor:
    """ST++'s "KL-": compare only the logits' direction by layer-normalising both logit
    vectors (times ``amplitude``) before the KL, so the sub-network is not pushed to match
    the full network's confidence scale."""
    t = F.layer_norm(teacher_logits.detach().float(), teacher_logits.shape[-1:]) * amplitude
    s = F.layer_norm(student_logits.float(), student_logits.shape[-1:]) * amplitude
    return kl_divergence(t, s, temperature)


def distillation_term(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    kind: str = "kl",
    temperature: float = 1.0,
    amplitude: float = 1.0,
) -> torch.Tensor:
    if kind == "kl":
        return kl_divergence(teacher_logits, student_logits, temperature)
    if kind == "kl-direction":
        return direction_kl_divergence(teacher_logits, student_logits, temperature, amplitude)
    raise ValueError(f"unknown KL kind {kind!r}; choose from {', '.join(KL_KINDS)}")


def stimulative_loss(
    main_logits: torch.Tensor,
    sub_logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    lam: float = 1.0,
    temperature: float = 1.0,
    kind: str = "kl",
    amplitude: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paper Eq. 1: ``CE(main, y) + lam * sum_k KL(main || sub_k)``.

    Returns ``(total, ce, kl_sum)``, tensors on the device (no host sync)."""
    ce = F.cross_entropy(main_logits.float(), target, label_smoothing=label_smoothing)
    kl = main_logits.new_zeros((), dtype=torch.float32)
    for sub in sub_logits:
        kl = kl + distillation_term(main_logits, sub, kind, temperature, amplitude)
    return ce + lam * kl, ce, kl
