"""Built-in datasets held as tensors in memory, and adapters for tensors, numpy arrays and torch datasets.

A dataset is four tensors (train/test inputs and labels). Images stay uint8 (4x less memory than float32);
`ArrayDataset.prepare` turns a batch into float32 on the fly, which costs microseconds per batch.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lifelong.errors import LifelongError
from lifelong.registry import Registry


def as_channels_first(x: Tensor, channels_last: bool | None = None) -> Tensor:
    """Image batches as (N, C, H, W): (N, H, W) gains a channel; (N, H, W, C) with C in 1/3/4 is detected as
    channels-last (or say so with `channels_last`) and transposed once; other shapes are returned unchanged."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        if channels_last is None:
            channels_last = x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
        return x.permute(0, 3, 1, 2).contiguous() if channels_last else x
    return x


@dataclass
class ArrayDataset:
    """Train and test tensors of one dataset. `scale` maps stored integers to floats (1/255 for images).

    Inputs are stored flat, one row per sample (compact, and every scenario transform works on rows);
    `shape` is the shape of one model input: (channels, height, width) for images, (features,) for vectors.
    Inputs given with more dimensions are read as images (see `as_channels_first`) and flattened once.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[int] = field(default_factory=list)
    scale: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.train_x.dim() > 2 or self.test_x.dim() > 2:
            self.train_x, self.test_x = as_channels_first(self.train_x), as_channels_first(self.test_x)
            if self.train_x.shape[1:] != self.test_x.shape[1:]:
                raise LifelongError(f"dataset '{self.name}': train inputs {tuple(self.train_x.shape[1:])} and "
                                    f"test inputs {tuple(self.test_x.shape[1:])} differ in shape")
            self.shape = self.shape or tuple(self.train_x.shape[1:])
            self.train_x, self.test_x = self.train_x.flatten(1), self.test_x.flatten(1)
        elif self.train_x.dim() < 2:
            raise LifelongError(f"dataset '{self.name}': inputs must have a sample dimension and features, got "
                                f"shape {tuple(self.train_x.shape)}")
        self.shape = tuple(int(d) for d in (self.shape or self.train_x.shape[1:]))
        if math.prod(self.shape) != self.train_x.shape[1]:
            raise LifelongError(f"dataset '{self.name}': shape {self.shape} does not hold the "
                                f"{self.train_x.shape[1]} values of each input")
        for part, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if len(x) != len(y):
                raise LifelongError(f"dataset '{self.name}': {part} has {len(x)} inputs but {len(y)} labels")
            if y.dtype != torch.long:
                raise LifelongError(f"dataset '{self.name}': {part} labels must be integers, got {y.dtype}")
        if not self.classes:
            self.classes = sorted(torch.cat([self.train_y, self.test_y]).unique().tolist())

    @property
    def num_classes(self) -> int:
        return max(self.classes) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape

    def prepare(self, x: Tensor) -> Tensor:
        """Stored inputs -> normalised float32 inputs for the model: (x * scale - mean) / std, in place."""
        out = x.to(torch.float32, copy=True)
        if self.scale != 1.0 or self.mean != 0.0 or self.std != 1.0:
            out.mul_(self.scale / self.std).sub_(self.mean / self.std)
        return out

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Move all tensors to `device` (data stays where the compute is)."""
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return ArrayDataset(self.name, **moved, classes=self.classes, scale=self.scale, mean=self.mean,
                            std=self.std, shape=self.shape)

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.train_x, self.train_y, self.test_x, self.test_y))

    def fingerprint(self) -> str:
        """SHA-256 of the inputs, labels, shape and normalisation (cached: ~60 ms for Fashion-MNIST)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256(repr((self.shape, self.scale, self.mean, self.std)).encode())
            for t in (self.train_x, self.train_y, self.test_x, self.test_y):
                t = t.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(memoryview(t.view(torch.uint8).numpy()) if t.numel() else b"")
            cached = self.__dict__["_fingerprint"] = h.hexdigest()
        return cached


def check_callable(name: str, obj: Any) -> None:
    if not callable(obj):
        raise LifelongError(f"'{name}' is not callable: a dataset loader is called as loader(root=...)")


DATASETS: Registry[Callable[..., ArrayDataset]] = Registry("dataset", "lifelong.datasets", check_callable)


def register_dataset(name: str, help: str) -> Callable[[Callable[..., ArrayDataset]], Callable[..., ArrayDataset]]:
    """Decorator registering a dataset loader under `name`; `help` is its line in `lifelong list`."""
    return DATASETS.register(name, help)


def load_dataset(name: str, root: str | os.PathLike | None = None) -> ArrayDataset:
    """Load a dataset by name (built-in, `package.module:loader`, or an entry point of `lifelong.datasets`).
    `root` is a directory to look in first (for file-based datasets)."""
    data = DATASETS.get(name)(root=root)
    if not isinstance(data, ArrayDataset):
        raise LifelongError(f"dataset '{name}' returned {type(data).__name__}, not an ArrayDataset (build one "
                            "with lifelong.data.from_tensors or from_torch_dataset)")
    return data


# --- Fashion-MNIST from IDX files -----------------------------------------------------------------------

FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
FASHION_HINT = (
    "Fashion-MNIST not found. Install it with 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), "
    "or download the four IDX .gz files into a directory and pass it with --data-dir (or LIFELONG_DATA)."
)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array, checking its header and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise LifelongError(f"cannot read {path}: {err} (the file is corrupt or truncated)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise LifelongError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LifelongError(f"{path} is truncated (header incomplete)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise LifelongError(f"{path} is corrupt: header says {size} bytes of data, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def fashion_mnist_dirs(root: str | os.PathLike | None) -> list[Path]:
    """Where to look for the IDX files: the given root, $LIFELONG_DATA, then the Debian package's directory."""
    dirs: list[Path] = []
    for d in (root, os.environ.get("LIFELONG_DATA")):
        if d:
            dirs += [Path(d), Path(d) / "fashion-mnist"]
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True,
                                 timeout=10).stdout.split()
        dirs += sorted({Path(p).parent for p in listing if p.endswith(FASHION_FILES["train_x"])})
    except (OSError, subprocess.SubprocessError):
        pass
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))
    return dirs


