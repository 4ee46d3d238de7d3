"""The Lightning integration with Lightning's own Trainer on the CPU, on the digits: the KL is
logged and non-zero, the model learns (far above the 10 % of chance), the sub-networks' top-1
is logged at validation end, BN running statistics are the main network's alone, and the
``ddp`` strategy with two CPU processes (gloo) trains with the ranks in sync."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

L = pytest.importorskip("lightning")

import stimulative  # noqa: E402
from stimulative.core.batchnorm import bn_state  # noqa: E402
from stimulative.integrations.lightning import StimulativeMixin, SubnetMetrics  # noqa: E402

from .lit_digits import DigitsModel, loaders, trainer  # noqa: E402

CHANCE = 10.0  # top-1 % of a guess among the 10 digits


def read_csv(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_fit_logs_the_kl_and_the_sub_networks_and_learns(tmp_path):
    L.seed_everything(0)
    metrics = SubnetMetrics(bn="subnet")
    t = trainer(str(tmp_path), max_epochs=2, callbacks=[metrics])
    train, test = loaders()
    model = DigitsModel()
    t.fit(model, train, test)
    rows = read_csv(tmp_path / "metrics.csv")
    steps = [r for r in rows if r["train/kl"]]
    assert len(steps) == 2 * len(train)  # one row per training step (log_every_n_steps=1)
    # the KL is zero exactly at the steps that drew the full network itself (1 in 27)
    full = model.model.architecture.full()
    drew_full = [model.stimulative.policy.plan(int(r["step"]), None).subnets == [full] for r in steps]
    assert [float(r["train/kl"]) == 0 for r in steps] == drew_full and not all(drew_full)
    ce = [float(r["train/ce"]) for r in steps]
    assert sum(ce[-5:]) < 0.5 * sum(ce[:5])  # the loss falls
    evaluated = [r for r in rows if r["val/subnets/top1_mean"]]
    assert len(evaluated) == 2  # at the end of each validation epoch
    assert metrics.last.count == 27  # resnet20: 3 stages of 3 blocks, default space 3^3
    # measured after 2 epochs: ~94 % for the full network; half of that is still far above chance
    assert metrics.last.full > 5 * CHANCE and metrics.last.min > 3 * CHANCE
    assert float(evaluated[-1]["val/subnets/top1_mean"]) == pytest.approx(metrics.last.mean)


class NaiveModel(DigitsModel):
    """The loop a user might write: a sub-network pass that records BN statistics (allowed
    on purpose here, so that the test below can see what the guard prevents)."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        main = self.model(x)
        with stimulative.subnet_bn_updates(self.model):
            sub = self.model(x, stimulative.parse_spec("1,1,1"))
        return stimulative.stimulative_loss(main, [sub], y)[0]


def one_step(model: L.LightningModule, out: str) -> L.LightningModule:
    train, _ = loaders(shuffle=False)
    trainer(out, max_steps=1, limit_val_batches=0).fit(model, train)
    return model


def test_sub_network_passes_leave_bn_statistics_to_the_main_network(tmp_path):
    L.seed_everything(0)
    st = one_step(DigitsModel(kl_weight=1.0), str(tmp_path / "st"))
    L.seed_everything(0)
    main_only = one_step(DigitsModel(kl_weight=0.0), str(tmp_path / "ct"))  # the main network's forward only
    L.seed_everything(0)
    naive = one_step(NaiveModel(), str(tmp_path / "naive"))
    assert float(read_csv(tmp_path / "st" / "metrics.csv")[0]["train/kl"]) > 0
    same = lambda a, b: all(torch.equal(u, v) for x, y in zip(a, b) for u, v in zip(x, y))  # noqa: E731
    assert same(bn_state(st.model), bn_state(main_only.model))
    assert not same(bn_state(naive.model), bn_state(main_only.model))  # what an unguarded pass does
    # and the step did differ: the KL term moved the weights
    assert any(not torch.equal(p, q) for p, q in zip(st.model.parameters(), main_only.model.parameters()))


def test_lightnings_bf16_precision_runs_the_networks_in_bf16(tmp_path):
    L.seed_everything(0)
    model, seen = DigitsModel(), []
    model.model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    train, _ = loaders(shuffle=False)
    trainer(str(tmp_path), max_steps=1, limit_val_batches=0, precision="bf16-mixed").fit(model, train)
    assert seen == [torch.bfloat16] * 2  # the network and its sub-network, under Lightning's autocast
    assert float(read_csv(tmp_path / "metrics.csv")[0]["train/kl"]) > 0


def test_the_mixin_says_what_it_needs():
    class Bare(StimulativeMixin, L.LightningModule):
        pass

    with pytest.raises(AttributeError, match="self.stimulative = stimulative.Stimulative"):
        Bare().stimulative_step((torch.randn(2, 1, 8, 8), torch.tensor([0, 1])), 0)


def test_ddp_strategy_with_two_cpu_processes(tmp_path):
    """Lightning's ``ddp`` strategy relaunches the script once per rank (gloo on the CPU)."""
    script = os.path.join(os.path.dirname(__file__), "lit_digits.py")
    src = os.path.dirname(os.path.dirname(stimulative.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for r in ranks:
        assert r["metrics"]["train/kl"] > 0
        assert r["metrics"]["val/subnets/top1_mean"] > CHANCE
    # sync_dist: both ranks log the mean over the ranks' shards
    assert ranks[0]["metrics"]["val/subnets/top1_mean"] == ranks[1]["metrics"]["val/subnets/top1_mean"]
    weights = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    params = [n for n, _ in DigitsModel().named_parameters()]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in params)  # DDP kept the ranks in sync
    L.seed_everything(0)
    initial = DigitsModel().state_dict()
    assert any(not torch.equal(weights[0][n], initial[n]) for n in params)  # and they trained
