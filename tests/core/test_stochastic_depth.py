"""Stochastic depth (Huang et al. 2016): per-sample drops of residual branches, survival
decaying linearly with depth, as a configuration of the one training loop."""

import json

import pytest
import torch

from stimulative.cli import main as cli
from stimulative.core.elastic import drop_path, drop_path_scales, survival_probabilities
from stimulative.core.sampling import parse_spec
from stimulative.models import create_model
from stimulative.training.config import TrainConfig
from stimulative.training.steps import training_step


def test_survival_decays_linearly_with_depth_and_spares_shape_changing_blocks():
    arch = create_model("resnet20", num_classes=10, in_chans=1).architecture  # 3 stages of 3 blocks
    p = survival_probabilities(arch, 0.5)
    assert len(p) == 9
    flags = [k for stage in arch.skippable for k in stage]
    for i, (pi, skip) in enumerate(zip(p, flags, strict=True)):
        assert pi == (pytest.approx(1 - (i + 1) / 9 * 0.5) if skip else 1.0)
    assert p[-1] == pytest.approx(0.5)  # Huang et al.'s p_L
    assert p[3] == p[6] == 1.0  # the first blocks of stages 1 and 2 change the shape
    assert p[0] == pytest.approx(1 - 0.5 / 9)  # stage 0's first block keeps its shape: droppable
    assert survival_probabilities(arch, 0.0) == [1.0] * 9
    with pytest.raises(ValueError, match="drop path rate"):
        survival_probabilities(arch, 1.0)


def test_scales_are_zero_or_inverse_survival_and_unbiased():
    arch = create_model("resnet20", num_classes=10, in_chans=1).architecture
    gen = torch.Generator().manual_seed(0)
    scales = drop_path_scales(arch, 0.5, 20000, gen)  # (B, blocks)
    p = torch.tensor(survival_probabilities(arch, 0.5))
    assert scales.shape == (20000, 9)
    kept = scales > 0
    assert torch.allclose(scales[kept], (1 / p).expand_as(scales)[kept])
    assert torch.allclose(kept.float().mean(0), p, atol=0.02)  # per-sample Bernoulli(p)
    assert torch.allclose(scales.mean(0), torch.ones(9), atol=0.03)  # E[scale] = 1
    # a pure function of the generator's seed
    again = drop_path_scales(arch, 0.5, 20000, torch.Generator().manual_seed(0))
    assert torch.equal(scales, again)
    b = torch.ones(3, 2, 4, 4)
    out = drop_path(b, torch.tensor([0.0, 2.0, 1.0]))
    assert out[0].abs().sum() == 0 and (out[1] == 2).all() and (out[2] == 1).all()


def test_dropped_blocks_are_the_identity_per_sample():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).eval()
    arch = model.architecture
    x = torch.randn(4, 1, 8, 8)
    full = arch.full()
    ones = torch.ones(4, 9)
    assert torch.allclose(model.forward_trace(x, full, keep=ones)[0], model(x), atol=1e-6)
    # sample 1 drops every skippable block: it runs only the shape-changing blocks
    keep = ones.clone()
    keep[1] = torch.tensor([1.0 if not k else 0.0 for stage in arch.skippable for k in stage])
    logits = model.forward_trace(x, full, keep=keep)[0]
    shallow = model(x, parse_spec("-/0/0"))
    assert torch.allclose(logits[1], shallow[1], atol=1e-5)
    assert torch.allclose(logits[0], model(x)[0], atol=1e-6)


def test_training_step_with_drops_has_no_kl_and_backpropagates():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    keep = drop_path_scales(model.architecture, 0.5, 8, torch.Generator().manual_seed(1))
    out = training_step(model, x, y, [], 0.0, keep=keep)
    assert out.kl.item() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # ghost batches split the drops with the batch
    out2 = training_step(model, x, y, [], 0.0, ghost_batches=2, keep=keep)
    assert torch.isfinite(out2.loss)


def test_config_mode_and_rate_validation():
    assert TrainConfig(mode="stochastic-depth").validate().effective_kl_weight() == 0.0
    with pytest.raises(ValueError, match="drop-path-rate"):
        TrainConfig(mode="stochastic-depth", drop_path_rate=1.0).validate()


def test_stochastic_depth_run_is_evaluated_like_ct_and_is_reproducible(tmp_path):
    fast = [
        "--epochs",
        "1",
        "--train-fraction",
        "0.2",
        "--batch-size",
        "32",
        "--calib-images",
        "100",
        "--no-progress",
        "--eval-bn",
        "running",
    ]
    for name in ("a", "b"):
        assert (
            cli(
                ["train", "--mode", "stochastic-depth", "--drop-path-rate", "0.3", "--out", str(tmp_path / name), *fast]
            )
            == 0
        )
    a, b = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("a", "b"))
    assert a["mode"] == "stochastic-depth" and a["subnets"]["count"] == 27  # all sub-networks, as CT
    assert a["main"]["top1"] == b["main"]["top1"] and a["subnets"]["mean"] == b["subnets"]["mean"]
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["kl"] == 0 for m in metrics)
    # the drops change training: a CT run with the same seed ends elsewhere
    assert cli(["train", "--mode", "ct", "--out", str(tmp_path / "ct"), *fast]) == 0
    ct = json.loads((tmp_path / "ct" / "results.json").read_text())
    assert ct["subnets"]["per_subnet"] != a["subnets"]["per_subnet"]
