"""Bad input through the command line: one line of error, a non-zero exit, and nothing that
was already written is overwritten or lost. Also: a non-finite loss, a full disk during a
run, corrupt images in an image folder."""

import errno
import hashlib
import json
import os
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from stimulative.cli import main
from stimulative.training import checkpoint as ckpt

from ..tiny import tiny_flags

# steps counted below assume the whole training split (no validation split)
TINY = tiny_flags(val_fraction=0, epochs=1, eval_batch_size=256, workers=0, device="cpu", eval_bn="running")


def cli(args, capsys):
    """Run ``stimulative ARGS`` in this process: (exit code, stderr lines that report an error)."""
    try:
        code = main(args)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    return code, lines


def snapshot(folder):
    """Every file under ``folder`` with a hash of its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def expect_error(capsys, args, pattern, folder=None):
    """The command fails with exactly one error line matching ``pattern`` and leaves
    ``folder`` (if given) exactly as it was."""
    before = snapshot(folder) if folder else None
    code, lines = cli(args, capsys)
    assert code not in (0, None), f"{args} succeeded"
    assert len(lines) == 1, lines
    assert re.search(pattern, lines[0]), lines[0]
    if folder:
        assert snapshot(folder) == before
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run to protect."""
    out = str(tmp_path_factory.mktemp("trust") / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    return out


BAD_FLAGS = [
    (["--model", "resnet_nope"], r"unknown model 'resnet_nope'; choose from"),
    (["--dataset", "mnist"], r"unknown dataset 'mnist'; choose from digits"),
    (["--mode", "sst"], r"argument --mode: invalid choice: 'sst'"),
    (["--sampler", "greedy"], r"argument --sampler: invalid choice"),
    (["--kl", "js"], r"argument --kl: invalid choice"),
    (["--epochs", "two"], r"argument --epochs: invalid int value"),
    (["--min-depths", "9,1,1"], r"--min-depths '9,1,1': stage 0 has 3 blocks"),
    (["--min-depths", "1,1"], r"2 minimum depths given for 3 stages"),
    (["--min-depths", "1,1,1,1"], r"4 minimum depths given for 3 stages"),
    (["--min-depths", "a,b,c"], r"--min-depths 'a,b,c': write one integer per stage"),
    (["--min-depths=-1,1,1"], r"minimum depth must be in 0..3, not -1"),
    (["--min-depths", "0,0,0"], r"impossible depth 0 in stage 1"),
    (["--eval-min-depths", "4,1,1"], r"--eval-min-depths '4,1,1': stage 0 has 3 blocks"),
    (["--mode", "individual"], r"name it with --subnet"),
    (["--mode", "individual", "--subnet", "1,1"], r"--subnet '1,1': sub-network 1,1 has 2 stages"),
    (["--mode", "individual", "--subnet", "4,1,1"], r"stage 0 has 3 blocks; 4 is too many"),
    (["--mode", "individual", "--subnet", "1,0,1"], r"block 1.0 changes the shape and cannot be skipped"),
    (["--mode", "individual", "--subnet", "x"], r"cannot parse sub-network spec 'x'"),
    (["--lr", "0"], r"--lr must be positive, got 0"),
    (["--lr", "-0.1"], r"--lr must be positive"),
    (["--lr", "nan"], r"--lr must be a finite number, got nan"),
    (["--lr", "inf"], r"--lr must be a finite number, got inf"),
    (["--epochs", "0"], r"--epochs must be positive"),
    (["--epochs", "-2"], r"--epochs must be positive"),
    (["--batch-size", "0"], r"--batch-size must be positive"),
    (["--batch-size", "100000"], r"--batch-size 100000 is larger than the training set"),
    (["--momentum", "-0.5"], r"--momentum must not be negative|--momentum must be in \[0, 1\)"),
    (["--momentum", "1.5"], r"--momentum must be in \[0, 1\)"),
    (["--weight-decay=-1e-4"], r"--weight-decay must not be negative"),
    (["--weight-decay", "nan"], r"--weight-decay must be a finite number"),
    (["--temperature", "0"], r"--temperature must be positive"),
    (["--kl-weight", "-1"], r"--kl-weight must not be negative"),
    (["--kl-weight", "nan"], r"--kl-weight must be a finite number"),
    (["--label-smoothing", "1"], r"--label-smoothing must be in \[0, 1\)"),
    (["--train-fraction", "0"], r"--train-fraction must be in \(0, 1\]"),
    (["--train-fraction", "1.5"], r"--train-fraction must be in \(0, 1\]"),
    (["--warmup-epochs", "-1"], r"--warmup-epochs must not be negative"),
    (["--subnets-per-step", "0"], r"--subnets-per-step must be positive"),
    (["--calib-images", "0"], r"--calib-images must be positive"),
    (["--eval-subnets", "-1"], r"--eval-subnets must be positive"),
    (["--eval-batch-size", "0"], r"--eval-batch-size must be positive"),
    (["--checkpoint-every", "-5"], r"--checkpoint-every must not be negative"),
    (["--log-every", "0"], r"--log-every must be positive"),
    (["--seed", "-1"], r"--seed must be in \[0, 2\*\*32\)"),
    (["--resume", "--force"], r"choose one"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], r"no CUDA device|device"),
]


