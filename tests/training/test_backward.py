"""--backward: auto resolves to the per-subnet backward for several sub-networks where it is
allowed, to joint otherwise; the former --low-memory flag and key still mean per-subnet, and a
run saved before --backward keeps the step it was trained with."""

import argparse

import pytest
import yaml

from stimulative.cli_grammar import check_yaml_keys
from stimulative.runtime.distributed import DistEnv
from stimulative.training.backward import resolve_backward
from stimulative.training.config import TrainConfig, add_config_arguments, config_from_dict, resolve_config
from stimulative.training.loop import Trainer, train_one_epoch
from stimulative.training.run_dir import RunDir


@pytest.mark.parametrize(
    ("options", "per_subnet"),
    [
        ({"subnets_per_step": 6}, True),
        ({"subnets_per_step": 1}, False),  # the paper's setting: joint, no gain measured
        ({"subnets_per_step": 1, "sandwich": True}, True),  # two sub-networks a step
        ({"subnets_per_step": 6, "amp": "fp16"}, False),  # a grad scaler
        ({"subnets_per_step": 6, "ghost_batches": 2}, False),
        ({"subnets_per_step": 6, "subnet_bn_update": True}, False),
        ({"subnets_per_step": 6, "mode": "ct"}, False),
        ({"subnets_per_step": 6, "backward": "joint"}, False),
        ({"subnets_per_step": 1, "backward": "per-subnet"}, True),
    ],
)
def test_auto_picks_per_subnet_for_several_subnetworks_where_it_is_allowed(options, per_subnet):
    assert resolve_backward(TrainConfig(**options).validate(), distributed=False) is per_subnet


def test_under_ddp_auto_is_joint_and_an_explicit_per_subnet_is_refused():
    assert resolve_backward(TrainConfig(subnets_per_step=6), distributed=True) is False
    with pytest.raises(ValueError, match="DDP.*--backward joint or auto"):
        resolve_backward(TrainConfig(subnets_per_step=6, backward="per-subnet"), distributed=True)


@pytest.mark.parametrize("options", [{"amp": "fp16"}, {"ghost_batches": 2}, {"subnet_bn_update": True}])
def test_an_explicit_per_subnet_with_an_option_it_cannot_run_with_is_an_error(options):
    with pytest.raises(ValueError, match="--backward per-subnet"):
        TrainConfig(subnets_per_step=6, backward="per-subnet", **options).validate()


def _parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return resolve_config(parser.parse_args(argv))


def test_the_former_low_memory_flag_and_yaml_key_still_work(tmp_path):
    assert _parse(["--low-memory"]).backward == "per-subnet"
    assert _parse([]).backward == "auto"
    path = tmp_path / "c.yaml"
    for text, backward in (("low_memory: true\n", "per-subnet"), ("low-memory: false\n", "joint")):
        path.write_text(text)
        check_yaml_keys(str(path))  # not an unknown option
        assert _parse(["--config", str(path)]).backward == backward


@pytest.mark.parametrize(
    ("saved", "backward"),
    [
        ({"low_memory": True}, "per-subnet"),
        ({"low_memory": False}, "joint"),
        ({}, "joint"),  # saved before --low-memory existed: the joint step
        ({"backward": "auto"}, "auto"),
    ],
)
def test_a_saved_configuration_keeps_the_step_it_was_trained_with(saved, backward):
    before = {k: v for k, v in TrainConfig().to_dict().items() if k != "backward"}
    assert config_from_dict({**before, **saved}).backward == backward


def test_a_run_saved_with_low_memory_false_resumes_joint_and_may_switch(tmp_path):
    old = {k: v for k, v in TrainConfig(subnets_per_step=6).to_dict().items() if k != "backward"}
    (tmp_path / RunDir.CONFIG).write_text(yaml.safe_dump({**old, "low_memory": False}))
    resume = TrainConfig(subnets_per_step=6, out=str(tmp_path), resume=True)
    assert RunDir(str(tmp_path)).resolve(resume).backward == "joint"
    resume.backward = "per-subnet"  # a runtime option: allowed on resume
    assert RunDir(str(tmp_path)).resolve(resume).backward == "per-subnet"


def _trainer_losses_in_float64(out: str, backward: str, steps: int = 6) -> tuple[bool, list[float]]:
    """The command-line trainer's own step, optimizer and epoch loop, three sub-networks per
    step, in float64 (free of the float32 rounding that training amplifies)."""
    cfg = TrainConfig(out=out, epochs=1, batch_size=64, subnets_per_step=3, backward=backward, progress=False)
    trainer = Trainer(cfg, DistEnv())
    trainer.model.double()  # in place: the optimizer keeps the same parameters
    batches = trainer.data.train_batches(cfg.batch_size, cfg.seed, 0, 0, 0, "cpu")
    doubled = ((x.double(), y) for _, (x, y) in zip(range(steps), batches, strict=False))
    losses = []

    def step(x, y, index):
        out = trainer.step_fn(x, y, index)
        losses.append(out.loss.item())
        return out

    train_one_epoch(trainer.model, trainer.optimizer, trainer.scheduler, doubled, step, 0)
    return trainer.per_subnet, losses


def test_auto_trains_as_the_joint_backward_does_in_float64(tmp_path):
    auto_per_subnet, auto = _trainer_losses_in_float64(str(tmp_path / "auto"), "auto")
    joint_per_subnet, joint = _trainer_losses_in_float64(str(tmp_path / "joint"), "joint")
    assert (auto_per_subnet, joint_per_subnet) == (True, False)
    assert len(auto) == len(joint) == 6
    assert auto == pytest.approx(joint, rel=1e-12)
    assert auto[-1] < auto[0] - 0.1  # and it did train
