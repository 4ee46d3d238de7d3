"""The optional augmentations (official options as torchvision v2 transforms), the lighting
noise, imagefolder's sizes and batch mixing with soft targets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from stimulative.data import load_data
from stimulative.transforms import (
    IMAGENET_EIGVEC,
    AugmentOptions,
    Lighting,
    batch_mixer,
    imagefolder_sizes,
    lighting_noise,
    train_pipeline,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(h: int = 40, w: int = 50, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_lighting_noise_by_hand():
    img = torch.full((3, 2, 2), 0.5, dtype=torch.float64)
    out = lighting_noise(img, torch.tensor([1.0, 0.0, 0.0]))  # first principal component only, alpha 1
    expected = [0.5 + 0.2175 * row[0] for row in IMAGENET_EIGVEC]  # 0.3766, 0.3737, 0.3731
    assert out[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(out[:, 0, 0], out[:, 1, 1])  # one offset per channel
    assert lighting_noise(torch.zeros(3, 1, 1), torch.tensor([1.0, 0, 0])).min() == 0  # clamped to [0, 1]


def test_lighting_module_draws_small_offsets_in_range():
    torch.manual_seed(0)
    img = torch.rand(3, 8, 8) * 0.8 + 0.1
    out = Lighting(0.1)(img)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert 0 <= out.min() and out.max() <= 1
    diff = out - img
    assert (diff.abs() > 0).all() and diff.abs().max() < 0.1  # a few grey levels per channel
    assert torch.allclose(diff, diff[:, :1, :1].expand_as(diff), atol=1e-6)
    assert torch.equal(Lighting(0.0)(img), img)


@pytest.mark.parametrize(
    "options",
    [
        AugmentOptions(),
        AugmentOptions(color_jitter=0.4, lighting=0.1),
        AugmentOptions(auto_augment="randaugment"),
        AugmentOptions(auto_augment="trivialaugment"),
        AugmentOptions(auto_augment="autoaugment", random_erasing=1.0),
    ],
)
@pytest.mark.parametrize("imagenet", [True, False])
def test_train_pipelines_give_normalised_tensors_of_the_crop(options, imagenet):
    from torchvision import transforms

    torch.manual_seed(0)
    head = [transforms.RandomResizedCrop(24), transforms.RandomHorizontalFlip()]
    tf = train_pipeline(head, options, transforms.Normalize(MEAN, STD), imagenet)
    x = tf(_image())
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    low = min((0 - m) / s for m, s in zip(MEAN, STD))
    high = max((1 - m) / s for m, s in zip(MEAN, STD))
    assert low - 1e-5 <= x.min() and x.max() <= high + 1e-5  # normalised [0, 1] images
    if options.random_erasing == 1.0:
        assert (x == 0).any()  # an erased rectangle (value 0 after normalisation)


def test_imagefolder_sizes():
    assert imagefolder_sizes(AugmentOptions(), 224) == (224, 256, 224)
    official_best = AugmentOptions(train_crop_size=200, val_resize_size=240, val_crop_size=224)
    assert imagefolder_sizes(official_best, 224) == (200, 240, 224)
    assert imagefolder_sizes(AugmentOptions(val_crop_size=112), 224) == (224, 128, 112)


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.2, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_batch_mixing_gives_soft_targets_whose_rows_sum_to_one(mixup, cutmix):
    torch.manual_seed(0)
    mix = batch_mixer(mixup, cutmix, 10)
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    mx, my = mix(x, y)
    assert mx.shape == x.shape and my.shape == (6, 10) and my.dtype.is_floating_point
    assert torch.allclose(my.sum(1), torch.ones(6))
    lam = my[0, 0].item()  # sample 0 is mixed with sample 5 (the batch rolled by one)
    assert 0 <= lam <= 1 and my[0, 5].item() == pytest.approx(1 - lam, abs=1e-6)
    assert batch_mixer(0.0, 0.0, 10) is None


def test_digits_batches_with_mixup_are_seeded_soft_and_resumable():
    d = load_data("digits", seed=0, augmentation=AugmentOptions(mixup=0.2))
    batches = list(d.train_batches(64, seed=0, epoch=1))
    x, y = batches[0]
    assert y.shape == (64, 10) and torch.allclose(y.sum(1), torch.ones(64))
    assert not torch.equal(y, torch.nn.functional.one_hot(y.argmax(1), 10).float())  # mixed, not one-hot
    again = list(d.train_batches(64, seed=0, epoch=1, start=3))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches[3:], again))
    plain = load_data("digits", seed=0)
    assert next(plain.train_batches(64, seed=0, epoch=1))[1].dtype == torch.int64


def test_imagefolder_with_the_official_options(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for c, cls in enumerate(("cat", "dog")):
            os.makedirs(tmp_path / split / cls)
            for i in range(n):
                _image(60, 70, seed=10 * c + i).save(tmp_path / split / cls / f"{i}.png")
    options = AugmentOptions(
        color_jitter=0.4, lighting=0.1, train_crop_size=20, val_resize_size=36, val_crop_size=32, mixup=0.2
    )
    d = load_data("imagefolder", root=str(tmp_path), image_size=32, augmentation=options)
    x, y = d.test[0]
    assert x.shape == (3, 32, 32)
    xs, ys = next(d.train_batches(4, seed=0, epoch=0))
    assert xs.shape == (4, 3, 20, 20) and d.image_size == 20
    assert ys.shape == (4, 2) and torch.allclose(ys.sum(1), torch.ones(4))
