import os

import numpy as np
import pytest
import torch
from PIL import Image

from stimulative.data import DataError, DataSource, load_data, random_shift, stratified_fraction


def test_digits_split_is_fixed_stratified_and_real():
    a, b = load_data("digits", seed=0), load_data("digits", seed=5)
    assert len(a.train) == 1347 and len(a.test) == 450
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])  # split independent of the run's seed
    counts = torch.bincount(a.test.tensors[1], minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47  # 25 % of each class (174..183 images)
    assert a.train.tensors[0].shape[1:] == (1, 8, 8) and a.num_classes == 10 and a.in_chans == 1


def test_train_fraction_is_seeded_and_stratified():
    d = load_data("digits", seed=0, train_fraction=0.1)
    assert 130 <= len(d.train) <= 140
    assert torch.bincount(d.train.tensors[1], minlength=10).min() >= 13
    labels = np.repeat(np.arange(4), 25)
    assert np.array_equal(stratified_fraction(labels, 0.2, 1), stratified_fraction(labels, 0.2, 1))
    assert not np.array_equal(stratified_fraction(labels, 0.2, 1), stratified_fraction(labels, 0.2, 2))
    with pytest.raises(DataError):
        stratified_fraction(labels, 0.0, 0)


def test_epoch_order_is_a_function_of_seed_and_epoch_and_resumable():
    d = load_data("digits", seed=0)
    full = list(d.train_batches(64, seed=0, epoch=3))
    again = list(d.train_batches(64, seed=0, epoch=3, start=5))
    assert len(full) == 1347 // 64
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(full[5:], again))
    other = next(d.train_batches(64, seed=0, epoch=4))
    assert not torch.equal(full[0][0], other[0])


class WorkerStamped(torch.utils.data.Dataset):
    """Image i is the value i; the label is the id of the process that loaded it."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        return torch.tensor([float(i)]), os.getpid()


def test_persistent_workers_serve_every_epoch_in_the_order_of_one_process():
    ds = WorkerStamped()
    source = DataSource("stamped", ds, ds, ds, num_classes=2, in_chans=1, image_size=1)
    alone = [x for e in range(3) for x, _ in source.train_batches(8, seed=1, epoch=e)]
    pids, seen = [], []
    for e in range(3):
        batches = source.train_batches(8, seed=1, epoch=e, workers=2)
        if e == 1:  # a pass abandoned half-way must not leak into the next one
            next(batches)
        for x, pid in source.train_batches(8, seed=1, epoch=e, workers=2):
            seen.append(x)
            pids.append(set(pid.tolist()))
    assert all(torch.equal(a, b) for a, b in zip(alone, seen, strict=True))
    assert os.getpid() not in set().union(*pids)
    assert len(set().union(*pids)) == 2  # the same two workers for all three epochs
    resumed = list(source.train_batches(8, seed=1, epoch=2, start=3, workers=2))
    assert all(torch.equal(a, x) for a, (x, _) in zip(alone[-2:], resumed, strict=True))
    tests = [list(source.eval_batches(ds, 16, workers=2)) for _ in range(2)]
    assert len(set().union(*(set(p.tolist()) for _, p in tests[0] + tests[1]))) <= 2
    source.close()


def test_random_shift_moves_images_by_at_most_one_pixel():
    x = torch.zeros(50, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = random_shift(1)(x, torch.Generator().manual_seed(0))
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert ((rows - 4).abs() <= 1).all() and ((cols - 4).abs() <= 1).all()
    assert len(set(pos.tolist())) > 1


def _write_cifar_binary(folder, files, label_bytes, n, num_classes, rng):
    os.makedirs(folder)
    for f in files:
        labels = rng.integers(0, num_classes, (n, label_bytes), dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        np.concatenate([labels, pixels], 1).tofile(os.path.join(folder, f))


def test_cifar10_binary_format(tmp_path):
    rng = np.random.default_rng(0)
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    _write_cifar_binary(tmp_path / "cifar-10-batches-bin", files, 1, 8, 10, rng)
    d = load_data("cifar10", root=str(tmp_path))
    assert len(d.train) == 40 and len(d.test) == 8 and d.num_classes == 10
    x, y = d.train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10
    # the label and pixels come from the record as written: label byte, then channel-major pixels
    raw = np.fromfile(tmp_path / "cifar-10-batches-bin" / "test_batch.bin", dtype=np.uint8).reshape(8, 3073)
    xt, yt = d.test[0]
    assert yt == raw[0, 0]
    expected = (
        torch.tensor(raw[0, 1:].reshape(3, 32, 32), dtype=torch.float32) / 255
        - torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
    ) / torch.tensor([0.2470, 0.2435, 0.2616])[:, None, None]
    assert torch.allclose(xt, expected, atol=1e-5)
    x, y = next(d.train_batches(4, seed=0, epoch=0))
    assert x.shape == (4, 3, 32, 32)


def test_cifar100_binary_uses_fine_labels(tmp_path):
    rng = np.random.default_rng(1)
    _write_cifar_binary(tmp_path / "cifar-100-binary", ["train.bin", "test.bin"], 2, 6, 100, rng)
    d = load_data("cifar100", root=str(tmp_path))
    raw = np.fromfile(tmp_path / "cifar-100-binary" / "test.bin", dtype=np.uint8).reshape(6, 3074)
    assert [d.test[i][1] for i in range(6)] == raw[:, 1].tolist()
    assert d.num_classes == 100


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download"):
        load_data("cifar10", root=str(tmp_path))


def test_truncated_cifar_file_is_named(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    _write_cifar_binary(folder, ["train.bin", "test.bin"], 2, 3, 100, np.random.default_rng(0))
    with open(folder / "test.bin", "ab") as fh:
        fh.write(b"xx")
    with pytest.raises(DataError, match="test.bin"):
        load_data("cifar100", root=str(tmp_path))


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                    tmp_path / split / cls / f"{i}.png"
                )
    d = load_data("imagefolder", root=str(tmp_path), image_size=32)
    assert len(d.train) == 6 and len(d.test) == 4 and d.num_classes == 2
    x, y = d.test[3]
    assert x.shape == (3, 32, 32) and y == 1
    xs, ys = next(d.train_batches(3, seed=0, epoch=0))
    assert xs.shape == (3, 3, 32, 32)


def test_imagefolder_missing_split(tmp_path):
    os.makedirs(tmp_path / "train" / "a")
    with pytest.raises(DataError, match="val"):
        load_data("imagefolder", root=str(tmp_path))


def test_unknown_dataset():
    with pytest.raises(DataError, match="choose from digits, cifar10, cifar100, imagefolder"):
        load_data("mnist")
