"""FLOP counting runs the trainer's own step policy, so every option that changes a step counts."""

import pytest

from stimulative.data import load_data
from stimulative.training.config import TrainConfig
from stimulative.training.flops import step_flops, training_flops


def flops(**kw) -> dict:
    return training_flops(TrainConfig(train_fraction=0.1, **{"epochs": 1, **kw}).to_dict(), samples=4)


def test_training_flops_follow_the_configuration():
    ct, sd = flops(mode="ct"), flops(mode="stochastic-depth")
    st1, st3 = flops(mode="st"), flops(mode="st", subnets_per_step=3)
    sandwich = flops(mode="st", sandwich=True)
    images = len(load_data("digits", train_fraction=0.1, val_fraction=TrainConfig().val_fraction).train)
    assert ct["steps"] == images // 64 and ct["total"] == ct["steps"] * ct["per_step"]  # batches of 64, 1 epoch
    assert sd["per_step"] == pytest.approx(ct["per_step"], rel=0.01)  # per-sample drops compute every branch
    assert ct["per_step"] < st1["per_step"] < st3["per_step"] < 3 * ct["per_step"]
    assert sandwich["per_step"] > st1["per_step"]


def test_training_flops_count_the_lambda_schedule_and_smaller_inputs():
    """The copy of the step this replaced ignored --kl-start-epoch and --subnet-resolution."""
    ct = flops(mode="ct", epochs=4)
    st = flops(mode="st", epochs=4, subnets_per_step=3)
    late = flops(mode="st", epochs=4, subnets_per_step=3, kl_start_epoch=2)  # CT for the first half
    assert ct["per_step"] < late["per_step"] < st["per_step"]
    small = flops(mode="st", epochs=4, subnets_per_step=3, subnet_resolution="0.5,0.5")  # sub-networks on 4x4 inputs
    assert ct["per_step"] < small["per_step"] < st["per_step"]


def test_every_step_counted_in_order():
    """``step_flops`` counts each step as ``training_flops`` samples them: over every step,
    their mean is its per-step figure; sampled sub-networks make the steps differ."""
    config = TrainConfig(train_fraction=0.3, epochs=2, mode="st", subnets_per_step=2).to_dict()
    each = step_flops(config)
    whole = training_flops(config, samples=len(each))
    assert len(each) == whole["steps"] == whole["samples"]
    assert sum(each) / len(each) == pytest.approx(whole["per_step"])
    assert len(set(each)) > 1
