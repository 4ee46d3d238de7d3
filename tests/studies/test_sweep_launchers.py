"""Every launcher writes the same analysis: a tiny grid run in this process, in a local pool of
2 and through submitit's local executor gives the same statistics; a sweep reports what has
finished while it runs; a grid sweeps another model."""

import dataclasses
import json
import os

import pytest

from stimulative.cli import main as cli
from stimulative.studies import launchers
from stimulative.studies import sweep as sw
from stimulative.studies.launchers import Launch

TINY_GRID = """
dataset: digits
model: resnet20
base: {epochs: 1, train_fraction: 0.1, eval_subnets: 4, calib_images: 64, eval_bn: running, batch_size: 32}
seeds: [0, 1]
"""
RUNS = [("10pct-e1/ct", 0), ("10pct-e1/ct", 1), ("10pct-e1/st", 0), ("10pct-e1/st", 1)]


def statistics(ev: dict) -> dict:
    """What the analysis concludes, without timing (training seconds, progress, the plan)."""
    keep = ("metrics", "per_seed", "flops", "seeds", "n", "label", "group", "mode", "default", "model", "dataset")
    return {
        "cells": {k: {f: c[f] for f in keep} for k, c in ev["cells"].items()},
        "comparisons": ev["comparisons"],
        "pooled": ev["pooled"],
    }


def _records(out) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(out, "sweep.jsonl"))]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.yaml"
    path.write_text(TINY_GRID)
    return str(path)


@pytest.fixture(scope="module")
def sequential(grid, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sequential") / "sweep")
    ev = sw.sweep(out, grid=grid, progress=False, how=Launch(threads=1))
    return out, ev


def test_sequential_grid_sweep(sequential):
    out, ev = sequential
    assert sorted((r["cell"], r["seed"]) for r in _records(out)) == RUNS
    assert {r["by"].split(":")[1] for r in _records(out)} == {str(os.getpid())}  # trained in this process
    assert ev["runs_this_invocation"]["counts"] == {"trained": 4, "finished before": 0}
    comps = [c for c in ev["comparisons"] if c["metric"] == "full"]
    assert [(c["cell"], c["baseline"], c["seeds"]) for c in comps] == [("10pct-e1/st", "10pct-e1/ct", [0, 1])]
    assert ev["progress"]["planned_runs"] == ev["progress"]["planned_runs_finished"] == 4
    assert os.path.exists(os.path.join(out, "runs", "10pct-e1", "st", "cell.json"))


@pytest.mark.parametrize("launcher", ["local", "submitit-local"])
def test_other_launchers_write_the_same_analysis(launcher, grid, sequential, tmp_path):
    out = str(tmp_path / "sweep")
    argv = ["sweep", "--grid", grid, "--out", out, "--launcher", launcher, "--jobs", "2", "--threads", "1"]
    assert cli(argv + ["--time", "10", "--no-progress"]) == 0
    ev = json.load(open(os.path.join(out, "evidence.json")))
    assert statistics(ev) == statistics(sequential[1])
    records = _records(out)
    assert sorted((r["cell"], r["seed"]) for r in records) == RUNS
    pids = {r["by"].split(":")[1] for r in records}
    assert str(os.getpid()) not in pids  # each run trained in a job's process
    assert len(pids) <= 2 if launcher == "local" else len(pids) == 4  # a pool of 2; a process per submitit job
    if launcher == "submitit-local":
        assert any(name.endswith("_log.err") for name in os.listdir(os.path.join(out, "submitit")))


def test_report_works_while_the_sweep_runs(grid, tmp_path, monkeypatch):
    out = str(tmp_path / "sweep")
    seen = []
    run_job = launchers.run_job

    def report_then_run(job):  # the report a user asks for between two runs
        assert cli(["report", out, "--out", str(tmp_path / f"report{len(seen)}")]) == 0
        seen.append((tmp_path / f"report{len(seen)}" / "report.md").read_text())
        return run_job(job)

    monkeypatch.setattr(launchers, "run_job", report_then_run)
    sw.sweep(out, grid=grid, progress=False, how=Launch(threads=1))
    assert len(seen) == 4
    assert "nothing to compare" in seen[0] and "| 10pct-e1 | CT |" not in seen[0]  # started, nothing finished
    assert "| 10pct-e1 | CT | 1 |" in seen[1]  # one run finished
    assert "| 10pct-e1 | CT | 2 |" in seen[3] and "| 10pct-e1 | ST | 1 |" in seen[3]


def test_a_grid_sweeps_another_model_and_keeps_its_folder_consistent(grid, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    grid32 = tmp_path / "grid32.yaml"
    grid32.write_text(TINY_GRID + "factors: {kl_weight: [0.5]}\n")
    argv = ["sweep", "--grid", str(grid32), "--out", out, "--threads", "1", "--no-progress"]
    assert cli(argv + ["--model", "resnet32"]) == 0  # the command line overrides the grid's model
    ev = json.load(open(os.path.join(out, "evidence.json")))
    assert set(ev["cells"]) == {"10pct-e1/ct", "10pct-e1/st,kl_weight=0.5"}
    assert {c["model"] for c in ev["cells"].values()} == {"resnet32"}
    results = json.load(open(os.path.join(out, "runs", "10pct-e1", "st,kl_weight=0.5", "s1", "results.json")))
    assert results["config"]["model"] == "resnet32" and results["config"]["kl_weight"] == 0.5
    assert [c["kind"] for c in ev["comparisons"] if c["metric"] == "full"] == ["st vs CT"]
    capsys.readouterr()
    assert cli(argv) == 2  # resnet20 now: the finished resnet32 runs must not be mixed in
    assert "model 'resnet32' -> 'resnet20'" in capsys.readouterr().err
    for cell in ("ct", "st,kl_weight=0.5"):  # a folder from before cell.json: its runs' own configuration
        os.remove(os.path.join(out, "runs", "10pct-e1", cell, "cell.json"))
    assert cli(argv) == 2
    assert "model 'resnet32' -> 'resnet20'" in capsys.readouterr().err


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks that it runs on a SLURM cluster
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    how = Launch(
        launcher="slurm",
        jobs=3,
        partition="gpu",
        gpus_per_job=1,
        cpus_per_job=4,
        time_minutes=90,
        slurm_options=(("account", "proj"),),
    )
    executor = launchers.make_executor(how, str(tmp_path / "submitit"))
    script = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=4", "--time=90", "--account=proj"):
        assert f"#SBATCH {line}\n" in script, line
    assert executor._executor.parameters["array_parallelism"] == 3
    with pytest.raises(ValueError, match="Unknown argument 'acount'"):
        launchers.make_executor(dataclasses.replace(how, slurm_options=(("acount", "x"),)), str(tmp_path / "s"))
    run = launchers.RequeuableRun()  # preempted or timed out: requeued with the same run
    again = run.checkpoint("the job")
    assert again.function is run and again.args == ("the job",)
