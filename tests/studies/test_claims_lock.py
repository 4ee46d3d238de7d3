"""Claims and the folder lock: a run held by a live launcher is skipped, a dead launcher's claim
is taken over, and two sweeps started at once on one folder train each run once."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import stimulative
from stimulative.studies import claims_lock as cl
from stimulative.studies.sweep_job import _end_partial_line

from .test_sweep_launchers import TINY_GRID


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_live_claim_is_held_and_a_dead_ones_is_taken_over(tmp_path):
    d = str(tmp_path)
    key = "10pct-e1/ct/s0"
    with cl.claimed(d, key) as mine:
        assert mine and cl.live_claims(d) == [key]
        with cl.claimed(d, key) as again:  # this live process holds it
            assert not again
        assert os.path.exists(cl.claim_path(d, key))
    assert not os.path.exists(cl.claim_path(d, key)) and cl.live_claims(d) == []
    path = cl.claim_path(d, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:  # left by a launcher that died on this host
        json.dump({"pid": _dead_pid(), "host": socket.gethostname(), "token": "x"}, fh)
    assert cl.is_stale(path)
    with cl.claimed(d, key) as mine:
        assert mine
    with open(path, "w") as fh:  # another host's: alive while it beats, stale once it stops
        json.dump({"pid": 1, "host": "elsewhere", "token": "y"}, fh)
    with cl.claimed(d, key) as mine:
        assert not mine
    old = time.time() - cl.STALE_SECONDS - 1
    os.utime(path, (old, old))
    with cl.claimed(d, key) as mine:
        assert mine
    assert not os.path.exists(path)


def test_a_requeued_slurm_job_takes_its_own_claim_back(tmp_path, monkeypatch):
    d = str(tmp_path)
    key = "g/c/s0"
    path = cl.claim_path(d, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:  # written on another node by this array task before SLURM requeued it
        json.dump({"pid": 1, "host": "node7", "job": "812_3", "token": "old"}, fh)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "812")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")  # another task of the array: not its claim
    with cl.claimed(d, key) as mine:
        assert not mine
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with cl.claimed(d, key) as mine:
        assert mine and json.load(open(path))["job"] == "812_3"


def test_a_claim_taken_over_is_not_released_by_its_old_holder(tmp_path):
    d = str(tmp_path)
    key = "g/c/s1"
    token = cl._take(d, key)
    with open(cl.claim_path(d, key), "w") as fh:  # taken over meanwhile
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "token": "theirs"}, fh)
    cl._release(d, key, token)
    assert json.load(open(cl.claim_path(d, key)))["token"] == "theirs"


def test_the_lock_is_reentrant_and_a_partial_line_is_ended(tmp_path):
    d = str(tmp_path)
    with cl.sweep_lock(d), cl.sweep_lock(d):
        assert len(cl._held) == 1
    assert cl._held == {}
    log = tmp_path / "sweep.jsonl"
    log.write_text('{"a": 1}\n{"cell": "x", "se')
    _end_partial_line(str(log))
    assert log.read_text().endswith('"se\n')
    _end_partial_line(str(log))
    assert log.read_text().count("\n") == 2


def test_two_sweeps_at_once_on_one_folder_train_each_run_once(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID)
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.path.dirname(os.path.dirname(stimulative.__file__))}
    cmd = [sys.executable, "-m", "stimulative", "sweep", "--grid", str(grid), "--out", str(out), "--no-progress"]
    procs = [subprocess.Popen(cmd + ["--threads", "1"], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [int(m.group(1)) if (m := re.search(r"(\d+) trained", o)) else 0 for o in outputs]
    assert sum(trained) == 4, outputs  # 2 cells x 2 seeds, each trained by one of the two
    lines = (out / "sweep.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses
    assert sorted((r["cell"], r["seed"]) for r in records) == [
        ("10pct-e1/ct", 0),
        ("10pct-e1/ct", 1),
        ("10pct-e1/st", 0),
        ("10pct-e1/st", 1),
    ]
    for r in records:  # one epoch's metrics: no run was trained twice into its folder
        assert len((out / r["run_dir"] / "metrics.jsonl").read_text().splitlines()) == 1
    assert cl.live_claims(str(out)) == []
    ev = json.loads((out / "evidence.json").read_text())
    assert {c: ev["cells"][c]["n"] for c in ev["cells"]} == {"10pct-e1/ct": 2, "10pct-e1/st": 2}
