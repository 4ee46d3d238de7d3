import json
import os

import pytest
import torch
import yaml

from stimulative.cli import main as cli
from stimulative.core.sampling import SamplingSpace, enumerate_subnets, parse_spec
from stimulative.core.schedules import cosine_lr
from stimulative.models import create_model
from stimulative.training.config import TrainConfig
from stimulative.training.steps import low_memory_step, training_step

FAST = ["--epochs", "2", "--batch-size", "128", "--calib-images", "300", "--no-progress"]


def test_end_to_end_st_run_writes_a_self_describing_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["train", "--out", str(out), *FAST]) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "checkpoint/model.safetensors",
        "checkpoint/state.pt",
        "checkpoint/meta.json",
    ):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert {"mode", "model", "dataset", "seed", "epochs", "train_seconds", "bn", "main", "subnets"} <= set(results)
    assert results["mode"] == "st" and results["model"] == "resnet20" and results["bn"] == "full"
    assert results["backward"] == "joint"  # --backward auto with one sub-network a step
    assert set(results["by_bn"]) == {"full", "subnet", "running"}
    subnets = results["subnets"]
    assert subnets["count"] == 27 == len(subnets["per_subnet"])
    assert subnets["min"] <= subnets["mean"] <= subnets["max"]
    assert results["main"]["top1"] > 50  # two epochs on the digits already learn something
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["mode"] == "st"
    assert "BN protocol" in capsys.readouterr().out
    # re-evaluation without retraining, on named sub-networks and one BN mode
    assert cli(["evaluate", str(out), "--subnets", "1,1,1", "3,3,3", "--bn", "running", "--no-progress"]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert [s["spec"] for s in ev["subnets"]["per_subnet"]] == ["1,1,1", "3,3,3"]
    assert ev["bn"] == "running"
    assert ev["subnets"]["per_subnet"][1]["top1"] == pytest.approx(results["by_bn"]["running"]["main"]["top1"])


def test_ct_and_individual_modes(tmp_path):
    assert cli(["train", "--mode", "ct", "--out", str(tmp_path / "ct"), *FAST, "--eval-bn", "running"]) == 0
    ct = json.loads((tmp_path / "ct" / "results.json").read_text())
    assert ct["mode"] == "ct" and ct["bn"] == "running"
    metrics = [json.loads(line) for line in (tmp_path / "ct" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["kl"] == 0 for m in metrics)
    assert cli(["train", "--mode", "individual", "--subnet", "1,1,1", "--out", str(tmp_path / "ind"), *FAST]) == 0
    ind = json.loads((tmp_path / "ind" / "results.json").read_text())
    assert [s["spec"] for s in ind["subnets"]["per_subnet"]] == ["1,1,1"]
    assert ind["main"]["top1"] == ind["subnets"]["per_subnet"][0]["top1"]


def test_yaml_config_with_flag_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\nbatch-size: 256\nkl_weight: 0.5\nmode: ct\n")
    out = tmp_path / "run"
    assert (
        cli(
            [
                "train",
                "--config",
                str(cfg),
                "--mode",
                "st",
                "--out",
                str(out),
                "--calib-images",
                "100",
                "--eval-bn",
                "running",
                "--no-progress",
            ]
        )
        == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 256 and saved["kl_weight"] == 0.5 and saved["mode"] == "st"


def test_shipped_recipes_parse():
    """Every YAML under configs/ (paper/, official/, ours/) is a valid configuration and opens
    with a comment naming its source."""
    from stimulative.training.config import load_yaml_options

    folder = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    paths = sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".yaml"))
    assert {os.path.basename(os.path.dirname(p)) for p in paths} == {"paper", "official", "ours"}
    for path in paths:
        with open(path) as fh:
            assert fh.readline().startswith("# Source: "), path
        TrainConfig(**load_yaml_options(path)).validate()


def test_official_stpp_recipe():
    from stimulative.training.config import load_yaml_options

    folder = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "official")
    cfg = TrainConfig(**load_yaml_options(os.path.join(folder, "imagenet_resnet50_stpp.yaml"))).validate()
    assert (cfg.norm_kd, cfg.subnets_per_step, cfg.min_depths, cfg.subnet_resolution) == (True, 6, "space3", "0.43,1")
    assert (cfg.train_crop_size, cfg.val_resize_size, cfg.val_crop_size) == (200, 240, 224)
    assert cfg.nesterov and cfg.wd_all_params and not cfg.bn_zero_init and cfg.classifier_init == "normal"
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.weight_decay) == (200, 0.2, 512, 1e-4)


def test_training_is_deterministic_on_cpu(tmp_path):
    outs = []
    for i in range(2):
        assert (
            cli(
                [
                    "train",
                    "--out",
                    str(tmp_path / f"r{i}"),
                    "--epochs",
                    "1",
                    "--batch-size",
                    "256",
                    "--eval-bn",
                    "running",
                    "--no-progress",
                ]
            )
            == 0
        )
        from safetensors.torch import load_file

        outs.append(load_file(str(tmp_path / f"r{i}" / "checkpoint" / "model.safetensors")))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_sub_network_passes_leave_bn_running_statistics_to_the_full_network():
    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1).train()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    ct_model = create_model("resnet20", in_chans=1).train()
    ct_model.load_state_dict(model.state_dict())
    training_step(model, x, y, [parse_spec("1,1,1"), parse_spec("2,1,3")], kl_weight=1.0)
    training_step(ct_model, x, y, [], kl_weight=0.0)
    for (k, a), b in zip(model.state_dict().items(), ct_model.state_dict().values()):
        if "running" in k or "num_batches" in k:
            assert torch.equal(a, b), k


