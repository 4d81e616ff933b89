"""Batched crop + flip against an independent per-sample computation."""

import pytest
import torch

from lifelong.data.augment import CropFlip, standard_augment
from lifelong.errors import LifelongError


def reference(x: torch.Tensor, top, left, flips, padding: int, fill) -> torch.Tensor:
    """Per sample: pad with the fill colour, slice the window at the drawn offsets, flip if drawn."""
    n, c, h, w = x.shape
    out = []
    for k in range(n):
        padded = torch.stack([torch.nn.functional.pad(x[k, ch], (padding,) * 4, value=fill[ch]) for ch in range(c)])
        crop = padded[:, top[k]:top[k] + h, left[k]:left[k] + w]
        out.append(crop.flip(-1) if flips[k] else crop)
    return torch.stack(out)


def test_crop_and_flip_equal_per_sample_slicing_of_the_padded_image():
    x = torch.randn(16, 3, 8, 6)
    aug = CropFlip((3, 8, 6), padding=4, fill=(-1.0, -2.0, -3.0))
    top, left, flips = aug.draw(16, torch.Generator().manual_seed(5))
    out = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(out, reference(x, top.tolist(), left.tolist(), flips.tolist(), 4, aug.fill))
    assert 0 <= top.min() and top.max() <= 8 and flips.any() and not flips.all()


def test_flat_rows_keep_shape_and_dtype_and_generator_determines_the_result():
    x = torch.randn(5, 3 * 4 * 4, dtype=torch.float64)
    aug = CropFlip((3, 4, 4), padding=2)
    a, b = aug(x, torch.Generator().manual_seed(1)), aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))


def test_padding_zero_flip_one_is_a_mirror():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    out = CropFlip((1, 2, 3), padding=0, flip=1.0)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x.flip(-1))
    assert torch.equal(CropFlip((1, 2, 3), padding=0, flip=0.0)(x, torch.Generator()), x)


def test_fill_is_the_normalised_black_pixel():
    aug = standard_augment((3, 32, 32), (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert aug.fill == (-1.0, -1.0, 0.0) and aug.padding == 4


def test_bad_batches_and_settings_are_one_line():
    aug = CropFlip((3, 4, 4))
    with pytest.raises(LifelongError, match="got a batch of shape"):
        aug(torch.zeros(2, 47), torch.Generator())
    with pytest.raises(LifelongError, match="fill has 2 values"):
        CropFlip((3, 4, 4), fill=(0.0, 1.0))
    with pytest.raises(LifelongError, match="needs image inputs"):
        CropFlip((48,))
