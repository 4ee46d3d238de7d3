"""ST++ options and the lambda schedule, as pure functions; fine-tuning's weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from stimulative.core.resolution import resize_batch, subnet_sides
from stimulative.core.sampling import Architecture, SubnetSpec
from stimulative.core.schedules import kl_weight_at
from stimulative.core.spaces import build_space, min_depths_for, shallowest
from stimulative.models import create_model

RESNET50 = Architecture(tuple((False,) + (True,) * (n - 1) for n in (3, 4, 6, 3)))
VIT = Architecture(((True,) * 12,))


def test_named_spaces():
    assert min_depths_for(RESNET50, "") == [1, 1, 1, 1]
    assert min_depths_for(RESNET50, "default") == [1, 1, 1, 1]
    assert min_depths_for(RESNET50, "atleast3") == [3, 3, 3, 3]
    assert min_depths_for(RESNET50, "half") == [2, 2, 3, 2]
    assert min_depths_for(RESNET50, "all") == [1, 1, 1, 1]
    assert min_depths_for(VIT, "all") == [0]  # an all-skippable stage may run no block
    assert min_depths_for(VIT, "atleast3") == [3]
    assert min_depths_for(RESNET50, "atleast5") == [3, 4, 5, 3]  # the whole stage if shorter
    assert min_depths_for(RESNET50, "2,2,2,2") == [2, 2, 2, 2]
    assert min_depths_for(RESNET50, "space2") == [2, 2, 1, 1]  # official: not "at least 2 per stage"
    with pytest.raises(ValueError, match="named space"):
        min_depths_for(RESNET50, "spaceX")
    with pytest.raises(ValueError, match="named space"):
        min_depths_for(RESNET50, "space8")  # the official names stop at space7


OFFICIAL_SIZES = {"default": 216, "space1": 60, "space2": 108, "space3": 8, "space4": 20, "space5": 3}
OFFICIAL_SIZES |= {"space6": 16, "space7": 15}


@pytest.mark.parametrize("model", ["resnet50", "resnet50_cifar"])
def test_official_spaces_have_the_official_sizes_on_resnet50(model):
    arch = create_model(model).architecture
    assert arch.stage_sizes == (3, 4, 6, 3)
    assert {name: build_space(arch, name).size() for name in OFFICIAL_SIZES} == OFFICIAL_SIZES
    space3 = build_space(arch, "space3")
    assert space3.depths == ((3,), (3, 4), (3, 4, 5, 6), (3,))  # the official table's allowed depths


def test_resnet101_default_space_and_official_names_elsewhere():
    arch = create_model("resnet101").architecture
    assert build_space(arch, "default").size() == 3 * 4 * 23 * 3 == 828
    assert build_space(arch, "space3").size() == 1 * 2 * 21 * 1  # the list applies (the official code ignores it)
    resnet20 = create_model("resnet20").architecture
    with pytest.raises(ValueError, match=r"space3 is the official ResNet-50 space .* stages \[3, 3, 3\]"):
        build_space(resnet20, "space3")
    small = Architecture(tuple((False,) + (True,) * (n - 1) for n in (3, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"--min-depths 'space5': space5 .* stages \[3, 3, 3, 3\]"):
        build_space(small, "space5")  # (3, 4, 4, 3) needs a stage of at least 4 blocks


def test_our_mobilenetv3_presets():
    for model in ("mobilenetv3_large", "mobilenetv3_large_cifar"):
        arch = create_model(model).architecture
        assert arch.stage_sizes == (1, 2, 3, 4, 2, 3)
        sizes = {n: build_space(arch, n).size() for n in ("ours-mbv3-144", "ours-mbv3-48", "ours-mbv3-6")}
        assert sizes == {"ours-mbv3-144": 144, "ours-mbv3-48": 48, "ours-mbv3-6": 6}
        assert build_space(arch, "default").size() == 144
        nested = [set(build_space(arch, n).depths[s]) for n in ("ours-mbv3-6", "ours-mbv3-48") for s in range(6)]
        assert all(a <= b for a, b in zip(nested[:6], nested[6:]))  # 6 inside 48
    with pytest.raises(ValueError, match="our preset for MobileNetV3-Large"):
        build_space(RESNET50, "ours-mbv3-48")


def test_shallowest_is_the_minimum_of_every_stage():
    space = build_space(RESNET50, "space3")
    assert shallowest(space, RESNET50) == SubnetSpec.ordered([3, 3, 3, 3])
    raw = shallowest(build_space(RESNET50, ""), RESNET50, "raw")
    assert raw == SubnetSpec.from_blocks([[0], [0], [0], [0]])


def test_lambda_schedules():
    total, start = 100, 20
    assert kl_weight_at(2.0, 10, total, start, "constant") == 0.0  # before the start epoch
    assert kl_weight_at(2.0, 20, total, start, "constant") == 2.0
    assert kl_weight_at(2.0, 20, total, start, "cosine-up") == pytest.approx(0.0)
    assert kl_weight_at(2.0, 60, total, start, "cosine-up") == pytest.approx(1.0)
    assert kl_weight_at(2.0, 100, total, start, "cosine-up") == pytest.approx(2.0)
    assert kl_weight_at(2.0, 20, total, start, "cosine-down") == pytest.approx(2.0)
    assert kl_weight_at(2.0, 100, total, start, "cosine-down") == pytest.approx(0.0)
    ups = [kl_weight_at(1.0, s, total, 0, "cosine-up") for s in range(total)]
    assert all(b >= a for a, b in zip(ups, ups[1:], strict=False))
    with pytest.raises(ValueError, match="cosine-up"):
        kl_weight_at(1.0, 0, 10, 0, "linear")


def test_subnet_sides_are_seeded_and_in_range():
    sides = subnet_sides(torch.Generator().manual_seed(0), 200, 224, 0.43, 1.0)
    assert min(sides) >= math.floor(0.43 * 224) and max(sides) <= 224
    assert sides == subnet_sides(torch.Generator().manual_seed(0), 200, 224, 0.43, 1.0)
    assert len(set(sides)) > 20


def test_resize_batch():
    x = torch.randn(2, 3, 32, 32)
    assert resize_batch(x, 32) is x
    assert resize_batch(x, 14).shape == (2, 3, 14, 14)


def test_config_validates_the_new_options():
    from stimulative.core.resolution import parse_resolution
    from stimulative.training.config import TrainConfig

    assert parse_resolution("0.43,1") == (0.43, 1.0)
    assert parse_resolution("") is None
    for bad in ("1,0.5", "0,1", "a,b", "0.5"):
        with pytest.raises(ValueError, match="subnet-resolution"):
            TrainConfig(subnet_resolution=bad).validate()
    with pytest.raises(ValueError, match="kl-start-epoch"):
        TrainConfig(epochs=3, kl_start_epoch=3).validate()
    with pytest.raises(ValueError, match="kl-schedule"):
        TrainConfig(kl_schedule="linear").validate()
    with pytest.raises(ValueError, match="imagefolder"):
        TrainConfig(dataset="imagefolder", resize=64).validate()


def test_init_from_a_weights_file_of_this_model(tmp_path):
    from safetensors.torch import save_file

    from stimulative.training.model_setup import load_initial_weights

    torch.manual_seed(0)
    src = create_model("resnet20", num_classes=10, in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    torch.manual_seed(1)
    dst = create_model("resnet20", num_classes=10, in_chans=1)
    load_initial_weights(dst, str(path))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))
    other = create_model("resnet32", num_classes=10, in_chans=1)
    with pytest.raises(ValueError, match="another architecture.*--pretrained-file"):
        load_initial_weights(other, str(path))
    with pytest.raises(ValueError, match="no checkpoint"):
        load_initial_weights(dst, str(tmp_path))
    with pytest.raises(ValueError, match="no such file"):
        load_initial_weights(dst, str(tmp_path / "missing"))


# --- the options inside the one training loop ----------------------------------------------

TINY = [
    "--epochs",
    "2",
    "--train-fraction",
    "0.1",
    "--batch-size",
    "32",
    "--eval-subnets",
    "4",
    "--calib-images",
    "64",
    "--eval-bn",
    "running",
    "--no-progress",
]


def test_stpp_options_train_together_and_lambda_starts_late(tmp_path):
    import json

    from stimulative.cli import main as cli

    out = tmp_path / "run"
    args = [
        "train",
        "--out",
        str(out),
        *TINY,
        "--sandwich",
        "--subnet-resolution",
        "0.5,1",
        "--kl",
        "kl-direction",
        "--kl-amplitude",
        "2",
        "--kl-schedule",
        "cosine-down",
        "--kl-start-epoch",
        "1",
        "--min-depths",
        "half",
    ]
    assert cli(args) == 0
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0]["kl"] == 0.0  # lambda is 0 before --kl-start-epoch: no sub-network runs
    assert epochs[1]["kl"] > 0.0


def test_fine_tuning_measures_loafing_before_and_after(tmp_path, capsys):
    import json

    from stimulative.cli import main as cli

    first, second = tmp_path / "ct", tmp_path / "ft"
    one_epoch = [*TINY[2:], "--epochs", "1"]
    assert cli(["train", "--mode", "ct", "--out", str(first), *one_epoch]) == 0
    assert cli(["train", "--init-from", str(first), "--out", str(second), *one_epoch]) == 0
    before = json.loads((second / "results_before.json").read_text())
    after = json.loads((second / "results.json").read_text())
    ct = json.loads((first / "results.json").read_text())
    assert before["main"]["top1"] == ct["main"]["top1"]  # the CT run's network, evaluated alike
    assert before["subnets"]["mean"] == pytest.approx(ct["subnets"]["mean"])
    assert after["subnets"]["count"] == before["subnets"]["count"]
    printed = capsys.readouterr().out
    assert "before fine-tuning" in printed and "loafing" in printed