@register_dataset("fashion-mnist", "Fashion-MNIST, 60k/10k 28x28 grey images, 10 clothing classes (IDX files)")
def fashion_mnist(root: str | os.PathLike | None = None) -> ArrayDataset:
    for d in fashion_mnist_dirs(root):
        if all((d / f).is_file() for f in FASHION_FILES.values()):
            arrays = {k: read_idx(d / f) for k, f in FASHION_FILES.items()}
            break
    else:
        raise LifelongError(FASHION_HINT)
    for part in ("train", "test"):
        if len(arrays[f"{part}_x"]) != len(arrays[f"{part}_y"]):
            raise LifelongError(f"Fashion-MNIST {part} images and labels differ in count (corrupt files in {d})")
    return ArrayDataset(
        "fashion-mnist",
        train_x=torch.from_numpy(arrays["train_x"]).reshape(-1, 784),
        train_y=torch.from_numpy(arrays["train_y"]).long(),
        test_x=torch.from_numpy(arrays["test_x"]).reshape(-1, 784),
        test_y=torch.from_numpy(arrays["test_y"]).long(),
        scale=1 / 255, mean=0.2860, std=0.3530, shape=(1, 28, 28),
    )


@register_dataset("digits", "scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes): tiny, for tests")
def digits(root: str | os.PathLike | None = None, test_fraction: float = 0.25) -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.data.astype(np.uint8))  # values 0..16
    y = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return ArrayDataset("digits", x[train], y[train], x[test], y[test], scale=1 / 16, mean=0.3, std=0.38,
                        shape=(1, 8, 8))


