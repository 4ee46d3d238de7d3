"""FLOPs of training as configured, counted on real steps of the one step policy (so every
option that changes a step, such as the lambda schedule, the sandwich rule or ST++'s smaller
inputs, is counted as it trains)."""

from __future__ import annotations

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
    cfg = config_from_dict(config)
    data = load_run_data(cfg)
    model = build_model(cfg, data.num_classes, data.in_chans, data.image_size, pretrained=False, log=lambda _: None)
    model.train()
    arch = model.architecture
    steps_per_epoch = data.steps_per_epoch(cfg.batch_size)
    policy = StepPolicy.from_config(cfg, arch, build_space(arch, cfg.min_depths), steps_per_epoch)
    loss = LossOptions.from_config(cfg)
    x, y = next(data.train_batches(cfg.batch_size, cfg.seed, 0))
    total = policy.total_steps
    at = sorted({min(total - 1, i * total // samples) for i in range(samples)})

    def one_step(step: int) -> None:
        out = run_step(model, x, y, policy.plan(step, x), loss, policy.fixed)
        out.loss.backward()

    counts = []
    for step in at:
        counts.append(count_flops(lambda step=step: one_step(step)))
        model.zero_grad(set_to_none=True)
    per_step = sum(counts) / len(counts)
    return {"per_step": per_step, "steps": total, "total": per_step * total, "samples": len(at)}
