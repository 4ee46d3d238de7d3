"""Configuration: flags and YAML agree, the resolved config round-trips, bad values are named."""

import argparse
import dataclasses
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stimulative.training.config import (
    TrainConfig,
    add_config_arguments,
    config_from_dict,
    load_yaml_options,
    resolve_config,
)


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return resolve_config(parser.parse_args(argv))


def test_defaults_are_valid():
    assert TrainConfig().validate() == TrainConfig()


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 0.1\nmin-depths: 2,2,2\n")
    cfg = _parse(["--config", str(path), "--lr", "0.2"])
    assert (cfg.epochs, cfg.lr, cfg.min_depths) == (7, 0.2, "2,2,2")


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = dataclasses.replace(TrainConfig(), epochs=3, lr=0.01, mode="ct", min_depths="1,2,3", nesterov=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert TrainConfig(**load_yaml_options(str(path))) == cfg
    assert config_from_dict(yaml.safe_load(path.read_text())) == cfg


def test_saved_config_ignores_unknown_keys():
    assert config_from_dict({**TrainConfig().to_dict(), "from_the_future": 1}) == TrainConfig()


finite_positive = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(
    epochs=st.integers(1, 1000),
    lr=finite_positive,
    momentum=st.floats(0, 0.999),
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["st", "ct"]),
    kl_weight=st.floats(0, 10),
)
def test_valid_values_round_trip(epochs, lr, momentum, seed, mode, kl_weight):
    cfg = TrainConfig(epochs=epochs, lr=lr, momentum=momentum, seed=seed, mode=mode, kl_weight=kl_weight).validate()
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["lr", "temperature", "kl_amplitude"]),
    value=st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf]),
)
def test_impossible_floats_are_named(name, value):
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')}"):
        TrainConfig(**{name: value}).validate()


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("epochs", 0, "--epochs must be positive"),
        ("batch_size", -4, "--batch-size must be positive"),
        ("momentum", 1.0, r"--momentum must be in \[0, 1\)"),
        ("seed", 2**32, r"--seed must be in"),
        ("train_fraction", 0.0, "--train-fraction"),
        ("label_smoothing", -0.1, "--label-smoothing"),
        ("mode", "sst", "unknown mode 'sst'; choose from st, ct, individual"),
        ("eval_bn", "x", "unknown eval-bn 'x'; choose from"),
    ],
)
def test_bad_values_are_named(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**{field: value}).validate()


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"st_loss": "js"}, "unknown st-loss 'js'; choose from kl, ce, ce-target, dkd, mse"),
        ({"norm_kd_type": "v3", "norm_kd": True}, "unknown norm-kd-type 'v3'; choose from default, v1, v2"),
        ({"kl": "kl-ln-inside", "norm_kd": True}, "--norm-kd normalises every logit already: choose one"),
        ({"kl": "kl-direction", "st_loss": "mse"}, "no effect with --st-loss mse"),
        ({"norm_kd_type": "v2"}, "add --norm-kd"),
        ({"main_coef": -1.0}, "--main-coef must not be negative"),
    ],
)
def test_loss_options_are_checked(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**values).validate()


def test_loss_options_reach_the_step():
    from stimulative.training.steps import LossOptions

    cfg = TrainConfig(norm_kd=True, norm_kd_type="v1", st_loss="dkd", main_coef=0.5, kl_amplitude=2.0).validate()
    assert LossOptions.from_config(cfg) == LossOptions(
        temperature=1.0,
        kl="kl",
        kl_amplitude=2.0,
        label_smoothing=0.0,
        st_loss="dkd",
        main_coef=0.5,
        norm_kd=True,
        norm_kd_type="v1",
    )


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"auto_augment": "randaugment"}, "--auto-augment applies to CIFAR and imagefolder"),
        ({"lighting": 0.1}, "--lighting applies to CIFAR and imagefolder"),
        ({"dataset": "cifar10", "train_crop_size": 28}, "--train-crop-size applies to imagefolder"),
        ({"dataset": "imagefolder", "val_resize_size": -1}, "--val-resize-size must not be negative"),
        ({"dataset": "cifar10", "random_erasing": 1.5}, r"--random-erasing is a probability in \[0, 1\]"),
        ({"mixup": -0.2}, "--mixup must not be negative"),
        ({"cutmix": 1.0, "st_loss": "dkd"}, "--st-loss dkd needs integer labels"),
        ({"mixup": 0.2, "st_loss": "ce-target"}, "--st-loss ce-target needs integer labels"),
        ({"auto_augment": "augmix", "dataset": "cifar10"}, "choose from none, randaugment, trivialaugment"),
        ({"classifier_init": "normal", "pretrained_file": "w.safetensors"}, "would be overwritten"),
        ({"classifier_init": "zeros"}, "unknown classifier-init 'zeros'; choose from model, normal"),
    ],
)
def test_recipe_options_are_checked(values, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**values).validate()


def test_official_imagenet_options_are_valid_together():
    TrainConfig(
        dataset="imagefolder",
        train_crop_size=200,
        val_resize_size=240,
        val_crop_size=224,
        color_jitter=0.4,
        lighting=0.1,
        auto_augment="trivialaugment",
        random_erasing=0.5,
        mixup=0.2,
        cutmix=1.0,
        bn_zero_init=False,
        classifier_init="normal",
        wd_all_params=True,
        nesterov=True,
        min_lr_ratio=1e-4,
    ).validate()


def test_validate_helpers_stay_short():
    import inspect

    for name, fn in inspect.getmembers(TrainConfig, inspect.isfunction):
        if name == "validate" or name.startswith("_check"):
            assert len(inspect.getsource(fn).splitlines()) <= 60, name
