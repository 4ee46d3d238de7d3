"""`stimulative report` given several runs compares them (issue 16): one table, overlaid
figures at paper size in three formats, distributions for large spaces, means over seeds only
with several seeds."""

from __future__ import annotations

import itertools
import json
import random

import matplotlib.image

from stimulative.cli import main as cli
from stimulative.reporting.figures import run_figure

BNS = ("full", "subnet", "running")


def _fake_run(folder, mode: str, seed: int, centre: float) -> None:
    """A finished resnet56-like run (729 sub-networks of depths 1..9 per stage) without training."""
    rng = random.Random(seed)
    specs = [",".join(map(str, d)) for d in itertools.product(range(1, 10), repeat=3)]
    by_bn = {}
    for i, bn in enumerate(BNS):
        top1 = [min(100.0, centre - 5 * i + rng.uniform(-10, 10)) for _ in specs]
        stats = {"count": len(top1), "mean": sum(top1) / len(top1), "std": 5.0, "min": min(top1), "max": max(top1)}
        per = [{"spec": s, "top1": t} for s, t in zip(specs, top1)]
        by_bn[bn] = {"bn": bn, "main": {"top1": centre + 5}, "subnets": {**stats, "per_subnet": per}}
    results = {"mode": mode, "model": "resnet56", "dataset": "cifar10", "seed": seed, "epochs": 3}
    results.update(train_seconds=1.0, bn="full", main=by_bn["full"]["main"], subnets=by_bn["full"]["subnets"])
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({**results, "by_bn": by_bn}))
    lines = [json.dumps({"epoch": e, "val_top1_full_bn": centre - 10 + 3 * e}) for e in (1, 2, 3)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_runs_given_together_are_compared(tmp_path, capsys):
    _fake_run(tmp_path / "ct", "ct", 0, 60.0)
    _fake_run(tmp_path / "st", "st", 0, 80.0)
    out = tmp_path / "report"
    assert cli(["report", str(tmp_path / "ct"), str(tmp_path / "st"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Comparison of 2 runs" in md and "Mean ± std over seeds" not in md  # one seed each
    assert "| CT |" in md and "| ST |" in md and "full top-1 (subnet)" in md
    for name in ("compare_epochs", "compare_subnets"):
        for ext in ("png", "pdf", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 0
    # a double-column figure: 7 inches at 200 dpi
    assert matplotlib.image.imread(out / "figures" / "compare_subnets.png").shape[1] == 1400
    # the report is not replaced without --force
    assert cli(["report", str(tmp_path / "ct"), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_several_seeds_give_means_over_seeds(tmp_path):
    for seed in (0, 1):
        _fake_run(tmp_path / f"st{seed}", "st", seed, 80.0)
    assert cli(["report", str(tmp_path / "st0"), str(tmp_path / "st1"), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "Mean ± std over seeds" in md and "| ST s0 |" in md and "| ST s1 |" in md


def test_a_large_space_is_drawn_as_a_distribution(tmp_path):
    _fake_run(tmp_path / "st", "st", 0, 80.0)
    results = json.loads((tmp_path / "st" / "results.json").read_text())
    path = run_figure(results, str(tmp_path / "figures"))
    figure = matplotlib.image.imread(path)
    assert figure.shape[1] == 1400  # 7 inches wide, however many sub-networks
    # one box per depth (3 to 27 blocks kept), not 729 ticks: the figure says so in its axis label
    assert "blocks kept" in (tmp_path / "figures" / "subnets.svg").read_text()