def test_shared_prefix_step_equals_separate_forward_and_backward():
    """Reusing the full network's prefix activations gives the same loss and gradients as
    running each sub-network from scratch (the reference implementation's way)."""
    from stimulative.core.batchnorm import frozen_bn_stats
    from stimulative.core.loss import LossOptions, stimulative_loss

    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1).train()
    ref = create_model("resnet20", in_chans=1).train()
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    specs = [parse_spec("3,2,1"), parse_spec("3,3,2"), parse_spec("0.2/0.1/0.2")]
    out = training_step(model, x, y, specs, kl_weight=1.0, loss=LossOptions(temperature=2.0))
    out.loss.backward()
    main = ref(x)
    with frozen_bn_stats(ref):
        subs = [ref(x, s) for s in specs]
    loss, _, _ = stimulative_loss(main, subs, y, 1.0, LossOptions(temperature=2.0))
    loss.backward()
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"kl": "kl-direction"},
        {"norm_kd": True, "kl_amplitude": 2.0},
        {"norm_kd": True, "norm_kd_type": "v1", "main_coef": 0.5},
        {"norm_kd": True, "norm_kd_type": "v2", "st_loss": "dkd"},
        {"st_loss": "ce"},
        {"st_loss": "ce-target"},
        {"st_loss": "mse"},
    ],
)
def test_low_memory_step_equals_the_joint_backward(options):
    """Back-propagating each sub-network to its branch point, then the full network once,
    gives the joint backward's loss, gradients and BN running statistics; sub-networks
    on their own smaller input (ST++) and two sharing a branch point included."""
    from stimulative.core.loss import LossOptions
    from stimulative.core.resolution import resize_batch

    loss = LossOptions(temperature=2.0, **options)
    torch.manual_seed(0)
    joint = create_model("resnet20", in_chans=1).train()
    low = create_model("resnet20", in_chans=1).train()
    low.load_state_dict(joint.state_dict())
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    specs = [parse_spec("3,2,1"), parse_spec("3,2,3"), parse_spec("1,1,1"), parse_spec("2,1,3")]
    sub_inputs = [None, None, None, resize_batch(x, 6)]
    ref = training_step(joint, x, y, specs, 0.7, loss, sub_inputs=sub_inputs)
    ref.loss.backward()
    out = low_memory_step(low, x, y, specs, 0.7, loss, sub_inputs=sub_inputs)
    assert all(
        p.grad is not None for p in low.stages[2][2].parameters()
    )  # a suffix's gradients arrive before the backward
    out.loss.backward()
    for a, b in ((out.loss, ref.loss), (out.ce, ref.ce), (out.kl, ref.kl)):
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
    for (name, p), q in zip(low.named_parameters(), joint.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name
    for (k, a), b in zip(low.state_dict().items(), joint.state_dict().values()):
        assert torch.allclose(a.float(), b.float()), k


def test_per_subnet_backward_is_the_default_for_several_subnetworks_and_refuses_what_it_cannot_do(tmp_path, capsys):
    """--backward auto with three sub-networks trains exactly as --low-memory (the per-subnet
    backward); tests/training/test_backward.py compares it with the joint one in float64."""
    runs = {}
    for name, flags in (("auto", []), ("low", ["--low-memory"])):
        assert cli(["train", *FAST, "--subnets-per-step", "3", *flags, "--out", str(tmp_path / name)]) == 0
        metrics = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = json.loads((tmp_path / name / "results.json").read_text()), metrics
    assert [r["backward"] for r, _ in runs.values()] == ["per-subnet", "per-subnet"]
    assert [[m[k] for k in ("loss", "ce", "kl")] for m in runs["auto"][1]] == [
        [m[k] for k in ("loss", "ce", "kl")] for m in runs["low"][1]
    ]
    assert runs["auto"][0]["by_bn"]["subnet"]["main"]["top1"] > 50
    for bad in (["--amp", "fp16"], ["--ghost-batches", "2"]):
        for explicit in (["--low-memory"], ["--backward", "per-subnet"]):
            argv = ["train", *FAST, *explicit, *bad, "--device", "cpu", "--out", str(tmp_path / "bad")]
            assert cli(argv) != 0
            assert "--backward per-subnet (--low-memory)" in capsys.readouterr().err
            assert not (tmp_path / "bad").exists()


def test_cosine_schedule_with_warmup():
    assert cosine_lr(0, 100, 10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 10) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 10) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 0) == pytest.approx(0.0)


def test_evaluated_space_is_the_ordered_space():
    arch = create_model("resnet20").architecture
    assert len(list(enumerate_subnets(SamplingSpace.default(arch), arch))) == 27
