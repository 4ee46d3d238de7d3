"""Fault injection for the trust tests: run ``stimulative train`` in a child process that
SIGKILLs itself at a chosen point, then resume it and compare with an uninterrupted run.

Kill points (``where``, ``n``):

* ``step``: right after the n-th optimizer step of this process (mid-epoch, between
  checkpoints, before a checkpoint, ...);
* ``write``: in the middle of the n-th checkpoint file written (half of its bytes on disk);
* ``swap``: between the two renames of the n-th checkpoint swap (old moved away, new not
  yet in place);
* ``eval``: at the n-th module call made without gradients, i.e. inside an evaluation
  (the per-epoch quick evaluation, BN recalibration, the final sub-network evaluation);
  ``count`` prints how many such calls a run makes;
* ``metrics``: in the middle of the n-th metrics.jsonl record (half a line written).
* ``time``: from outside, ``n`` milliseconds after start (a real preemption).

Run as a script: ``python tests/trust_harness.py WHERE N -- <stimulative train args>``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

PYTHON = sys.executable
HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SRC = os.path.join(ROOT, "src")

# tiny and fast: 8 steps per epoch on 10 % of the digits, two evaluated sub-networks
TINY = [  # steps counted below assume the whole training split (no validation split)
    "--val-fraction",
    "0",
    "--model",
    "resnet20",
    "--dataset",
    "digits",
    "--train-fraction",
    "0.1",
    "--batch-size",
    "16",
    "--eval-subnets",
    "2",
    "--calib-images",
    "32",
    "--eval-bn",
    "all",
    "--eval-batch-size",
    "256",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    "--log-every",
    "5",
]


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(where: str, n: int) -> None:
    """Patch this process so that it SIGKILLs itself at kill point (where, n)."""
    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == n

    if where == "step":
        orig_step = torch.optim.SGD.step

        def step(self, *a, **kw):
            out = orig_step(self, *a, **kw)
            if hit():
                _die()
            return out

        torch.optim.SGD.step = step
    elif where == "write":
        from stimulative.training import checkpoint

        orig_write = checkpoint._write_file

        def write(path, data):
            if hit():
                with open(path, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                _die()
            orig_write(path, data)

        checkpoint._write_file = write
    elif where == "swap":
        from stimulative.training import checkpoint

        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)

            @staticmethod
            def replace(src, dst):
                os.replace(src, dst)
                if dst.endswith(".old") and hit():
                    _die()

        checkpoint.os = _Os()
    elif where in ("eval", "count"):
        # every module call made without gradients is evaluation work (the per-epoch quick
        # evaluation, BN recalibration, the final sub-network evaluation)
        from torch.nn.modules.module import register_module_forward_pre_hook

        calls = [0, 0]

        def hook(module, args):
            calls[torch.is_grad_enabled()] += 1
            if where == "eval" and not torch.is_grad_enabled() and hit():
                _die()

        register_module_forward_pre_hook(hook)
        if where == "count":
            import atexit

            atexit.register(lambda: print(f"module calls: {calls[0]} without grad, {calls[1]} with", file=sys.stderr))
    elif where == "metrics":
        import builtins

        orig_open = builtins.open

        class HalfWriter:
            def __init__(self, fh):
                self.fh = fh

            def __getattr__(self, name):  # flush, fileno: the real file's
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def write(self, text):
                if hit():
                    self.fh.write(text[: len(text) // 2])
                    self.fh.flush()
                    _die()
                return self.fh.write(text)

        def open_(file, mode="r", *a, **kw):
            fh = orig_open(file, mode, *a, **kw)
            if str(file).endswith("metrics.jsonl") and "a" in mode:
                return HalfWriter(fh)
            return fh

        builtins.open = open_
    else:
        raise ValueError(f"unknown kill point {where!r}")


def run(args: list[str], kill: tuple[str, int] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``stimulative train ARGS`` in a child process, killed at ``kill`` if given."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kill is None:
        cmd = [PYTHON, "-m", "stimulative", "train", *args]
    elif kill[0] == "time":
        proc = subprocess.Popen(
            [PYTHON, "-m", "stimulative", "train", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=kill[1] / 1000)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    else:
        cmd = [PYTHON, HERE, kill[0], str(kill[1]), "--", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def run_until_done(out: str, args: list[str], kills: list[tuple[str, int]], max_resumes: int = 10) -> list[int]:
    """Start the run, kill it at each kill point in turn (every later one in a resumed
    process), then resume until it finishes. Returns the return codes seen."""
    codes = []
    resume: list[str] = []
    for k in kills:
        p = run([*args, "--out", out, *resume], kill=k)
        codes.append(p.returncode)
        if p.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"kill point {k}: exit {p.returncode}\n{p.stderr[-3000:]}")
        if os.path.exists(os.path.join(out, "config.yaml")):
            resume = ["--resume"]
    for _ in range(max_resumes):
        if os.path.exists(os.path.join(out, "results.json")) and codes and codes[-1] == 0:
            return codes
        p = run([*args, "--out", out, *resume])
        codes.append(p.returncode)
        if p.returncode != 0:
            raise AssertionError(f"resume failed: exit {p.returncode}\n{p.stderr[-3000:]}")
        resume = ["--resume"]
    return codes


def final_state(out: str) -> dict:
    """What must match bit for bit: the final weights and the optimizer state."""
    folder = os.path.join(out, "checkpoint")
    weights = load_file(os.path.join(folder, "model.safetensors"))
    state = torch.load(os.path.join(folder, "state.pt"), weights_only=True)
    return {"weights": weights, "optimizer": state["optimizer"]["state"]}


def same_state(a: dict, b: dict) -> list[str]:
    """Names of the tensors that differ (empty when bit-exact)."""
    diff = [k for k in a["weights"] if not torch.equal(a["weights"][k], b["weights"][k])]
    for pid, buf in a["optimizer"].items():
        for name, t in buf.items():
            if torch.is_tensor(t) and not torch.equal(t, b["optimizer"][pid][name]):
                diff.append(f"optimizer[{pid}].{name}")
    return diff


def metrics(out: str, drop: tuple[str, ...] = ("train_seconds",)) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in fh]


def results(out: str) -> dict:
    with open(os.path.join(out, "results.json")) as fh:
        r = json.load(fh)
    return {k: v for k, v in r.items() if k not in ("train_seconds", "config")}


# --- the tests ------------------------------------------------------------------------

import random  # noqa: E402

import pytest  # noqa: E402

# 2 epochs of 8 steps, a checkpoint every 3 steps (3, 6, 8, 11, 14, 16), shifted digits
ARGS = [*TINY, "--epochs", "2", "--checkpoint-every", "3", "--augment", "--seed", "1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("resume") / "reference")
    assert run_until_done(out, ARGS, []) == [0]
    return out


def assert_same_run(reference: str, out: str) -> None:
    """Bit-exact final weights and optimizer state, the same metrics.jsonl (one record per
    epoch, no duplicates) and the same results, except wall-clock times."""
    assert same_state(final_state(reference), final_state(out)) == []
    assert metrics(out) == metrics(reference)
    assert results(out) == results(reference)
    assert sorted(os.listdir(os.path.join(out))) == sorted(os.listdir(reference))


# each chain kills the run at its first point, the resumed run at the second, and so on
CHAINS = {
    # before any checkpoint; half-way through writing the first one; the first quick evaluation
    "step-write-eval": [("step", 3), ("write", 2), ("eval", 1)],
    # between the renames of a checkpoint swap; half a metrics line; the final evaluation
    "swap-metrics-final_eval": [("swap", 2), ("metrics", 1), ("eval", 476)],
}


@pytest.mark.parametrize("chain", list(CHAINS))
def test_killed_runs_resume_bit_exactly(reference, tmp_path, chain):
    out = str(tmp_path / "run")
    codes = run_until_done(out, ARGS, CHAINS[chain])
    assert codes[: len(CHAINS[chain])] == [-signal.SIGKILL] * len(CHAINS[chain]), codes
    assert codes[-1] == 0
    assert_same_run(reference, out)


def test_mid_epoch_resume_in_process(tmp_path):
    """Without subprocesses: stop after step 5 (a checkpoint at step 4), resume with only
    ``--out RUN --resume``, compare with an uninterrupted run (also checks the per-batch
    augmentation seeds)."""
    from stimulative.cli import main

    args = [
        *TINY,
        "--train-fraction",
        "0.05",
        "--epochs",
        "2",
        "--checkpoint-every",
        "2",
        "--augment",
        "--eval-bn",
        "running",
    ]
    assert main(["train", *args, "--out", str(tmp_path / "ref")]) == 0

    class Stop(Exception):
        pass

    orig, count = torch.optim.SGD.step, [0]

    def step(self, *a, **kw):
        out = orig(self, *a, **kw)
        count[0] += 1
        if count[0] == 5:
            raise KeyboardInterrupt
        return out

    torch.optim.SGD.step = step
    try:
        assert main(["train", *args, "--out", str(tmp_path / "run")]) == 130
    finally:
        torch.optim.SGD.step = orig
    from stimulative.training import checkpoint

    assert checkpoint.load_meta(str(tmp_path / "run" / "checkpoint"))["step"] == 4
    # a bare resume: every option, runtime ones included, comes from the run folder
    assert main(["train", "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert_same_run(str(tmp_path / "ref"), str(tmp_path / "run"))


KILL_POINTS = (
    [("step", n) for n in range(1, 17)]
    + [("write", n) for n in (1, 3, 5, 9, 13, 17)]
    + [("swap", n) for n in (1, 2, 3, 4)]
    + [("eval", n) for n in (1, 60, 100, 150, 300, 500, 700)]
    + [("metrics", n) for n in (1, 2)]
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(int(os.environ.get("TRUST_KILLS", "12"))))
def test_random_kill_points(reference, tmp_path, seed):
    """Random kill points, one to three in a row, and a real preemption from outside at a
    random time (TRUST_KILLS=n sets how many runs)."""
    rng = random.Random(seed)
    chain = rng.sample(KILL_POINTS, rng.randint(1, 3))
    if seed % 3 == 0:
        chain.append(("time", rng.randint(3000, 12000)))
    out = str(tmp_path / "run")
    codes = run_until_done(out, ARGS, chain)
    print(f"kill chain {chain}: exit codes {codes}")
    assert_same_run(reference, out)


@pytest.mark.slow
def test_imagefolder_with_workers_resumes_bit_exactly(tmp_path):
    """DataLoader path: random crops and flips in 2 worker processes, killed mid-epoch."""
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            d = tmp_path / "imgs" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(12 if split == "train" else 3):
                Image.frombytes("RGB", (16, 16), random.Random(100 * c + i).randbytes(16 * 16 * 3)).save(d / f"{i}.png")
    args = [
        "--dataset",
        "imagefolder",
        "--data-root",
        str(tmp_path / "imgs"),
        "--image-size",
        "12",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--checkpoint-every",
        "2",
        "--eval-subnets",
        "2",
        "--calib-images",
        "8",
        "--eval-batch-size",
        "8",
        "--workers",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--eval-bn",
        "running",
    ]
    ref, out = str(tmp_path / "ref"), str(tmp_path / "run")
    run_until_done(ref, args, [])
    run_until_done(out, args, [("step", 3), ("step", 4)])
    assert_same_run(ref, out)


if __name__ == "__main__":
    where, n = sys.argv[1], int(sys.argv[2])
    assert sys.argv[3] == "--"
    sys.path.insert(0, SRC)
    install(where, n)
    from stimulative.cli import main

    sys.exit(main(["train", *sys.argv[4:]]))