@pytest.mark.parametrize("flags,pattern", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_against_existing_run(capsys, finished_run, flags, pattern):
    """Every bad flag fails in one line, and an existing run folder, even with --force,
    stays byte for byte as it was."""
    force = [] if "--resume" in flags else ["--force"]
    expect_error(capsys, ["train", *TINY, "--out", finished_run, *force, *flags], pattern, finished_run)


def test_bad_flag_creates_no_folder(capsys, tmp_path):
    out = tmp_path / "new"
    expect_error(capsys, ["train", *TINY, "--out", str(out), "--model", "nope"], "unknown model")
    assert not out.exists()


def test_folder_with_a_run_is_refused(capsys, finished_run):
    expect_error(
        capsys, ["train", *TINY, "--out", finished_run], r"already holds files; pass --resume .* --force", finished_run
    )


def test_folder_with_other_files_is_not_deleted_by_force(capsys, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    expect_error(
        capsys,
        ["train", *TINY, "--out", str(tmp_path), "--force"],
        r"holds files but no run .* refusing to delete",
        tmp_path,
    )
    expect_error(capsys, ["train", *TINY, "--out", str(tmp_path)], r"already holds files", tmp_path)


def test_out_is_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    expect_error(capsys, ["train", *TINY, "--out", str(f)], r"is a file, not a folder", tmp_path)


def test_resume_without_a_run(capsys, tmp_path):
    expect_error(capsys, ["train", *TINY, "--out", str(tmp_path / "none"), "--resume"], r"holds no run to continue")


def test_resume_with_other_settings_is_refused(capsys, finished_run):
    expect_error(
        capsys,
        ["train", *TINY, "--out", finished_run, "--resume", "--lr", "0.2"],
        r"was started with --lr 0.05, not 0.2",
        finished_run,
    )


def test_resume_of_a_folder_with_a_broken_config(capsys, finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    (run / "config.yaml").write_text("epochs: [unclosed")
    os.remove(run / "checkpoint" / "meta.json")
    expect_error(
        capsys, ["train", *TINY, "--out", str(run), "--resume"], r"holds no run|cannot read .*config.yaml", run
    )


def test_foreign_checkpoint_in_the_run_folder(capsys, finished_run, tmp_path):
    """A run folder whose checkpoint was replaced by another architecture's."""
    import shutil

    from stimulative.models import create_model

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    meta = json.loads((run / "checkpoint" / "meta.json").read_text())
    state = {"optimizer": {}, "scheduler": {}, "rng": {}}
    ckpt.save_checkpoint(str(run / "checkpoint"), create_model("resnet32", num_classes=10, in_chans=1), state, meta)
    expect_error(
        capsys,
        ["train", *TINY, "--out", str(run), "--resume"],
        r"another architecture: 0 missing keys .* unexpected",
        run,
    )
    meta["num_classes"] = 3
    ckpt.save_checkpoint(str(run / "checkpoint"), create_model("resnet20", num_classes=3, in_chans=1), state, meta)
    expect_error(capsys, ["train", *TINY, "--out", str(run), "--resume"], r"is for number of classes 3, not 10", run)


def test_pickle_payload_in_the_run_folder(capsys, finished_run, tmp_path):
    import shutil

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    torch.save({"optimizer": Payload(), "scheduler": {}, "rng": {}}, run / "checkpoint" / "state.pt")
    expect_error(
        capsys, ["train", *TINY, "--out", str(run), "--resume"], r"refusing to load .*state.pt.*never unpickled", run
    )
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_in_the_run_folder(capsys, finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    path = run / "checkpoint" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:5000])
    expect_error(
        capsys, ["train", *TINY, "--out", str(run), "--resume"], r"model.safetensors.* damaged or truncated", run
    )
    expect_error(
        capsys,
        ["evaluate", str(run), "--no-progress", "--device", "cpu"],
        r"model.safetensors.* damaged or truncated",
        run,
    )


# --- configuration files -------------------------------------------------------------

BAD_YAML = [
    ("epochs: [3\n", r"is not valid YAML"),
    ("- epochs\n- 3\n", r"must be a mapping of option: value"),
    ("epochz: 3\n", r"unknown option 'epochz'"),
    ("epochs: many\n", r"epochs must be int, got 'many'"),
    ("epochs: 2.5\n", r"epochs must be int, got 2.5"),
    ("lr: .nan\n", r"--lr must be a finite number"),
    ("lr: -1\n", r"--lr must be positive"),
    ("mode: sst\n", r"unknown mode 'sst'; choose from st, ct, individual"),
    ("augment: maybe\n", r"augment must be bool"),
    ("min_depths: 9,1,1\n", r"--min-depths '9,1,1'"),
]


@pytest.mark.parametrize("text,pattern", BAD_YAML, ids=[t.strip() for t, _ in BAD_YAML])
def test_malformed_config(capsys, tmp_path, finished_run, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    expect_error(
        capsys, ["train", *TINY, "--out", finished_run, "--force", "--config", str(path)], pattern, finished_run
    )


def test_config_missing_or_binary(capsys, tmp_path):
    expect_error(
        capsys, ["train", *TINY, "--config", str(tmp_path / "none.yaml")], r"cannot read config .*No such file"
    )
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81binary")
    expect_error(
        capsys,
        ["train", *TINY, "--config", str(tmp_path / "bin.yaml")],
        r"is not a text \(UTF-8\) YAML file|not valid YAML",
    )


def test_yaml_reads_exponents_as_numbers(tmp_path):
    from stimulative.training.config import load_yaml_options

    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nepochs: '3'\n")
    assert load_yaml_options(str(path)) == {"lr": 1e-3, "epochs": 3}


# --- data folders ---------------------------------------------------------------------


def test_cifar_missing_or_empty_folder(capsys, tmp_path):
    expect_error(
        capsys,
        ["train", *TINY, "--dataset", "cifar10", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "r1")],
        r"cifar10 not found under",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(
        capsys,
        ["train", *TINY, "--dataset", "cifar10", "--data-root", str(empty), "--out", str(tmp_path / "r2")],
        r"cifar10 not found under",
    )
    (empty / "cifar-10-batches-bin").mkdir()
    expect_error(
        capsys,
        ["train", *TINY, "--dataset", "cifar10", "--data-root", str(empty), "--out", str(tmp_path / "r3")],
        r"lacks data_batch_1.bin",
    )
    (empty / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    for i in range(2, 6):
        (empty / "cifar-10-batches-bin" / f"data_batch_{i}.bin").write_bytes(b"\x00" * 3073)
    (empty / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x00" * 3073)
    expect_error(
        capsys,
        ["train", *TINY, "--dataset", "cifar10", "--data-root", str(empty), "--out", str(tmp_path / "r4")],
        r"data_batch_1.bin' is not a CIFAR binary file",
    )
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def _image_folder(root, corrupt=()):
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(6 if split == "train" else 2):
                Image.frombytes("RGB", (12, 12), random.Random(100 * c + i).randbytes(12 * 12 * 3)).save(d / f"{i}.png")
    for rel, kind in corrupt:
        path = root / rel
        if kind == "garbage":
            path.write_bytes(b"this is not an image at all")
        else:  # truncated: a real PNG cut in half
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    return root


IMG = [
    "--dataset",
    "imagefolder",
    "--image-size",
    "8",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--eval-subnets",
    "2",
    "--calib-images",
    "8",
    "--eval-batch-size",
    "8",
    "--no-progress",
    "--device",
    "cpu",
    "--eval-bn",
    "running",
]


def test_imagefolder_missing_or_empty(capsys, tmp_path):
    expect_error(
        capsys,
        ["train", *IMG, "--workers", "0", "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "r")],
        r"missing folder .*train",
    )
    (tmp_path / "d" / "train").mkdir(parents=True)
    expect_error(
        capsys,
        ["train", *IMG, "--workers", "0", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "r")],
        r"missing folder .*val",
    )
    (tmp_path / "d" / "val").mkdir()
    expect_error(
        capsys,
        ["train", *IMG, "--workers", "0", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "r")],
        r"cannot read image folder .*[Cc]ouldn't find any class folder",
    )
    (tmp_path / "d" / "train" / "cat").mkdir()
    (tmp_path / "d" / "val" / "cat").mkdir()
    expect_error(
        capsys,
        ["train", *IMG, "--workers", "0", "--data-root", str(tmp_path / "d"), "--out", str(tmp_path / "r")],
        r"cannot read image folder .*[Ff]ound no valid file",
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named(capsys, tmp_path, workers):
    root = _image_folder(tmp_path / "imgs", [("train/class1/3.png", "garbage")])
    line = expect_error(
        capsys,
        ["train", *IMG, "--workers", str(workers), "--data-root", str(root), "--out", str(tmp_path / "r")],
        r"cannot read image '.*class1/3.png' \(.*\); pass --skip-corrupt",
    )
    assert "Caught" not in line and "Traceback" not in line


def test_skip_corrupt_skips_and_counts(capsys, tmp_path):
    root = _image_folder(
        tmp_path / "imgs",
        [("train/class1/3.png", "garbage"), ("train/class0/1.png", "truncated"), ("val/class0/0.png", "garbage")],
    )
    out = tmp_path / "r"
    code = main(["train", *IMG, "--workers", "0", "--data-root", str(root), "--out", str(out), "--skip-corrupt"])
    assert code == 0
    assert "skipped 3 unreadable or corrupt image(s)" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["skipped_images"] == 3


# --- failures during training -----------------------------------------------------------


def test_huge_learning_rate_stops_naming_the_step(capsys, tmp_path):
    out = tmp_path / "r"
    line = expect_error(
        capsys,
        ["train", *TINY, "--lr", "1e30", "--log-every", "1", "--out", str(out)],
        r"non-finite (loss|value) .*at step \d+",
    )
    assert "training stopped" in line or "last good checkpoint" in line
    found = ckpt.latest_checkpoint(str(out / "checkpoint"))
    if found:  # any checkpoint written holds finite weights only
        assert all(torch.isfinite(t).all() for t in load_file(os.path.join(found, "model.safetensors")).values())


def test_nan_loss_keeps_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    """The loss turns NaN at step 5: training stops naming step 5 and the checkpoint of
    step 4 stays as it was."""
    from stimulative.training import steps as train

    real, calls = train.stimulative_loss, []

    def poisoned(*a, **kw):
        calls.append(1)
        loss, ce, kl = real(*a, **kw)
        return (loss * float("nan"), ce, kl) if len(calls) >= 5 else (loss, ce, kl)

    monkeypatch.setattr(train, "stimulative_loss", poisoned)
    out = tmp_path / "r"
    expect_error(
        capsys,
        ["train", *TINY, "--epochs", "2", "--checkpoint-every", "2", "--out", str(out)],
        r"non-finite loss at step 5 \(epoch 2\); training stopped; the last good checkpoint .* \(step 4\) is kept",
    )
    meta = ckpt.load_meta(str(out / "checkpoint"))
    assert meta["step"] == 4
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "checkpoint" / "model.safetensors")).values())


def test_full_disk_during_training_then_resume(capsys, tmp_path, monkeypatch):
    """The second checkpoint hits a full disk: a clear error, the first checkpoint intact;
    once space is back, --resume finishes the run."""
    real, calls = ckpt._write_file, []

    def full(path, data):
        calls.append(path)
        if len(calls) > 3:  # the first checkpoint's three files fit, nothing after
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full)
    out = tmp_path / "r"
    args = ["train", *TINY, "--epochs", "2", "--checkpoint-every", "2", "--out", str(out)]
    expect_error(
        capsys,
        args,
        r"cannot write checkpoint .* at step 4: No space left on device; the previous checkpoint .* is intact",
    )
    assert ckpt.load_meta(str(out / "checkpoint"))["step"] == 2
    assert not (out / "checkpoint.tmp").exists()
    monkeypatch.setattr(ckpt, "_write_file", real)
    assert main([*args, "--resume"]) == 0
    assert ckpt.load_meta(str(out / "checkpoint"))["step"] == 8
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
