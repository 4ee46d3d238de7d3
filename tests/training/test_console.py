"""What the trainer tells the user: the run folder, one line per epoch, where a resume
starts, that a finished run is finished, and what an interrupted run left."""

import json
import re

import pytest
import torch

from stimulative.cli import main as cli

from ..tiny import tiny_flags

TINY = tiny_flags(eval_batch_size=256, device="cpu")


def _interrupt_at_optimizer_step(n: int):
    real, count = torch.optim.SGD.step, [0]

    def step(self, *a, **kw):
        count[0] += 1
        if count[0] == n:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    return step


def test_epoch_lines_and_the_run_folder_come_first(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", *TINY, "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"run folder: {out}"
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert all(
        re.search(r"loss \d+\.\d{4}  ce .* kl .* lr .* val top-1 \(full BN\) \d+\.\d\d  \d+\.\d s$", x) for x in lines
    )
    assert "2 epochs" in text


def test_resume_says_where_it_starts_and_a_finished_run_says_so(capsys, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    args = ["train", *TINY, "--epochs", "2", "--checkpoint-every", "2", "--out", out]
    with monkeypatch.context() as m:
        m.setattr(torch.optim.SGD, "step", _interrupt_at_optimizer_step(4))  # steps 1-3 done
        assert cli(args) == 130
    kept = re.search(
        rf"the checkpoint at step (\d+) is kept: continue with --out {re.escape(out)} --resume", capsys.readouterr().err
    )
    assert kept and int(kept.group(1)) in (2, 3)  # every 2 steps, and at the end of an epoch
    assert cli([*args, "--resume"]) == 0
    resumed = re.search(r"resuming from step (\d+) of (\d+) \(epoch \d, step \d of it\)", capsys.readouterr().out)
    assert resumed and resumed.group(1) == kept.group(1)
    assert cli([*args, "--resume"]) == 0
    text = capsys.readouterr().out
    assert f"is finished (all {resumed.group(2)} steps)" in text and "BN protocol" not in text  # not evaluated again


def test_interrupted_before_any_checkpoint(capsys, tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        m.setattr(torch.optim.SGD, "step", _interrupt_at_optimizer_step(1))
        assert cli(["train", *TINY, "--out", out]) == 130
    assert f"nothing to resume; start again with --out {out} --force" in capsys.readouterr().err
    assert cli(["train", *TINY, "--out", out, "--resume"]) == 0
    assert "starting from step 0" in capsys.readouterr().out


@pytest.mark.parametrize("progress", [True, False])
def test_tensorboard_absence_is_said_once(capsys, tmp_path, monkeypatch, progress):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    flags = [f for f in TINY if f != "--no-progress"] + ([] if progress else ["--no-progress"])
    assert cli(["train", *flags, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out.count("TensorBoard logs skipped") == 1


def test_val_every_validates_every_nth_epoch_and_the_last(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli(["train", *TINY, "--mode", "ct", "--epochs", "5", "--val-every", "2", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validated = [r["epoch"] for r in records if "val_top1_full_bn" in r]
    assert validated == [2, 4, 5]
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"]["epoch"] in validated
    assert cli(["train", *TINY, "--val-every", "0", "--out", str(tmp_path / "bad")]) != 0
