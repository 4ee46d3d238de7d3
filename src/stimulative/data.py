"""Data sets: ``digits`` (scikit-learn's 1,797 real 8x8 handwritten digits, shipped with the
package), ``cifar10``/``cifar100`` (torchvision, from a local root) and ``imagefolder``
(ImageNet-style ``train/`` and ``val/`` folders).

Every data set yields the same thing: a :class:`DataSource` whose training batches follow a
permutation that is a pure function of ``(seed, epoch)``, so a run resumed in the middle of
an epoch sees exactly the batches it would have seen."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .transforms import AugmentOptions, batch_mixer, imagefolder_sizes, train_pipeline

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A data set cannot be used as asked; the message says what to do."""


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the random augmentation of one training image (or in-memory batch) in one
    epoch: a pure function, so a run resumed mid-epoch, with any number of workers, draws
    exactly what the uninterrupted run drew."""
    return ((seed * 104_729 + epoch) * 1_000_003 + index) % 2**63


def mix_seed(seed: int, epoch: int, batch: int) -> int:
    """Seed of the mixup/CutMix draw of one global batch: a pure function, as :func:`sample_seed`
    (salted, so it is not the seed of image ``batch``)."""
    return sample_seed(seed, epoch, batch) ^ 0x5DEECE66D


class SeededSamples(Dataset):
    """``dataset[i]`` with the random transforms seeded by :func:`sample_seed`, indexed by
    ``(epoch, i)`` pairs (as :class:`EpochSampler` yields them): the epoch travels with the
    index, so persistent worker processes need no update between epochs. The global torch RNG
    of the calling process is left as it was."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, i))
            return self.dataset[i]


