"""YAML grids: every mistake reported at once, cells and groups as the analysis pairs them."""

import pytest

from stimulative.analysis.evidence import analyse_cells
from stimulative.cli import main as cli
from stimulative.studies.grid import design_points, load_grid
from stimulative.studies.launchers import Launch, parse_minutes
from stimulative.studies.sweep_plan import restrict

GRID = """
model: resnet32
base: {epochs: 30, train_fraction: 0.1}
factors:
  kl_weight: [1.0, 0.5, 2.0]
  epochs: [30, 100]
  lr: [0.05, 0.1]
baselines:
  ct: {mode: ct}
  sd: {mode: stochastic-depth, drop_path_rate: 0.5}
seeds: [0, 1, 2]
"""


def _write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_mistake_is_listed_at_once_with_suggestions(tmp_path):
    bad = """
modle: resnet32
lr: 0.1
base: {epoch: 30, seed: 3, sampler: foo, batch_size: x}
factors: {drop_path_rate: [0.1, 0.2], mode: [st, ct], temperature: [], kl_weight: [1, 1]}
baselines: {ct: {mode: ct, epochs: 3}, sd: {mode: individual}, "a/b": {}}
design: half
"""
    with pytest.raises(ValueError) as e:
        load_grid(_write(tmp_path, bad))
    msg = str(e.value)
    assert "\n" not in msg  # one line: the command prints the first line of an error
    for part in (
        "unknown key 'modle' (did you mean 'model'?)",
        "unknown key 'lr' (a training option: put it under base:)",
        "base.epoch: unknown training option (did you mean 'epochs'?)",
        "base.seed: not in a grid",
        "base.sampler: unknown sampler 'foo'",
        "base.batch_size must be int, got 'x'",
        "factors.mode:",
        "factors.temperature must be a non-empty list",
        "factors.kl_weight: each level once",
        "factors.drop_path_rate acts only in stochastic-depth mode",
        "baselines.ct.epochs: a baseline keeps its group's conditions",
        "baselines.sd: mode 'individual'",
        "baselines.a/b: a name of letters",
        "unknown design 'half'",
    ):
        assert part in msg, part
    with pytest.raises(ValueError, match="exactly one with mode ct"):
        load_grid(_write(tmp_path, "baselines: {sd: {mode: stochastic-depth}}"))
    with pytest.raises(ValueError, match="cell 10pct-e30/st: --temperature must be positive"):
        load_grid(_write(tmp_path, "base: {train_fraction: 0.1, temperature: -1}"))
    with pytest.raises(ValueError, match="not valid YAML"):
        load_grid(_write(tmp_path, "base: {"))


def test_ofat_and_full_designs_make_groups_with_their_own_baselines(tmp_path):
    grid = load_grid(_write(tmp_path, GRID))
    ids = [c.id for c in grid.cells]
    assert ids == [
        "10pct,lr=0.05-e30/ct",
        "10pct,lr=0.05-e30/sd",
        "10pct,lr=0.05-e30/st,kl_weight=1",
        "10pct,lr=0.05-e30/st,kl_weight=0.5",
        "10pct,lr=0.05-e30/st,kl_weight=2",
        "10pct,lr=0.05-e100/ct",
        "10pct,lr=0.05-e100/sd",
        "10pct,lr=0.05-e100/st,kl_weight=1",
        "10pct,lr=0.1-e30/ct",
        "10pct,lr=0.1-e30/sd",
        "10pct,lr=0.1-e30/st,kl_weight=1",
    ]
    assert grid.seeds == (0, 1, 2) and grid.design == "ofat"
    by_id = {c.id: c for c in grid.cells}
    st = by_id["10pct,lr=0.1-e30/st,kl_weight=1"]
    cfg = st.config(4, "out")
    assert (cfg.model, cfg.lr, cfg.epochs, cfg.train_fraction, cfg.kl_weight, cfg.seed) == (
        "resnet32",
        0.1,
        30,
        0.1,
        1.0,
        4,
    )
    assert st.default and not by_id["10pct,lr=0.05-e30/st,kl_weight=0.5"].default
    assert by_id["10pct,lr=0.05-e100/sd"].config(0, "o").drop_path_rate == 0.5
    assert by_id["10pct,lr=0.05-e100/ct"].config(0, "o").epochs == 100  # baselines follow their group
    full = load_grid(_write(tmp_path, GRID), design="full")
    assert len(full.cells) == 2 * 2 * (3 + 2)  # (epochs x lr) groups x (3 ST + 2 baselines)
    assert design_points({"a": [1, 2], "b": [3, 4, 5]}, "ofat") == [
        {"a": 1, "b": 3},
        {"a": 2, "b": 3},
        {"a": 1, "b": 4},
        {"a": 1, "b": 5},
    ]
    assert [c.id for c in load_grid(_write(tmp_path, "seeds: [1, 2]")).cells] == ["full-e30/ct", "full-e30/st"]
    shared = load_grid(_write(tmp_path, GRID), shared={"model": "resnet20", "dataset": None})
    assert {c.config(0, "o").model for c in shared.cells} == {"resnet20"}  # the command line wins


