"""FLOPs of training as configured, counted on real steps of the one step policy (so every
option that changes a step, such as the lambda schedule, the sandwich rule or ST++'s smaller
inputs, is counted as it trains)."""

from __future__ import annotations

from collections.abc import Callable

from ..core.spaces import build_space
from ..runtime.measure import count_flops
from .config import config_from_dict
from .model_setup import build_model
from .run_data import load_run_data
from .steps import LossOptions, StepPolicy, run_step


def training_flops(config: dict, samples: int = 8) -> dict:
    """FLOPs of training (forward + backward): the mean over ``samples`` steps spread evenly
    over the run (their sub-networks and lambda vary) times the number of steps. Evaluation
    is not counted (it is the same for every mode)."""
    count, total = _step_counter(config)
    at = sorted({min(total - 1, i * total // samples) for i in range(samples)})
    per_step = sum(count(step) for step in at) / len(at)
    return {"per_step": per_step, "steps": total, "total": per_step * total, "samples": len(at)}


def step_flops(config: dict) -> list[int]:
    """FLOPs (forward + backward) of every step of training as configured, in order: with a
    fixed seed, step ``i`` of every run of this configuration draws the same sub-networks."""
    count, total = _step_counter(config)
    return [count(step) for step in range(total)]


def _step_counter(config: dict) -> tuple[Callable[[int], int], int]:
    """``count(step)``: the FLOPs of training step ``step`` as the trainer's step policy
    plans it (on the first training batch); and the run's number of steps."""
    cfg = config_from_dict(config)
    data = load_run_data(cfg)
    model = build_model(cfg, data.num_classes, data.in_chans, data.image_size, pretrained=False, log=lambda _: None)
    model.train()
    arch = model.architecture
    policy = StepPolicy.from_config(cfg, arch, build_space(arch, cfg.min_depths), data.steps_per_epoch(cfg.batch_size))
    loss = LossOptions.from_config(cfg)
    x, y = next(data.train_batches(cfg.batch_size, cfg.seed, 0))

    def count(step: int) -> int:
        flops = count_flops(lambda: run_step(model, x, y, policy.plan(step, x), loss, policy.fixed).loss.backward())
        model.zero_grad(set_to_none=True)
        return flops

    return count, policy.total_steps
