"""The trainer's checkpoints, made durable off the training thread.

A checkpoint is serialised and written on the training thread (so it holds this step's
state, and a full disk is reported at once); making its files durable (fsync) and swapping it
in wait on the disk, not on the processor, so a worker thread does that while training or
validation goes on: on a network file system an fsync can take seconds. The next checkpoint,
anything that reads the folder (:meth:`CheckpointWriter.wait`) and the end of training wait
for it; an error of the worker is raised there. The worker is not a daemon: a run stopped
by an exception still completes the swap before the process exits, and a run killed
mid-swap leaves the previous checkpoint (see :mod:`stimulative.training.checkpoint`)."""

from __future__ import annotations

import os
import threading
from typing import Any

from torch import nn

from .checkpoint import WEIGHTS_FILE, commit_checkpoint, serialize, stage_checkpoint


class _Commit(threading.Thread):
    def __init__(self, folder: str, step: int | None) -> None:
        super().__init__(name="stimulative-checkpoint")
        self.folder, self.step = folder, step
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            commit_checkpoint(self.folder, self.step)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread, which raises it
            self.error = e


class CheckpointWriter:
    """Writes the checkpoints of one folder; at most one commit is in flight."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._pending: _Commit | None = None

    def save(self, model: nn.Module, state: dict[str, Any], meta: dict[str, Any]) -> str:
        """Serialise and stage a checkpoint, then commit it on a worker thread; returns the
        path its weights file will have."""
        files = serialize(model, state, meta)
        self.wait()  # the previous commit is done with <folder>.tmp
        stage_checkpoint(self.folder, files, meta.get("step"))
        self._pending = _Commit(self.folder, meta.get("step"))
        self._pending.start()
        return os.path.join(self.folder, WEIGHTS_FILE)

    def wait(self) -> None:
        """Return once the last checkpoint is in place; raise its commit's error if it failed."""
        pending = self._pending
        if pending is None:
            return
        pending.join()
        self._pending = None  # only once joined: an interrupted wait is waited for again
        if pending.error is not None:
            raise pending.error