def _results(full):
    by_bn = {bn: {"main": {"top1": full}, "subnets": {"mean": 50.0, "min": 40.0, "std": 3.0}} for bn in ("running",)}
    return {"by_bn": by_bn, "train_seconds": 1.0}


def test_grid_cells_are_paired_with_their_groups_ct_by_the_analysis(tmp_path):
    grid = load_grid(_write(tmp_path, GRID))
    cells = []
    for i, cell in enumerate(grid.cells):
        runs = [{"seed": s, "results": _results(80.0 + i + s * (i % 3)), "destruction": None} for s in (0, 1, 2)]
        cells.append({**cell.describe(), "runs": runs, "flops": {"total": 1e12}})
    ev = analyse_cells(cells)
    vs_ct = {(c["cell"], c["baseline"]) for c in ev["comparisons"] if c["kind"].endswith("vs CT")}
    expected = {(c.id, f"{c.group}/ct") for c in grid.cells if c.mode != "ct"}
    assert vs_ct == expected and len(expected) == 8
    vs_sd = {(c["cell"], c["baseline"]) for c in ev["comparisons"] if c["kind"] == "st vs SD default"}
    assert vs_sd == {(c.id, f"{c.group}/sd") for c in grid.cells if c.mode == "st"}
    pooled = {(p["kind"], p["split"]) for p in ev["pooled"] if p["metric"] == "full"}
    assert ("ST vs CT", "10pct,lr=0.05") in pooled  # the default ST pooled over its epochs budgets


def test_grid_command_line_errors(tmp_path, capsys):
    path = _write(tmp_path, GRID)
    assert cli(["sweep", "--grid", path, "--budget", "5", "--dry-run"]) == 2
    assert "a grid runs all its cells" in capsys.readouterr().err
    assert cli(["sweep", "--grid", path, "--seeds", "1", "--dry-run"]) == 2
    assert "at least 2 seeds" in capsys.readouterr().err
    assert cli(["sweep", "--grid", path, "--only", "*lr=0.1*/st*", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells, 6 runs" in out and "10pct,lr=0.1-e30/ct" in out and "lr=0.05" not in out
    assert cli(["sweep", "--grid", path, "--jobs", "2", "--dry-run"]) == 2
    assert "--launcher local" in capsys.readouterr().err
    assert cli(["sweep", "--grid", path, "--partition", "gpu", "--dry-run"]) == 2
    assert "apply to --launcher slurm" in capsys.readouterr().err
    assert cli(["sweep", "--dataset", "cifar10", "--budget", "5", "--dry-run"]) == 2
    assert "narrow the design with --only" in capsys.readouterr().err


def test_launch_options_and_time_limits():
    assert [parse_minutes(t) for t in ("90", "1:30", "1:30:00", "2-00:00", "0:00:30")] == [90, 90, 90, 2880, 1]
    for bad in ("soon", "1:xx", "0:00"):
        with pytest.raises(ValueError):
            parse_minutes(bad)
    with pytest.raises(ValueError, match="unknown launcher"):
        Launch(launcher="pbs").validate()
    with pytest.raises(ValueError, match="--threads must not be negative"):
        Launch(launcher="local", threads=-1).validate()
    assert Launch(launcher="slurm", partition="gpu", gpus_per_job=1).validate().partition == "gpu"


def test_only_restricts_grid_cells_with_their_ct(tmp_path):
    cells = list(load_grid(_write(tmp_path, GRID)).cells)
    assert [c.id for c in restrict(cells, ("*-e100/sd",))] == ["10pct,lr=0.05-e100/ct", "10pct,lr=0.05-e100/sd"]
    with pytest.raises(ValueError, match="cell ids look like 10pct,lr=0.05-e30/ct"):
        restrict(cells, ("nothing",))
