"""Where a sweep's runs train: in this process one after the other (``sequential``), in a local
process pool (``local``), or as a SLURM job array through submitit (``slurm``; ``submitit-local``
runs the same submitit code on this machine, to try a SLURM sweep out). Every launcher runs the
same job function (:func:`stimulative.studies.sweep_job.run_job`) and calls back in this
process as each run ends, so they write the same run folders, the same ``sweep.jsonl`` and,
through the parent's analysis, the same ``evidence.json``.

Threads: N jobs on one machine share its cores, each job gets ``cores // N`` torch threads
(``OMP_NUM_THREADS`` set before torch loads in the job's process, and ``torch.set_num_threads``),
so N jobs never oversubscribe the cores; a SLURM job uses the cores of its allocation."""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from .sweep_job import SweepJob, run_job, set_job_threads

LAUNCHERS = ("sequential", "local", "slurm", "submitit-local")


@dataclass(frozen=True)
class Launch:
    """How to run a sweep's jobs (the ``stimulative sweep`` flags of the same names)."""

    launcher: str = "sequential"
    jobs: int = 0  # runs at once; 0: one per core (local), no limit (slurm)
    threads: int = 0  # torch threads per job; 0: cores // jobs (local), the allocation (slurm), as set (sequential)
    partition: str = ""
    gpus_per_job: int = 0
    cpus_per_job: int = 0
    time_minutes: int = 60  # a job's time limit (SLURM's --time; the local executor's timeout)
    slurm_options: tuple[tuple[str, str], ...] = ()  # any other sbatch option, e.g. (("account", "x"),)

    def validate(self) -> Launch:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.launcher!r}; choose from {', '.join(LAUNCHERS)}")
        for name in ("jobs", "threads", "gpus_per_job", "cpus_per_job"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.time_minutes <= 0:
            raise ValueError(f"--time must be positive, got {self.time_minutes} minutes")
        if self.launcher == "sequential" and self.jobs > 1:
            raise ValueError("--jobs N runs N at once: use it with --launcher local, slurm or submitit-local")
        slurm_only = self.partition or self.gpus_per_job or self.cpus_per_job or self.slurm_options
        if slurm_only and self.launcher != "slurm":
            raise ValueError("--partition, --gpus-per-job, --cpus-per-job and --slurm-option apply to --launcher slurm")
        return self


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_minutes(text: str) -> int:
    """A time limit as SLURM writes it: minutes, ``H:MM``, ``H:MM:SS`` or ``D-HH:MM[:SS]``."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r}: give minutes (90), H:MM (1:30), H:MM:SS or D-HH:MM")
    days, first, second, third = (int(g) if g else None for g in m.groups())
    if second is None and days is None:
        return first  # plain minutes
    hours, minutes, seconds = first, second or 0, third or 0
    total = (days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    if total <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return total


def launch(jobs: list[SweepJob], how: Launch, on_done: Callable[[dict], None]) -> None:
    """Run ``jobs`` as ``how`` says, calling ``on_done(report)`` in this process as each ends."""
    how.validate()
    if not jobs:
        return
    run = {"sequential": _sequential, "local": _local_pool, "slurm": _submitit, "submitit-local": _submitit}
    run[how.launcher](jobs, how, on_done)


def _sequential(jobs: list[SweepJob], how: Launch, on_done: Callable[[dict], None]) -> None:
    threads = how.threads or -1  # -1: the threads this process already has (`--threads`)
    for job in jobs:
        on_done(run_job(dataclasses.replace(job, threads=threads)))


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """``OMP_NUM_THREADS`` (and MKL's) for the processes started in the block: read when torch
    loads there, before any code of ours runs."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    if threads > 0:
        os.environ.update({n: str(threads) for n in names})
    try:
        yield
    finally:
        for n, v in saved.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def _local_pool(jobs: list[SweepJob], how: Launch, on_done: Callable[[dict], None]) -> None:
    n = how.jobs or usable_cores()
    threads = how.threads or max(1, usable_cores() // n)
    jobs = [dataclasses.replace(j, threads=threads) for j in jobs]
    # spawn, not fork: a forked child would inherit this process's torch thread pool and locks
    context = multiprocessing.get_context("spawn")
    with _thread_env(threads):
        pool = ProcessPoolExecutor(n, mp_context=context, initializer=set_job_threads, initargs=(threads,))
        try:
            futures = [pool.submit(run_job, j) for j in jobs]
            for future in as_completed(futures):
                on_done(future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def _submitit_parameters(how: Launch, cluster: str) -> dict:
    params: dict = {"timeout_min": how.time_minutes, "name": "stimulative-sweep"}
    if cluster == "slurm":
        params.update(
            slurm_array_parallelism=how.jobs or None,
            slurm_partition=how.partition or None,
            gpus_per_node=how.gpus_per_job or None,
            cpus_per_task=how.cpus_per_job or None,
        )
        params.update({f"slurm_{k}": v for k, v in how.slurm_options})
    return {k: v for k, v in params.items() if v is not None}


class RequeuableRun:
    """:func:`run_job` as submitit runs it: a run that SLURM preempts or stops at its time limit
    is requeued (submitit calls ``checkpoint`` on SLURM's warning signal) and resumes from its
    last checkpoint; its claim, left by the stopped process, is recognised as its own."""

    def __call__(self, job: SweepJob) -> dict:
        return run_job(job)

    def checkpoint(self, job: SweepJob):
        import submitit

        return submitit.helpers.DelayedSubmission(self, job)


def make_executor(how: Launch, folder: str):
    """A submitit executor for ``slurm`` or ``submitit-local`` with the launch's parameters."""
    try:
        import submitit
    except ImportError:
        raise RuntimeError(f"--launcher {how.launcher} needs submitit: pip install 'stimulative[slurm]'") from None
    cluster = "slurm" if how.launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    try:
        executor.update_parameters(**_submitit_parameters(how, cluster))
    except (NameError, AssertionError) as e:  # submitit's way of rejecting a parameter
        raise ValueError(f"--slurm-option: {str(e).splitlines()[0]}") from None
    return executor


def _submitit(jobs: list[SweepJob], how: Launch, on_done: Callable[[dict], None]) -> None:
    import submitit

    executor = make_executor(how, os.path.join(jobs[0].sweep_dir, "submitit"))
    if how.launcher == "slurm":
        threads, size, poll = how.threads or how.cpus_per_job, len(jobs), 30.0
    else:  # the local executor starts a whole array at once: arrays of N keep it to N at a time
        size = how.jobs or usable_cores()
        threads, poll = how.threads or max(1, usable_cores() // size), 0.5
    jobs = [dataclasses.replace(j, threads=threads) for j in jobs]
    with _thread_env(threads):
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            handles = executor.map_array(RequeuableRun(), batch)
            job_of = {h.job_id: j for h, j in zip(handles, batch)}
            for handle in submitit.helpers.as_completed(handles, poll_frequency=poll):
                on_done(_report(handle, job_of[handle.job_id]))


def _report(handle, job: SweepJob) -> dict:
    """The job's own report, or a failure naming its log (killed, timed out, not started)."""
    try:
        return handle.result()
    except Exception as e:  # noqa: BLE001 - submitit raises its own errors for jobs that died
        return {
            "cell": job.cell.id,
            "seed": job.seed,
            "status": "failed",
            "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (log: {handle.paths.stderr})",
            "seconds": 0.0,
        }
