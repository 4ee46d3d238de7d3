"""Mixed precision on the CPU: bf16 autocast runs the networks in bf16 while the losses
(cross-entropy and every KL term) are computed in fp32."""

from __future__ import annotations

import json

import torch

from stimulative.cli import main as cli_main
from stimulative.core.loss import kl_divergence, stimulative_loss
from stimulative.core.sampling import SamplingSpace, sample_subnet
from stimulative.models.cifar_resnet import CifarResNet
from stimulative.training.steps import training_step


def bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_kl_is_fp32_for_bf16_logits() -> None:
    t, s = torch.randn(8, 10).bfloat16(), torch.randn(8, 10).bfloat16()
    kl = kl_divergence(t, s)
    assert kl.dtype == torch.float32
    assert (
        kl.item()
        == torch.nn.functional.kl_div(
            torch.log_softmax(s.float(), -1), torch.log_softmax(t.float(), -1), reduction="batchmean", log_target=True
        ).item()
    )
    total, ce, kl_sum = stimulative_loss(t, [s, s], torch.randint(10, (8,)))
    assert total.dtype == ce.dtype == kl_sum.dtype == torch.float32


def test_bf16_training_step_on_cpu() -> None:
    torch.manual_seed(0)
    model = CifarResNet(14, width=4)
    arch = model.architecture
    subnets = [
        sample_subnet(SamplingSpace.default(arch), arch, "ordered", torch.Generator().manual_seed(i)) for i in range(2)
    ]
    x, y = torch.randn(6, 3, 8, 8), torch.randint(10, (6,))
    seen = []
    hook = model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = training_step(model, x, y, subnets, 1.0, autocast=bf16)
    hook.remove()
    assert seen == [torch.bfloat16] * 3  # the network and both sub-networks ran in bf16
    assert out.loss.dtype == out.kl.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    reference = training_step(model, x, y, subnets, 1.0)
    assert abs(out.loss.item() - reference.loss.item()) < 0.1 * reference.loss.item()


def test_train_command_with_bf16_and_channels_last(tmp_path) -> None:
    run = tmp_path / "run"
    code = cli_main(
        [
            "train",
            "--epochs",
            "1",
            "--train-fraction",
            "0.1",
            "--batch-size",
            "16",
            "--calib-images",
            "32",
            "--eval-subnets",
            "2",
            "--eval-bn",
            "running",
            "--no-progress",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--amp",
            "bf16",
            "--channels-last",
            "--out",
            str(run),
        ]
    )
    assert code == 0
    results = json.loads((run / "results.json").read_text())
    assert results["config"]["amp"] == "bf16" and results["config"]["channels_last"] is True
