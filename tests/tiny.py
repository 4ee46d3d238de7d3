"""The smallest training runs the tests start from the command line, as flags: each test
module states what it changes from the common small run, not the whole list again."""

from __future__ import annotations

# a few seconds of CPU: 5 % of the digits' training split, 2 sub-networks evaluated
BASE = {"train_fraction": 0.05, "batch_size": 16, "eval_subnets": 2, "calib_images": 32, "progress": False}


def tiny_flags(**options) -> list[str]:
    """``stimulative train`` flags for :data:`BASE` updated with ``options`` (``name=value``;
    True or False for a switch: ``--name`` / ``--no-name``)."""
    flags: list[str] = []
    for name, value in {**BASE, **options}.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags
