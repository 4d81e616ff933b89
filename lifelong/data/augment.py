"""Batched training augmentation of the standard image benchmarks, on the training device.

The papers' CIFAR / TinyImageNet pipeline (Mammoth, DER, ER-ACE, ...) is torchvision's RandomCrop(size,
padding=4) then RandomHorizontalFlip() on the uint8 image, then normalisation. `CropFlip` does the same on a
batch of *prepared* (normalised) images in one gather: the padding value is the normalised value of a black
pixel (-mean / std per channel), so padding after normalisation equals torchvision's zero padding before it.
Offsets (uniform in [0, 2 * padding], as RandomCrop draws them) and flips (probability 1/2) come from the given
torch.Generator: no per-sample Python, no PIL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lifelong.errors import LifelongError


@dataclass
class CropFlip:
    """Random crop of the image's own size from the image padded by `padding`, then a horizontal flip with
    probability `flip` (0 turns flipping off). `shape` is one image's (C, H, W); `fill` the padding value per
    channel (or one value). Batches come as flat rows (B, C*H*W) or (B, C, H, W) and keep their shape and
    dtype."""

    shape: tuple[int, int, int]
    padding: int = 4
    flip: float = 0.5
    fill: float | Sequence[float] = 0.0

    def __post_init__(self) -> None:
        if len(self.shape) != 3:
            raise LifelongError(f"augmentation needs image inputs (C, H, W), got shape {tuple(self.shape)}")
        if self.padding < 0 or not 0.0 <= self.flip <= 1.0:
            raise LifelongError(f"augmentation padding={self.padding} must be >= 0 and flip={self.flip} in [0, 1]")
        fill = [float(self.fill)] * self.shape[0] if isinstance(self.fill, (int, float)) else list(self.fill)
        if len(fill) != self.shape[0]:
            raise LifelongError(f"augmentation fill has {len(fill)} values for {self.shape[0]} channels")
        self.fill = tuple(fill)

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Row offsets, column offsets (each in [0, 2 * padding]) and flip flags of `n` images."""
        dev = generator.device
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (n,), generator=generator, device=dev)
        left = torch.randint(0, span, (n,), generator=generator, device=dev)
        flips = torch.rand(n, generator=generator, device=dev) < self.flip
        return top, left, flips

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        c, h, w = self.shape
        flat = x.dim() == 2
        if flat and x.shape[1] != c * h * w or not flat and tuple(x.shape[1:]) != self.shape:
            raise LifelongError(f"augmentation for images {self.shape} got a batch of shape {tuple(x.shape)}")
        n, p = x.shape[0], self.padding
        if n == 0:
            return x
        img = x.reshape(n, c, h, w)
        top, left, flips = (t.to(x.device) for t in self.draw(n, generator))
        padded = img.new_empty(n, c, h + 2 * p, w + 2 * p)
        padded[:] = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        padded[:, :, p:p + h, p:p + w] = img
        rows = top[:, None] + torch.arange(h, device=x.device)  # (n, h)
        cols = torch.arange(w, device=x.device).expand(n, w)
        cols = torch.where(flips[:, None], cols.flip(1), cols) + left[:, None]  # flip = read the crop backwards
        out = padded[torch.arange(n, device=x.device)[:, None, None, None],
                     torch.arange(c, device=x.device)[None, :, None, None], rows[:, None, :, None],
                     cols[:, None, None, :]]
        return out.reshape(n, -1) if flat else out


def standard_augment(shape: Sequence[int], mean: float | Sequence[float], std: float | Sequence[float],
                     scale: float = 1 / 255, padding: int = 4) -> CropFlip:
    """The papers' crop (padding 4) + flip for a dataset normalised as (x * scale - mean) / std."""
    c = int(shape[0])
    means = [float(mean)] * c if isinstance(mean, (int, float)) else [float(m) for m in mean]
    stds = [float(std)] * c if isinstance(std, (int, float)) else [float(s) for s in std]
    fill = [(0.0 * scale - m) / s for m, s in zip(means, stds, strict=True)]
    if not all(math.isfinite(f) for f in fill):
        raise LifelongError("augmentation: std must be non-zero")
    return CropFlip((c, int(shape[1]), int(shape[2])), padding=padding, fill=fill)