@register_dataset("mnist1d", "MNIST-1D: 10 classes of 40-point 1-D signals, generated locally (4000/1000)")
def mnist1d(root: str | os.PathLike | None = None) -> ArrayDataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise LifelongError("mnist1d is not installed: pip install mnist1d") from None
    args = get_dataset_args()
    data = make_dataset(args)
    return ArrayDataset(
        "mnist1d",
        train_x=torch.as_tensor(np.asarray(data["x"]), dtype=torch.float32),
        train_y=torch.as_tensor(np.asarray(data["y"])).long(),
        test_x=torch.as_tensor(np.asarray(data["x_test"]), dtype=torch.float32),
        test_y=torch.as_tensor(np.asarray(data["y_test"])).long(),
    )


@register_dataset("fortunes-minilm", "English fortunes, 10 topic classes (200 each), as 384-d MiniLM sentence "
                  "embeddings (needs the fortunes package and lifelong[text]; embeddings cached)")
def fortunes_minilm(root: str | os.PathLike | None = None) -> ArrayDataset:
    """Inputs are the cached float32 MiniLM embeddings; `root` replaces the fortune files' directory."""
    from lifelong.analytic.features import FeatureCache
    from lifelong.analytic.text import FORTUNES_DIR, embed_texts, load_fortunes, stratified_split

    texts, labels, _ = load_fortunes(None, root or FORTUNES_DIR)
    emb = embed_texts(texts, cache=FeatureCache())
    train, test = stratified_split(labels, 0.25, 0)
    return ArrayDataset("fortunes-minilm", emb[train], labels[train], emb[test], labels[test])


# --- adapters ---------------------------------------------------------------------------------------------


def from_tensors(name: str, train: tuple[Any, Any], test: tuple[Any, Any], scale: float = 1.0,
                 channels_last: bool | None = None) -> ArrayDataset:
    """A dataset from (inputs, labels) pairs of tensors or numpy arrays. Images may come as (N, H, W),
    (N, C, H, W) or channels-last (N, H, W, C) (detected for 1/3/4 channels, or say `channels_last`)."""
    def t(a: Any) -> Tensor:
        return a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    tx, sx = (as_channels_first(t(x), channels_last) for x in (train[0], test[0]))
    return ArrayDataset(name, tx, t(train[1]).long(), sx, t(test[1]).long(), scale=scale)


def stack_torch_dataset(ds: Any) -> tuple[Tensor, Tensor]:
    """Read a map-style dataset (torch / torchvision / anything with __getitem__ -> (x, y)) into two tensors.

    torchvision datasets with `.data` and `.targets` are read directly, without per-sample transforms.
    """
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is not None and targets is not None and getattr(ds, "transform", None) is None:
        x = data if isinstance(data, Tensor) else torch.as_tensor(np.asarray(data))
        return x, torch.as_tensor(np.asarray(targets)).long()
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i][:2]
        xs.append(x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x)))
        ys.append(int(y))
    if not xs:
        raise LifelongError("the dataset is empty")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def from_torch_dataset(name: str, train: Any, test: Any, scale: float = 1.0,
                       channels_last: bool | None = None) -> ArrayDataset:
    """A dataset from two map-style torch datasets (e.g. torchvision.datasets.FashionMNIST or CIFAR10 objects:
    their `.data` is read directly, (N, 28, 28) grey or (N, 32, 32, 3) channels-last colour)."""
    return from_tensors(name, stack_torch_dataset(train), stack_torch_dataset(test), scale, channels_last)


def from_hf_dataset(name: str, train: Any, test: Any, x_column: str, y_column: str = "label",
                    scale: float = 1.0) -> ArrayDataset:
    """A dataset from two Hugging Face `datasets.Dataset` splits with an input and a label column."""
    def split(ds: Any) -> tuple[Tensor, Tensor]:
        for col in (x_column, y_column):
            if col not in ds.column_names:
                raise LifelongError(f"Hugging Face dataset has no column '{col}' (columns: {ds.column_names})")
        ds = ds.with_format("numpy")
        return torch.as_tensor(np.asarray(ds[x_column])), torch.as_tensor(np.asarray(ds[y_column])).long()
    return ArrayDataset(name, *split(train), *split(test), scale=scale)
