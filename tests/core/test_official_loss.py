"""The official code's ST++ objective (``--norm_kd``, ``--norm_kd_type``, ``--st_loss``,
``--main_coef``) pinned to the worked example of the notes on the official code (C = 3,
B = 2, float64, computed there by hand and with torch functionals)."""

from __future__ import annotations

import math

import pytest
import torch

from stimulative.core.logit_norm import adaptive_amplitude, layer_norm_logits, normalize_logits
from stimulative.core.loss import LossOptions, stimulative_loss
from stimulative.core.sub_losses import dkd_loss

MAIN = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
SUB = torch.tensor([[0.2, 0.1, 2.5], [1.0, 0.0, -1.0]], dtype=torch.float64)
Y = torch.tensor([2, 0])


def _terms(**options) -> tuple[float, float]:
    _, ce, sub = stimulative_loss(MAIN, [SUB], Y, 1.0, LossOptions(**options))
    assert ce.dtype == sub.dtype == torch.float64  # the point is the algorithm: no fp32 rounding
    return ce.item(), sub.item()


def test_layer_norm_of_the_worked_example():
    r = math.sqrt(1.5)  # 1.224745: (z - mean) / sqrt(biased var) for three equally spaced values
    expected_main = torch.tensor([[-r, 0.0, r], [0.0, -r, r]], dtype=torch.float64)
    assert torch.allclose(layer_norm_logits(MAIN), expected_main, atol=1e-6)
    expected_sub = torch.tensor([[-0.661523, -0.751731, 1.413254], [r, 0.0, -r]], dtype=torch.float64)
    assert torch.allclose(layer_norm_logits(SUB), expected_sub, atol=1e-6)
    a = adaptive_amplitude(normalize_logits(MAIN, "v1"))
    assert a.shape == (2, 1)
    assert torch.allclose(a, torch.full((2, 1), r, dtype=torch.float64), atol=1e-6)  # sqrt(C / (C - 1)), C = 3


@pytest.mark.parametrize(
    ("options", "ce", "kl"),
    [
        ({}, 1.074459, 0.766562),
        ({"temperature": 2.0}, 1.074459, 0.890684),
        ({"norm_kd": True}, 0.934579, 0.753662),
        ({"norm_kd": True, "kl_amplitude": 2.0}, 1.314395, 2.175529),
        ({"norm_kd": True, "temperature": 2.0}, 0.934579, 0.832318),
        ({"norm_kd": True, "norm_kd_type": "v1"}, 0.934579, 1.058478),
        ({"norm_kd": True, "norm_kd_type": "v1", "kl_amplitude": 5.0}, 0.934579, 1.058478),  # A ignored by v1
        ({"norm_kd": True, "norm_kd_type": "v2"}, 1.045841, 0.261207),
        ({"norm_kd": True, "norm_kd_type": "v2", "kl_amplitude": 10.0}, 3.309608, 7.250442),
    ],
)
def test_norm_kd_main_ce_and_kl_match_the_worked_example(options, ce, kl):
    got_ce, got_kl = _terms(**options)
    assert got_ce == pytest.approx(ce, abs=1e-6)
    assert got_kl == pytest.approx(kl, abs=1e-6)


@pytest.mark.parametrize(
    ("st_loss", "raw", "normalised"),
    [
        ("kl", 0.766562, 0.753662),
        ("ce", 1.493553, 1.489842),
        ("ce-target", 0.291190, 0.268795),
        ("dkd", 0.905782, 0.937863),
        ("mse", 0.137501, 0.124214),
    ],
)
def test_sub_network_losses_match_the_worked_example(st_loss, raw, normalised):
    assert _terms(st_loss=st_loss)[1] == pytest.approx(raw, abs=1e-6)
    assert _terms(st_loss=st_loss, norm_kd=True)[1] == pytest.approx(normalised, abs=1e-6)


def test_total_is_main_coef_times_ce_plus_lambda_times_the_sum():
    total, ce, sub = stimulative_loss(MAIN, [SUB], Y, 1.0, LossOptions(norm_kd=True))
    assert total.item() == pytest.approx(1.688241, abs=1e-6)  # the notes' total for default, A = 1, T = 1
    total, _, _ = stimulative_loss(MAIN, [SUB, SUB], Y, 2.0, LossOptions(norm_kd=True, main_coef=0.5))
    assert total.item() == pytest.approx(0.5 * 0.934579 + 2.0 * 2 * 0.753662, abs=1e-5)  # a sum over sub-networks


def test_norm_kd_trains_the_main_network_through_the_normalisation():
    main = MAIN.clone().requires_grad_()
    sub = SUB.clone().requires_grad_()
    _, ce, kl = stimulative_loss(main, [sub], Y, 1.0, LossOptions(norm_kd=True))
    (ce_grad,) = torch.autograd.grad(ce, main, retain_graph=True)
    raw = MAIN.clone().requires_grad_()
    (raw_grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(raw, Y), raw)
    assert not torch.allclose(ce_grad, raw_grad, atol=1e-3)  # the CE is that of the normalised logits
    assert torch.allclose(ce_grad.sum(-1), torch.zeros(2, dtype=torch.float64), atol=1e-12)  # LN removes the mean
    kl.backward()
    assert main.grad is None and sub.grad is not None  # the teacher is detached


def test_dkd_and_ce_target_refuse_soft_targets():
    soft = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="integer labels"):
        dkd_loss(MAIN, SUB, soft)
    with pytest.raises(ValueError, match="integer labels"):
        stimulative_loss(MAIN, [SUB], soft, 1.0, LossOptions(st_loss="ce-target"))
    # the main CE and the KL accept soft targets (mixup/CutMix)
    _, ce, _ = stimulative_loss(MAIN, [SUB], soft, 1.0, LossOptions())
    expected = -(torch.log_softmax(MAIN, -1) / 3).sum(-1).mean()
    assert ce.item() == pytest.approx(expected.item(), abs=1e-12)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="choose from kl, ce, ce-target, dkd, mse"):
        stimulative_loss(MAIN, [SUB], Y, 1.0, LossOptions(st_loss="js"))
    with pytest.raises(ValueError, match="choose from default, v1, v2"):
        normalize_logits(MAIN, "v3")