def _iterate(loader: DataLoader, device: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader`` moved to ``device``; a data error raised in a worker process is
    re-raised with its own one-line message (the loader wraps it in a traceback)."""
    try:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    except DataError as e:
        text = str(e)
        if text.startswith("Caught "):
            marker = "DataError: "
            last = [line for line in text.splitlines() if marker in line]
            raise DataError(last[-1].split(marker, 1)[1] if last else text.splitlines()[0]) from None
        raise


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded, stratified ``fraction`` of the examples (at least one per class)."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"train fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, max(1, round(fraction * len(idx))), replace=False))
    return np.sort(np.concatenate(keep))


# the validation split does not depend on the run's seed (like the test split): seeds then
# differ in initialisation, data order and sampled sub-networks, not in the data they see
VAL_SEED = 12345


def hold_out(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, held_out)`` indices: a fixed, stratified ``fraction`` held out (none if 0)."""
    if fraction == 0:
        return np.arange(len(labels)), np.arange(0)
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    held = stratified_fraction(labels, fraction, VAL_SEED)
    return np.setdiff1d(np.arange(len(labels)), held), held


class EpochSampler(Sampler[tuple[int, int]]):
    """``(epoch, index)`` pairs of one epoch, the indices in the order of
    :func:`epoch_permutation`, from index ``start``; :meth:`set_epoch` moves it to another
    epoch (the sampler lives in the main process, so one DataLoader with persistent workers
    serves every epoch).

    With ``world_size`` > 1 (DistributedSampler's job): only the complete global batches of
    ``batch_size`` are kept and ``rank`` gets the contiguous ``rank``-th of ``world_size``
    equal shares of each, so the ranks' batch ``b`` together are exactly global batch ``b``
    (no padding, no duplicates)."""

    def __init__(
        self, n: int, seed: int, epoch: int, start: int = 0, batch_size: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.seed, self.batch_size, self.rank, self.world_size = n, seed, batch_size, rank, world_size
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        order = epoch_permutation(self.n, self.seed, epoch)[start:]
        if self.world_size > 1:
            b = self.batch_size
            lo, hi = b * self.rank // self.world_size, b * (self.rank + 1) // self.world_size
            order = order[: len(order) // b * b].view(-1, b)[:, lo:hi].reshape(-1)
        self.epoch, self.order = epoch, order.tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, order = self.epoch, self.order  # fixed now: a later set_epoch does not touch this pass
        return ((epoch, i) for i in order)

    def __len__(self) -> int:
        return len(self.order)


@dataclass
class DataSource:
    """Training and evaluation batches of one data set.

    ``train`` and ``test`` are map-style datasets of ``(image tensor, label)``;
    ``calibration`` holds training images with test-time transforms (for BN recalibration);
    ``val`` the held-out validation images (test-time transforms) for per-epoch numbers and
    best-epoch selection, or None."""

    name: str
    train: Dataset
    test: Dataset
    calibration: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    in_memory: bool = False  # small tensors kept whole: index them, skip DataLoader workers
    augment: object | None = None  # batch augmentation for in-memory data: fn(x, generator) -> x
    skipped: tuple[str, ...] = ()  # unreadable files left out (imagefolder with skip_corrupt)
    mix: object | None = None  # batch mixing (mixup/CutMix): fn(x, y) -> (x, soft targets (B, C))
    val: Dataset | None = None
    _loaders: dict = field(default_factory=dict, repr=False, compare=False)  # persistent DataLoaders by use

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int = 0,
        workers: int = 0,
        device: str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch ``start`` on (the last partial batch is dropped).

        ``batch_size`` is the global batch; with ``world_size`` processes, ``rank`` gets the
        contiguous ``rank``-th share of each global batch (``batch_size // world_size``
        images, see :class:`EpochSampler`). With mixup/CutMix the labels are soft targets
        ``(B, C)``; in memory the whole global batch is mixed, from a loader each rank's share."""
        n = len(self.train)
        lo, hi = batch_size * rank // world_size, batch_size * (rank + 1) // world_size
        if self.in_memory:
            x_all, y_all = self.train.tensors
            order = epoch_permutation(n, seed, epoch)
            whole = world_size == 1  # one process takes the whole batch: no slicing (a step's overhead counts)
            for b in range(start, n // batch_size):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                if self.augment is not None:  # per batch a seeded generator: exact mid-epoch resume
                    x = self.augment(x, torch.Generator().manual_seed(sample_seed(seed, epoch, b)))
                # augment and mix the whole global batch, so each rank's share is what one process sees
                x, y = self._mixed(x, y, seed, epoch, b)
                if not whole:
                    x, y = x[lo:hi], y[lo:hi]
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            return
        key = ("train", batch_size, seed, workers, device, rank, world_size)
        if key not in self._loaders:
            sampler = EpochSampler(n, seed, epoch, start * batch_size, batch_size, rank, world_size)
            self._loaders[key] = self._loader(
                SeededSamples(self.train, seed), hi - lo, workers, device, sampler=sampler, drop_last=True
            )
        loader = self._loaders[key]
        loader.sampler.set_epoch(epoch, start * batch_size)
        if self.mix is None:
            yield from _iterate(loader, device)
            return
        for b, (x, y) in enumerate(_iterate(loader, device), start):
            yield self._mixed(x, y, seed, epoch, b)

    def _mixed(
        self, x: torch.Tensor, y: torch.Tensor, seed: int, epoch: int, batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch mixed by ``self.mix`` (seeded by :func:`mix_seed`), or as it is."""
        if self.mix is None:
            return x, y
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(seed, epoch, batch))
            return self.mix(x, y)

    @staticmethod
    def _loader(
        dataset: Dataset, batch_size: int, workers: int, device: str, persistent: bool = True, **kwargs
    ) -> DataLoader:
        """A DataLoader, by default with worker processes that stay alive between epochs and
        evaluations (their start-up is paid once per run, not once per pass). Its own
        generator: drawing the workers' base seed leaves the global RNG (dropout, sampling) alone."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=device.startswith("cuda"),
            persistent_workers=persistent and workers > 0,
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )

    def close(self) -> None:
        """Stop the persistent worker processes (they also stop with the process)."""
        self._loaders.clear()

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self.train) // batch_size

    def eval_batches(
        self, dataset: Dataset, batch_size: int, workers: int = 0, device: str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``dataset`` in order, in batches, moved to ``device``."""
        if isinstance(dataset, TensorData):
            x_all, y_all = dataset.tensors
            for i in range(0, len(y_all), batch_size):
                yield x_all[i : i + batch_size].to(device), y_all[i : i + batch_size].to(device)
            return
        if workers == 0 or dataset is not self.test:  # others are subsets made on the fly: nothing worth keeping
            yield from _iterate(self._loader(dataset, batch_size, workers, device, persistent=False), device)
            return
        key = ("test", batch_size, workers, device)
        if key not in self._loaders:
            self._loaders[key] = self._loader(dataset, batch_size, workers, device)
        yield from _iterate(self._loaders[key], device)

    def calibration_inputs(
        self, count: int, batch_size: int, seed: int, workers: int = 0, device: str = "cpu"
    ) -> list[torch.Tensor]:
        """Up to ``count`` training images (a seeded choice, no augmentation), in batches on
        ``device``: the images BN statistics are re-estimated on."""
        idx = epoch_permutation(len(self.calibration), seed, -1)[:count]
        if isinstance(self.calibration, TensorData):
            x_all, y_all = self.calibration.tensors
            subset: Dataset = TensorData(x_all[idx], y_all[idx])
        else:
            subset = Subset(self.calibration, idx.tolist())
        return [x for x, _ in self.eval_batches(subset, batch_size, workers, device)]


class TensorData(Dataset):
    """A dataset held as two tensors (images, labels)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.tensors = (x, y)

    def __len__(self) -> int:
        return len(self.tensors[1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[0][i], self.tensors[1][i]


def random_shift(pad: int):
    """Random translation by up to ``pad`` pixels (zero padding then a random crop), per image."""

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :]
        return padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]

    return apply


def load_digits_data(
    seed: int, train_fraction: float = 1.0, augment: bool = False, resize: int = 0, val_fraction: float = 0.0
) -> DataSource:
    """scikit-learn's digits: a fixed stratified 75/25 split (independent of the run's seed),
    ``val_fraction`` of the training split held out for validation (fixed, stratified), pixels
    scaled to [0, 1] then standardised with the training images' mean and std.
    ``resize``: upsample the 8x8 images (bilinear) to this side, for models that need larger
    inputs; the random shifts of ``augment`` scale with it (one original pixel)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
    rest, held = hold_out(y_tr, val_fraction)
    x_val, y_val = x_tr[held], y_tr[held]
    x_tr, y_tr = x_tr[rest], y_tr[rest]
    keep = stratified_fraction(y_tr, train_fraction, seed)
    x_tr, y_tr = x_tr[keep], y_tr[keep]
    mean, std = float(x_tr.mean()), float(x_tr.std())
    as_tensor = lambda a: torch.from_numpy((a - mean) / std)[:, None]  # (N, 1, 8, 8)  # noqa: E731
    side = resize or 8
    if side != 8:
        upsample = as_tensor
        as_tensor = lambda a: torch.nn.functional.interpolate(
            upsample(a), size=(side, side), mode="bilinear", align_corners=False
        )  # noqa: E731
    train = TensorData(as_tensor(x_tr), torch.from_numpy(y_tr))
    test = TensorData(as_tensor(x_te), torch.from_numpy(y_te))
    val = TensorData(as_tensor(x_val), torch.from_numpy(y_val)) if len(y_val) else None
    shift = random_shift(max(1, round(side / 8))) if augment else None
    return DataSource("digits", train, test, train, 10, 1, side, in_memory=True, augment=shift, val=val)


CIFAR_FOLDERS = {
    "cifar10": ("cifar-10-batches-bin", "cifar-10-batches-py"),
    "cifar100": ("cifar-100-binary", "cifar-100-python"),
}
CIFAR_BIN_FILES = {
    "cifar10": ([f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1),
    "cifar100": (["train.bin"], ["test.bin"], 2),
}


class CifarBinary(Dataset):
    """CIFAR's binary on-disk format: fixed-size records of label byte(s) then 3072 pixel
    bytes (channel-major 32x32). Read without unpickling anything. For CIFAR-100 the second
    label byte is the fine label."""

    def __init__(self, files: list[str], label_bytes: int, transform) -> None:
        record = label_bytes + 3072
        chunks = []
        for f in files:
            raw = np.fromfile(f, dtype=np.uint8)
            if raw.size == 0 or raw.size % record:
                raise DataError(f"{f!r} is not a CIFAR binary file ({raw.size} bytes is not a multiple of {record})")
            chunks.append(raw.reshape(-1, record))
        data = np.concatenate(chunks)
        self.targets = data[:, label_bytes - 1].astype(np.int64).tolist()
        self.images = data[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


def load_cifar(
    name: str,
    root: str,
    seed: int,
    train_fraction: float = 1.0,
    download: bool = False,
    resize: int = 0,
    options: AugmentOptions | None = None,
    val_fraction: float = 0.0,
) -> DataSource:
    """CIFAR-10/100 under ``root``: the binary version (``cifar-10-batches-bin``,
    ``cifar-100-binary``, read directly) or the python version through torchvision (whose
    files it checks against the official checksums). Random crop (pad 4) and horizontal
    flip for training, as in the paper; ``resize`` then resizes to that side; then the
    optional augmentations of ``options`` (:mod:`stimulative.transforms`)."""
    from torchvision import datasets, transforms

    options = options or AugmentOptions()
    norm = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    sized = [transforms.Resize(resize)] if resize and resize != 32 else []
    head = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), *sized]
    train_tf = train_pipeline(head, options, norm, imagenet=False)
    test_tf = transforms.Compose([*sized, transforms.ToTensor(), norm])
    binary, python = (os.path.join(root, f) for f in CIFAR_FOLDERS[name])
    num_classes = 10 if name == "cifar10" else 100
    if os.path.isdir(binary):
        train_files, test_files, label_bytes = CIFAR_BIN_FILES[name]
        missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(binary, f))]
        if missing:
            raise DataError(f"{binary!r} lacks {', '.join(missing)}; extract the complete binary archive there")
        make = lambda files, tf: CifarBinary([os.path.join(binary, f) for f in files], label_bytes, tf)  # noqa: E731
        train, test, calib = make(train_files, train_tf), make(test_files, test_tf), make(train_files, test_tf)
    else:
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            train = cls(root, train=True, transform=train_tf, download=download)
            test = cls(root, train=False, transform=test_tf)
            calib = cls(root, train=True, transform=test_tf)
        except RuntimeError:
            raise DataError(
                f"{name} not found under {root!r}: extract the official archive there (giving {binary} or {python}), "
                f"or pass --download to fetch it"
            ) from None
    keep, held = _train_and_val(np.asarray(train.targets), train_fraction, seed, val_fraction)
    val = Subset(calib, held) if len(held) else None
    mix = batch_mixer(options.mixup, options.cutmix, num_classes)
    return DataSource(
        name, Subset(train, keep), test, Subset(calib, keep), num_classes, 3, resize or 32, mix=mix, val=val
    )


def _train_and_val(labels: np.ndarray, train_fraction: float, seed: int, val_fraction: float):
    """Indices of the training images used (a seeded fraction of those not held out) and of
    the held-out validation images (see :func:`hold_out`)."""
    rest, held = hold_out(labels, val_fraction)
    return rest[stratified_fraction(labels[rest], train_fraction, seed)], held


def load_image(path: str):
    """An RGB PIL image, fully decoded; a DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # decodes the whole file: a truncated one fails here
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        reason = str(e).splitlines()[0].replace(f" {path!r}", "") if str(e) else type(e).__name__
        raise DataError(
            f"cannot read image {path!r} ({reason}); pass --skip-corrupt to skip and count such files"
        ) from None


def _readable(path: str) -> bool:
    try:
        load_image(path)
        return True
    except DataError:
        return False


def drop_unreadable(folders: list, workers: int = 0) -> list[str]:
    """Decode every image of the given ImageFolder datasets (which list the same files, or
    not) and remove the unreadable ones from all of them. Returns the removed paths."""
    paths = sorted({p for f in folders for p, _ in f.samples})
    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL decodes without the GIL
        bad = {p for p, ok in zip(paths, pool.map(_readable, paths), strict=True) if not ok}
    for f in folders:
        f.samples = [(p, t) for p, t in f.samples if p not in bad]
        f.imgs = f.samples
        f.targets = [t for _, t in f.samples]
        if not f.samples:
            raise DataError(f"no readable image left in {f.root!r} after skipping {len(bad)} corrupt ones")
    return sorted(bad)


def _check_imagefolder(root: str) -> None:
    for split in ("train", "val"):
        path = os.path.join(root, split)
        if not os.path.isdir(path):
            raise DataError(
                f"missing folder {path!r}; imagefolder expects {root}/train/<class>/ and {root}/val/<class>/"
            )


def load_imagefolder(
    root: str,
    seed: int,
    train_fraction: float = 1.0,
    image_size: int = 224,
    skip_corrupt: bool = False,
    workers: int = 0,
    options: AugmentOptions | None = None,
    val_fraction: float = 0.0,
) -> DataSource:
    """ImageNet-style folders ``root/train/<class>/*`` and ``root/val/<class>/*``: random
    resized crop and flip for training, then the optional augmentations of ``options``;
    resize then centre crop for evaluation. Sizes: :func:`stimulative.transforms.imagefolder_sizes`.

    An unreadable or corrupt image stops training with an error naming it, when it is met;
    with ``skip_corrupt`` every image is decoded up front and the bad ones are skipped and
    counted (``DataSource.skipped``)."""
    from torchvision import datasets, transforms

    _check_imagefolder(root)
    options = options or AugmentOptions()
    crop, resize, val_crop = imagefolder_sizes(options, image_size)
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    head = [transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip()]
    train_tf = train_pipeline(head, options, norm, imagenet=True)
    test_tf = transforms.Compose(
        [transforms.Resize(resize), transforms.CenterCrop(val_crop), transforms.ToTensor(), norm]
    )
    try:
        train = datasets.ImageFolder(os.path.join(root, "train"), train_tf, loader=load_image)
        test = datasets.ImageFolder(os.path.join(root, "val"), test_tf, loader=load_image)
        calib = datasets.ImageFolder(os.path.join(root, "train"), test_tf, loader=load_image)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"cannot read image folder {root!r}: {str(e).splitlines()[0]}") from None
    if train.classes != test.classes:
        raise DataError(f"{root}/train and {root}/val have different classes")
    skipped: tuple[str, ...] = ()
    if skip_corrupt:
        skipped = tuple(drop_unreadable([train, test, calib], workers))
        if skipped:
            print(
                f"skipped {len(skipped)} unreadable or corrupt image(s) under {root!r}, e.g. {skipped[0]!r}",
                file=sys.stderr,
            )
    keep, held = _train_and_val(np.asarray(train.targets), train_fraction, seed, val_fraction)
    return DataSource(
        "imagefolder",
        Subset(train, keep),
        test,
        Subset(calib, keep),
        len(train.classes),
        3,
        crop,  # the training batches' side
        skipped=skipped,
        mix=batch_mixer(options.mixup, options.cutmix, len(train.classes)),
        val=Subset(calib, held) if len(held) else None,
    )


def load_data(
    name: str,
    root: str = "data",
    seed: int = 0,
    train_fraction: float = 1.0,
    download: bool = False,
    augment: bool = False,
    image_size: int = 224,
    resize: int = 0,
    skip_corrupt: bool = False,
    workers: int = 0,
    augmentation: AugmentOptions | None = None,
    val_fraction: float = 0.0,
) -> DataSource:
    """The data set ``name``; ``augmentation``: the optional augmentations (digits take
    mixup/CutMix only, see :class:`stimulative.transforms.AugmentOptions`); ``val_fraction``
    of its training images held out for validation."""
    options = augmentation or AugmentOptions()
    if name == "digits":
        source = load_digits_data(seed, train_fraction, augment, resize, val_fraction)
        source.mix = batch_mixer(options.mixup, options.cutmix, source.num_classes)
        return source
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, seed, train_fraction, download, resize, options, val_fraction)
    if name == "imagefolder":
        return load_imagefolder(root, seed, train_fraction, image_size, skip_corrupt, workers, options, val_fraction)
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
