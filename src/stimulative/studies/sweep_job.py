"""One job of a sweep: one (cell, seed) run, claimed, trained (or resumed, or read back), and
logged once in ``SWEEP/sweep.jsonl``. The same function runs in this process, in a local
process pool and in a SLURM job (through submitit), so every launcher writes the same run
folders and the same records."""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime.files import append_record, read_records
from ..tools.destruction import cached_destruction
from ..training.config import TrainConfig
from .claims_lock import claimed, sweep_lock
from .runs import run_or_resume

LOG = "sweep.jsonl"
# what a job reports: trained here, found finished, held by another launcher, failed
STATUSES = ("trained", "finished before", "held elsewhere", "failed")


def run_dir(sweep_dir: str, cell: Any, seed: int) -> str:
    return os.path.join(sweep_dir, "runs", cell.group, cell.name, f"s{seed}")


def run_key(cell: Any, seed: int) -> str:
    return f"{cell.id}/s{seed}"


@dataclass(frozen=True)
class SweepJob:
    sweep_dir: str
    cell: Any  # a built-in Cell or a GridCell: id, group, name, mode, label, core
    seed: int
    config: TrainConfig  # resolved, its out the run folder
    threads: int = -1  # torch threads in the job's process; 0: every core it may use; -1: left as they are

    def is_done(self) -> bool:
        """Finished, with its destruction analysis if it gets one."""
        files = ["results.json"] + (["destruction.json"] if self.cell.core else [])
        return all(os.path.exists(os.path.join(self.config.out, f)) for f in files)


def logged_runs(path: str) -> set[tuple[str, int]]:
    done = set()
    for r in read_records(path):
        try:
            done.add((r["cell"], int(r["seed"])))
        except (KeyError, TypeError, ValueError):
            continue
    return done


def log_run(sweep_dir: str, cell: Any, seed: int, results: dict, wall_seconds: float | None) -> bool:
    """Append the run's headline numbers to ``sweep.jsonl`` unless it is there already (under
    the folder lock, so two launchers never both append it). Whether it appended."""
    record = {
        "cell": cell.id,
        "seed": seed,
        "group": cell.group,
        "mode": cell.mode,
        "label": cell.label,
        "run_dir": os.path.relpath(run_dir(sweep_dir, cell, seed), sweep_dir),
        "train_seconds": results["train_seconds"],
        "wall_seconds": wall_seconds,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "by": f"{socket.gethostname()}:{os.getpid()}",  # the process that logged it: who trained what
    }
    for bn, r in results["by_bn"].items():
        s = r["subnets"]
        record[bn] = {"full_top1": r["main"]["top1"], "sub_mean": s["mean"], "sub_worst": s["min"], "sub_std": s["std"]}
    path = os.path.join(sweep_dir, LOG)
    with sweep_lock(sweep_dir):
        if (cell.id, seed) in logged_runs(path):
            return False
        _end_partial_line(path)
        append_record(path, record)
    return True


def _end_partial_line(path: str) -> None:
    """A crash mid-append leaves a line without its newline: end it, so the next record stays
    a line of its own (readers skip the broken one)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
    if last != b"\n":
        with open(path, "ab") as fh:
            fh.write(b"\n")


def set_job_threads(threads: int) -> int:
    """Torch threads of this process: ``threads``, or every core it may use (a SLURM
    allocation's, a local pool's share is passed explicitly)."""
    n = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def run_job(job: SweepJob) -> dict:
    """Claim, train (or resume, or read back), analyse destruction for a core cell, log. Never
    raises: a failure is reported as a status (its traceback goes to this process's stderr,
    the job's log under a launcher)."""
    report = {"cell": job.cell.id, "seed": job.seed, "host": socket.gethostname(), "pid": os.getpid()}
    started = time.perf_counter()
    try:
        if job.threads >= 0:
            set_job_threads(job.threads)
        with claimed(job.sweep_dir, run_key(job.cell, job.seed)) as mine:
            if not mine:
                return {**report, "status": "held elsewhere", "seconds": 0.0}
            fresh = not os.path.exists(os.path.join(job.config.out, "results.json"))
            results = run_or_resume(job.config, quiet=True)  # the sweep's bar reports progress, not each run
            if job.cell.core:
                cached_destruction(job.config.out, job.config.device)
            seconds = time.perf_counter() - started
            log_run(job.sweep_dir, job.cell, job.seed, results, seconds if fresh else None)
        return {**report, "status": "trained" if fresh else "finished before", "seconds": seconds}
    except Exception as e:  # noqa: BLE001 - one failed run must not stop the others; the parent reports it
        traceback.print_exc()
        msg = str(e).splitlines()[0] if str(e) else ""
        return {**report, "status": "failed", "error": f"{type(e).__name__}: {msg}", "seconds": 0.0}
