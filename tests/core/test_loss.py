import math

import pytest
import torch

from stimulative.core.loss import (
    LossOptions,
    direction_kl_divergence,
    distillation_term,
    kl_divergence,
    stimulative_loss,
)


def _kl_by_hand(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_kl_matches_hand_computation():
    main = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    sub = [[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]
    expected = sum(_kl_by_hand(_softmax(m), _softmax(s)) for m, s in zip(main, sub)) / 2  # batch mean
    got = kl_divergence(torch.tensor(main), torch.tensor(sub))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_temperature_softens_and_scales_by_t_squared():
    main, sub = [3.0, 0.0, -2.0], [0.0, 1.0, 0.0]
    t = 4.0
    expected = _kl_by_hand(_softmax(main, t), _softmax(sub, t)) * t * t
    got = kl_divergence(torch.tensor([main]), torch.tensor([sub]), temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_teacher_is_detached():
    main = torch.randn(4, 5, requires_grad=True)
    sub = torch.randn(4, 5, requires_grad=True)
    kl_divergence(main, sub).backward()
    assert main.grad is None
    assert sub.grad is not None and sub.grad.abs().sum() > 0


def test_stimulative_loss_is_ce_plus_lambda_sum_of_kls():
    torch.manual_seed(0)
    main, y = torch.randn(8, 10), torch.randint(10, (8,))
    subs = [torch.randn(8, 10) for _ in range(3)]
    total, ce, kl = stimulative_loss(main, subs, y, lam=0.5, options=LossOptions(temperature=2.0))
    expected_kl = sum(kl_divergence(main, s, 2.0) for s in subs)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(main, y).item())
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-6)
    assert total.item() == pytest.approx(ce.item() + 0.5 * expected_kl.item(), rel=1e-6)
    total0, ce0, _ = stimulative_loss(main, [], y)
    assert total0.item() == ce0.item()  # common training: no KL term


def test_direction_kl_ignores_logit_scale_and_shift():
    main = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    sub = main * 3.0 + 7.0  # same direction, other scale and offset
    assert direction_kl_divergence(main, sub).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(main, sub).item() > 0.1
    # with amplitude a, it equals the plain KL of the normalised logits times a
    a = 2.5
    other = torch.tensor([[0.0, 1.0, 0.0, -1.0]])
    ln = lambda z: (z - z.mean()) / torch.sqrt(z.var(unbiased=False) + 1e-5)
    expected = kl_divergence(ln(main) * a, ln(other) * a)
    assert direction_kl_divergence(main, other, amplitude=a).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_is_computed_in_fp32_under_bf16_inputs():
    main = torch.randn(4, 10).bfloat16()
    sub = torch.randn(4, 10).bfloat16()
    assert kl_divergence(main, sub).dtype == torch.float32


def test_unknown_kind_lists_choices():
    with pytest.raises(ValueError, match="choose from kl, kl-ln-inside, kl-direction"):
        distillation_term(torch.zeros(1, 2), torch.zeros(1, 2), kind="js")


def test_kl_ln_inside_is_kl_direction_under_its_new_name():
    main, sub = torch.randn(4, 6), torch.randn(4, 6)
    a = distillation_term(main, sub, "kl-ln-inside", 2.0, 1.5)
    b = distillation_term(main, sub, "kl-direction", 2.0, 1.5)
    assert torch.equal(a, b)
    # inside the KL only: the main cross-entropy stays that of the raw logits
    y = torch.tensor([0, 1, 2, 3])
    _, ce, _ = stimulative_loss(main, [sub], y, options=LossOptions(kl="kl-ln-inside"))
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(main, y).item(), rel=1e-7)
