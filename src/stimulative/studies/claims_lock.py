"""Several launchers on one sweep folder (two terminals, a local pool beside a SLURM array):
each run is *claimed* before it trains, so no run trains twice, and the sweep's shared files
(``sweep.jsonl``, ``evidence.json``, ...) are written under one folder lock, so no write is
lost or interleaved.

A claim is a file ``SWEEP/claims/<group>/<cell>/s<seed>.claim`` created atomically
(``O_CREAT | O_EXCL``) holding the holder's pid and host; the holder touches it every
:data:`HEARTBEAT_SECONDS` while it trains. A claim is *stale*, and taken over, when its holder
is gone: on the same host its pid is dead; on any host it has not been touched for
:data:`STALE_SECONDS` (a SLURM job killed at its time limit cannot remove its claim); or it is
the claim of the same SLURM job before SLURM requeued it (preempted, or at its time limit). The folder
lock is a POSIX record lock (``fcntl.lockf``, which NFS also honours) on ``SWEEP/.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows: claims alone (O_EXCL) still keep runs apart
    fcntl = None

HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 900.0  # 15 heartbeats missed: the holder is gone, whatever its host's clock says
LOCK_FILE = ".lock"
_held: dict[str, int] = {}  # lock file -> depth: POSIX locks are per process, so nesting must not re-lock


@contextlib.contextmanager
def sweep_lock(sweep_dir: str) -> Iterator[None]:
    """Hold the sweep folder's lock (blocking); re-entrant within a process."""
    path = os.path.abspath(os.path.join(sweep_dir, LOCK_FILE))
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        _held[path] = 1
        yield
    finally:
        _held.pop(path, None)
        os.close(fd)  # closing the descriptor releases the lock


def claim_path(sweep_dir: str, key: str) -> str:
    return os.path.join(sweep_dir, "claims", key + ".claim")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _slurm_job() -> str | None:
    """This SLURM job (array task), which keeps its id when SLURM requeues it."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID")


def is_stale(path: str) -> bool:
    """Whether the claim at ``path`` was left by a holder that is gone (module docstring), or
    by this very SLURM job before it was requeued."""
    try:
        age = time.time() - os.path.getmtime(path)
    except OSError:
        return True  # removed meanwhile
    if age > STALE_SECONDS:
        return True
    holder = _holder(path)
    if holder is None:
        return False  # being written: its holder is alive
    if holder.get("job") and holder["job"] == _slurm_job():
        return True
    return holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", 0)))


def _take(sweep_dir: str, key: str) -> str | None:
    """Create the claim; its token, or None if a live holder has it."""
    path = claim_path(sweep_dir, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "job": _slurm_job(),
        "token": uuid.uuid4().hex,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with sweep_lock(sweep_dir):  # under the lock, two launchers never both take over one stale claim
        if os.path.exists(path):
            if not is_stale(path):
                return None
            os.remove(path)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # without fcntl, another launcher was faster
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(holder, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return holder["token"]


def _release(sweep_dir: str, key: str, token: str) -> None:
    path = claim_path(sweep_dir, key)
    with sweep_lock(sweep_dir):
        holder = _holder(path)
        if holder is not None and holder.get("token") == token:  # not a claim taken over from us
            os.remove(path)


def _heartbeat(path: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        with contextlib.suppress(OSError):
            os.utime(path)


@contextlib.contextmanager
def claimed(sweep_dir: str, key: str) -> Iterator[bool]:
    """Hold the run ``key`` (``<group>/<cell>/s<seed>``) while the block runs: yields True, or
    False without holding anything when another live launcher holds it."""
    token = _take(sweep_dir, key)
    if token is None:
        yield False
        return
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(claim_path(sweep_dir, key), stop), daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join()
        _release(sweep_dir, key, token)


def live_claims(sweep_dir: str) -> list[str]:
    """The runs held right now by live launchers (``<group>/<cell>/s<seed>``)."""
    root = os.path.join(sweep_dir, "claims")
    out = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".claim") and not is_stale(path):
                out.append(os.path.relpath(path, root)[: -len(".claim")].replace(os.sep, "/"))
    return sorted(out)
