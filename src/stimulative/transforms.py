"""Image transforms of the training and evaluation pipelines, and batch mixing.

The default pipelines (random crop and flip; for ImageNet-style folders random resized crop
and flip, resize and centre crop for evaluation) keep torchvision's v1 classes, so runs are
bit-identical with earlier ones. The options the official code offers are torchvision v2
transforms, inserted where the official code has them:

``crop -> flip -> ColorJitter -> auto-augment -> to tensor -> Lighting -> normalise -> RandomErasing``

(the official code applies Lighting before the auto-augment policy, on uint8 images; see
:class:`Lighting`). Mixup/CutMix (:func:`batch_mixer`) act on whole batches and give soft
targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

AUTO_AUGMENTS = ("none", "randaugment", "trivialaugment", "autoaugment")
# AlexNet's PCA of ImageNet's RGB pixels (fb.resnet.torch; the official code's utils/mytransforms.py)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


@dataclass(frozen=True)
class AugmentOptions:
    """The optional augmentations and imagefolder's sizes (0: the defaults)."""

    auto_augment: str = "none"
    random_erasing: float = 0.0
    color_jitter: float = 0.0
    lighting: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    train_crop_size: int = 0
    val_resize_size: int = 0
    val_crop_size: int = 0

    @classmethod
    def from_config(cls, cfg) -> AugmentOptions:
        """The options of a configuration object with fields of the same names."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


def lighting_noise(img: torch.Tensor, alpha: torch.Tensor, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
    """AlexNet's PCA colour noise: ``img (3, H, W) + eigvec @ (alpha * eigval)`` per channel,
    clamped to [0, 1]; ``alpha`` of shape (3,)."""
    val = torch.tensor(eigval, dtype=img.dtype)
    vec = torch.tensor(eigvec, dtype=img.dtype)
    shift = vec @ (alpha.to(img.dtype) * val)  # (3,): one offset per RGB channel
    return (img + shift[:, None, None]).clamp(0.0, 1.0)


class Lighting(nn.Module):
    """PCA lighting noise (AlexNet; ``alpha ~ N(0, alphastd^2)``) on a float RGB tensor in
    [0, 1], clamped to [0, 1]: one offset per channel, of standard deviation about
    ``0.126 * alphastd`` (0.0126, about 3 grey levels, at the official 0.1).
    The official code applies it to uint8 images (0-255) before the tensor conversion, where
    the offset (about 0.012 of one level) is truncated away: nearly a no-op there."""

    def __init__(self, alphastd: float) -> None:
        super().__init__()
        self.alphastd = alphastd

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        return lighting_noise(img, torch.randn(3) * self.alphastd)


def auto_augment(name: str, imagenet: bool):
    """The v2 policy of ``--auto-augment``: RandAugment with one operation at magnitude 9 (the
    official code's ``with_RA_torch``), TrivialAugmentWide, or AutoAugment (the ImageNet
    policy for image folders, as the official code; the CIFAR-10 policy for CIFAR)."""
    from torchvision.transforms import v2

    if name == "none":
        return None
    if name == "randaugment":
        return v2.RandAugment(num_ops=1, magnitude=9)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    if name == "autoaugment":
        policy = v2.AutoAugmentPolicy.IMAGENET if imagenet else v2.AutoAugmentPolicy.CIFAR10
        return v2.AutoAugment(policy)
    raise ValueError(f"unknown auto-augment {name!r}; choose from {', '.join(AUTO_AUGMENTS)}")


def train_pipeline(head: list, options: AugmentOptions, normalize, imagenet: bool) -> Callable:
    """``head`` (the crop, flip and resizing on PIL images), then the options in the order of
    the module docstring, the tensor conversion and ``normalize``."""
    from torchvision import transforms
    from torchvision.transforms import v2

    steps = list(head)
    c = options.color_jitter
    if c > 0:
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))  # no hue, as the official code
    policy = auto_augment(options.auto_augment, imagenet)
    if policy is not None:
        steps.append(policy)
    steps.append(transforms.ToTensor())
    if options.lighting > 0:
        steps.append(Lighting(options.lighting))
    steps.append(normalize)
    if options.random_erasing > 0:  # the official with_RE: scale (0.02, 0.33), ratio (0.3, 3.3), value 0
        steps.append(v2.RandomErasing(p=options.random_erasing))
    return transforms.Compose(steps)


def imagefolder_sizes(options: AugmentOptions, image_size: int) -> tuple[int, int, int]:
    """``(train crop, val resize, val crop)``: 0 means ``image_size``, ``image_size`` and
    ``round(val crop / 0.875)`` (the official code: 224, 256, 224; its best ST++ run 200, 240, 224)."""
    crop = options.train_crop_size or image_size
    val_crop = options.val_crop_size or image_size
    return crop, options.val_resize_size or int(round(val_crop / 0.875)), val_crop


def batch_mixer(mixup: float, cutmix: float, num_classes: int):
    """``mix(x, y) -> (x, soft targets (B, C))`` with v2.MixUp (``alpha = mixup``) and/or
    v2.CutMix (``alpha = cutmix``), one of the two drawn per batch when both are on (as
    torchvision's reference script); None when both are 0. Pairs are made by rolling the
    batch by one, so the targets' rows sum to 1."""
    from torchvision.transforms import v2

    mixers = []
    if mixup > 0:
        mixers.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
    if cutmix > 0:
        mixers.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
