"""The sub-network losses of the official code's ``--st_loss``, as pure functions of the
teacher (the main network's logits, detached here) and a sub-network's logits ``(B, C)``.

* ``kl`` (official ``default``): ``T^2 * KL(softmax(m/T) || softmax(s/T))``, batch mean
  (paper Eq. 1; see :mod:`stimulative.core.loss`);
* ``ce`` (official ``CE``): soft-target cross-entropy to the main network's probabilities,
  ``-mean_b sum_i softmax(m)_i log softmax(s)_i`` (no temperature) = KL + H(p_main);
* ``ce-target`` (official ``CE_target``): cross-entropy to the labels (the sub-network is
  supervised on its own; the main network is not used);
* ``dkd`` (official ``DKD``): decoupled KD (Zhao et al. 2022) with alpha = beta = T = 1, as
  the official call hard-codes;
* ``mse`` (official ``MSE``): mean over ``B * C`` of ``(softmax(s) - softmax(m))^2``.

``ce-target`` and ``dkd`` need integer labels (no mixup/CutMix soft targets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ST_LOSSES = ("kl", "ce", "ce-target", "dkd", "mse")
NEEDS_LABELS = ("ce-target", "dkd")


def soft_target_cross_entropy(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``-mean_b sum_i softmax(teacher)_i * log_softmax(student)_i``; the teacher is detached."""
    p = F.softmax(teacher_logits.detach(), dim=-1)
    return -(p * F.log_softmax(student_logits, dim=-1)).sum(-1).mean()


def softmax_mse(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two softmax outputs, over batch and classes."""
    return F.mse_loss(F.softmax(student_logits, dim=-1), F.softmax(teacher_logits.detach(), dim=-1))


def _binary(probs: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``(B, 2)``: the target class's probability and the rest's."""
    target = (probs * gt).sum(-1)
    return torch.stack([target, (probs * ~gt).sum(-1)], dim=-1)


def dkd_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Decoupled KD: ``alpha * TCKD + beta * NCKD``. TCKD is the KL of the binary
    (target, rest) distributions; NCKD the KL among the non-target classes (the target's
    logit lowered by 1000, as the published code does); both summed over the batch, divided
    by B and times ``T^2``. ``target``: integer labels ``(B,)``."""
    if target.dtype.is_floating_point:
        raise ValueError("st-loss dkd needs integer labels; it cannot be combined with mixup or CutMix")
    t = teacher_logits.detach() / temperature
    s = student_logits / temperature
    gt = F.one_hot(target, s.shape[-1]).bool()
    b_t, b_s = _binary(F.softmax(t, dim=-1), gt), _binary(F.softmax(s, dim=-1), gt)
    batch = target.shape[0]
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * temperature**2 / batch
    mask = 1000.0 * gt
    nckd = F.kl_div(F.log_softmax(s - mask, dim=-1), F.softmax(t - mask, dim=-1), reduction="sum")
    return alpha * tckd + beta * nckd * temperature**2 / batch


def label_cross_entropy(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``ce-target``: the sub-network's own cross-entropy to integer labels."""
    if target.dtype.is_floating_point:
        raise ValueError("st-loss ce-target needs integer labels; it cannot be combined with mixup or CutMix")
    return F.cross_entropy(student_logits, target)
