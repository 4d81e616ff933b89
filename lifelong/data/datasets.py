"""Built-in datasets held as tensors in memory, and adapters for tensors, numpy arrays and torch datasets.

A dataset is four tensors (train/test inputs and labels). Images stay uint8 (4x less memory than float32);
`ArrayDataset.prepare` turns a batch into float32 on the fly, which costs microseconds per batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import inspect
import json
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

from lifelong.data import archives
from lifelong.data.download import Remote, cache_dir, derived_cache_dir, locate
from lifelong.errors import LifelongError
from lifelong.registry import Registry
from lifelong.tracking.files import atomic_path


def as_channels_first(x: Tensor, channels_last: bool | None = None) -> Tensor:
    """Image batches as (N, C, H, W): (N, H, W) gains a channel; (N, H, W, C) with at most 4 channels, when
    its height has more than 4 rows, is detected as channels-last (or say so with `channels_last`) and
    transposed once; other shapes are returned unchanged. (Two-channel images were once left as they came and
    read as 28 channels of 28 x 2.)"""
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        if channels_last is None:
            channels_last = x.shape[3] <= 4 < x.shape[1]
        return x.permute(0, 3, 1, 2).contiguous() if channels_last else x
    return x


@dataclass
class ArrayDataset:
    """Train and test tensors of one dataset. `scale` maps stored integers to floats (1/255 for images).

    Inputs are stored flat, one row per sample (compact, and every scenario transform works on rows);
    `shape` is the shape of one model input: (channels, height, width) for images, (features,) for vectors.
    Inputs given with more dimensions are read as images (see `as_channels_first`) and flattened once.
    `mean`/`std` are one number, or one per channel of an image (C, H, W) (CIFAR's per-channel statistics).
    `coarse_of[fine]` is the coarse class of each fine class (CIFAR-100's 20 super-classes), for hierarchical
    streams. `augment(batch, generator)`, when set, is the training augmentation applied to prepared training
    inputs (never to buffers or evaluation). `default_model` names the backbone the standard papers use on this
    dataset. `extras` holds dataset-specific tables (CORe50's protocol files); inputs may be memory-mapped.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: list[int] = field(default_factory=list)
    scale: float = 1.0
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    shape: tuple[int, ...] = ()
    coarse_of: list[int] | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    default_model: str = ""
    extras: dict[str, Any] = field(default_factory=dict, repr=False)

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
        elif self.test_x.shape[1:] != self.train_x.shape[1:]:
            raise LifelongError(f"dataset '{self.name}': train inputs have {tuple(self.train_x.shape[1:])} "
                                f"features, test inputs {tuple(self.test_x.shape[1:])}")
        self.shape = tuple(int(d) for d in (self.shape or self.train_x.shape[1:]))
        if math.prod(self.shape) != self.train_x.shape[1]:
            raise LifelongError(f"dataset '{self.name}': shape {self.shape} does not hold the "
                                f"{self.train_x.shape[1]} values of each input")
        for part, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if y.dim() != 1:
                raise LifelongError(f"dataset '{self.name}': {part} labels must be one class id per sample (shape "
                                    f"(N,)), got shape {tuple(y.shape)}"
                                    + (" (one-hot? give y.argmax(1))" if y.dim() == 2 and y.shape[1] > 1 else ""))
            if len(x) == 0:
                raise LifelongError(f"dataset '{self.name}': the {part} split is empty")
            if len(x) != len(y):
                raise LifelongError(f"dataset '{self.name}': {part} has {len(x)} inputs but {len(y)} labels")
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                row = int((~torch.isfinite(x)).any(1).nonzero()[0])
                raise LifelongError(f"dataset '{self.name}': {part} input {row} holds NaN or infinite values")
            if y.dtype != torch.long:
                raise LifelongError(f"dataset '{self.name}': {part} labels must be integers, got {y.dtype}")
            if len(y) and int(y.min()) < 0:
                raise LifelongError(f"dataset '{self.name}': {part} labels must be class ids 0, 1, 2, ..., found "
                                    f"{int(y.min())}")
        if not self.classes:
            self.classes = sorted(torch.cat([self.train_y, self.test_y]).unique().tolist())
        for what in ("mean", "std"):
            value = getattr(self, what)
            if isinstance(value, (tuple, list)):
                if len(self.shape) != 3 or len(value) != self.shape[0]:
                    raise LifelongError(f"dataset '{self.name}': per-channel {what} {tuple(value)} needs image "
                                        f"inputs with {len(value)} channels, not inputs of shape {self.shape}")
                setattr(self, what, tuple(float(v) for v in value))
        if isinstance(self.std, tuple) and min(self.std) <= 0 or not isinstance(self.std, tuple) and self.std <= 0:
            raise LifelongError(f"dataset '{self.name}': std {self.std} must be positive")
        if self.coarse_of is not None and len(self.coarse_of) < self.num_classes:
            raise LifelongError(f"dataset '{self.name}': coarse_of has {len(self.coarse_of)} entries for "
                                f"{self.num_classes} classes")

    @property
    def num_classes(self) -> int:
        return max(self.classes) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape

    def prepare(self, x: Tensor) -> Tensor:
        """Stored inputs -> normalised float32 inputs for the model: (x * scale - mean) / std, in place
        (per channel when `mean`/`std` are per channel)."""
        out = x.to(torch.float32, copy=True)
        if isinstance(self.mean, tuple) or isinstance(self.std, tuple):
            factor, offset = self.channel_affine(out.device)
            out.mul_(factor).sub_(offset)
        elif self.scale != 1.0 or self.mean != 0.0 or self.std != 1.0:
            out.mul_(self.scale / self.std).sub_(self.mean / self.std)
        return out

    def channel_affine(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per-feature (scale / std, mean / std) of flat image rows, channel-major (cached per device)."""
        cache = self.__dict__.setdefault("_affine", {})
        if device not in cache:
            c, pixels = self.shape[0], math.prod(self.shape[1:])
            mean = torch.tensor(self.mean if isinstance(self.mean, tuple) else (self.mean,) * c, dtype=torch.float64)
            std = torch.tensor(self.std if isinstance(self.std, tuple) else (self.std,) * c, dtype=torch.float64)
            cache[device] = tuple((v.repeat_interleave(pixels)).to(torch.float32).to(device)
                                  for v in (self.scale / std, mean / std))
        return cache[device]

    def to(self, device: torch.device | str) -> ArrayDataset:
        """Move all tensors to `device` (data stays where the compute is)."""
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return dataclasses.replace(self, **moved)

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.train_x, self.train_y, self.test_x, self.test_y))

    def fingerprint(self) -> str:
        """SHA-256 of the inputs, labels, shape and normalisation (cached: ~60 ms for Fashion-MNIST)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256(repr((self.shape, self.scale, self.mean, self.std)).encode())
            if self.coarse_of is not None:
                h.update(repr(list(self.coarse_of)).encode())
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


def load_dataset(name: str, root: str | os.PathLike | None = None, **options: Any) -> ArrayDataset:
    """Load a dataset by name (built-in, `package.module:loader`, or an entry point of `lifelong.datasets`).
    `root` is a directory to look in first (for file-based datasets); `options` go to the loader (e.g.
    augment=False for the standard image benchmarks)."""
    loader = DATASETS.get(name)
    try:
        takes = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a callable without a signature: call it as documented
        takes = {"root": None}
    if "root" in takes or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in takes.values()):
        data = loader(root=root, **options)
    elif root is None:
        data = loader(**options)  # a loader of the user's own data, which needs no directory
    else:
        raise LifelongError(f"dataset loader '{name}' takes no root argument, so --data-dir {root} cannot reach it: "
                            "add a root=None parameter to it, or leave --data-dir out")
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
    """Read one IDX file (optionally gzip-compressed) into a numpy array, checking its header and size.

    A gzip-compressed file is decoded once and kept uncompressed in derived_cache_dir("idx"), named by the
    file's path, size, inode and modification and change times, so any rewrite of the file is decoded again
    (and the copy of its earlier version removed)
    (decoding Fashion-MNIST's training images costs ~0.3 s a process, reading the kept array ~0.03 s); a kept
    array that cannot be read, or a cache that cannot be written, is passed over."""
    kept = decoded_idx_path(path)
    if kept is not None and kept.is_file():
        with contextlib.suppress(OSError, ValueError, EOFError):
            return np.load(kept, allow_pickle=False)
    array = decode_idx(path)
    if kept is not None:
        with contextlib.suppress(OSError):
            with atomic_path(kept) as tmp, open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
            for stale in kept.parent.glob(kept.name.rsplit("-", 1)[0] + "-*.npy"):
                if stale != kept:  # the same source's earlier versions: one kept copy per file
                    stale.unlink(missing_ok=True)
    return array


def decoded_idx_path(path: Path) -> Path | None:
    """Where the decoded array of the gzip-compressed IDX file `path` is kept (None: not compressed, or gone)."""
    if path.suffix != ".gz":
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    source = str(path.resolve())
    stamp = f"{source}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"  # any rewrite: a new key
    place, version = (hashlib.sha256(t.encode()).hexdigest()[:16] for t in (source, stamp))
    return derived_cache_dir("idx") / f"{path.name[:-3]}-{place}-{version}.npy"


def decode_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise LifelongError(f"cannot read {path}: {err}"
                            f" (the file is corrupt or truncated: delete or replace it)") from None
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


# --- standard image benchmarks (original archives, downloaded on first use) ------------------------------
# Normalisation statistics as Mammoth's dataset classes use them (CORe50: ImageNet's, as Avalanche uses them).
# Training augmentation (crop with padding 4 + horizontal flip) is on by default where the papers use it;
# pass augment=False to the loader (load_dataset(name, augment=False)) or set `data.augment = None` to drop it.

TORONTO = "https://www.cs.toronto.edu/~kriz/"
CIFAR10_FILE = Remote("cifar-10-python.tar.gz", TORONTO + "cifar-10-python.tar.gz",
                      md5="c58f30108f718f92721af3b95e74349a")
CIFAR100_FILE = Remote("cifar-100-python.tar.gz", TORONTO + "cifar-100-python.tar.gz",
                       md5="eb9058c3a382ffc7106e4002c42a8d85")
TINY_IMAGENET_FILE = Remote("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                            md5="90528d7ca1a48142e341f4ef8d21d0de")
SVHN_FILES = (Remote("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                     md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
              Remote("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                     md5="eb5a983be6a315427106f1b164d9cef3"))
KMNIST_FILES = tuple(Remote(f"kmnist-{part}-{kind}.npz", f"http://codh.rois.ac.jp/kmnist/dataset/kmnist/kmnist-"
                            f"{part}-{kind}.npz") for part in ("train", "test") for kind in ("imgs", "labels"))
CORE50_PAGES = "https://vlomonaco.github.io/core50/data/"
CORE50_TABLES = (Remote("paths.pkl", CORE50_PAGES + "paths.pkl", md5="b568f86998849184df3ec3465290f1b0"),
                 Remote("LUP.pkl", CORE50_PAGES + "LUP.pkl", md5="33afc26faa460aca98739137fdfa606e"),
                 Remote("labels.pkl", CORE50_PAGES + "labels.pkl", md5="281c95774306a2196f4505f22fd60ab1"))
CORE50_NPZ = Remote("core50_imgs.npz", "http://bias.csr.unibo.it/maltoni/download/core50/core50_imgs.npz",
                    md5="3689d65d0a1c760b87821b114c8c4c6c")
CORE50_ZIP = Remote("core50_128x128.zip", "http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip",
                    md5="745f3373fed08d69343f1058ee559e13")

CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
TINY_IMAGENET_STATS = ((0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def image_benchmark(name: str, arrays: dict[str, Any], shape: tuple[int, int, int],
                    stats: tuple[Any, Any], augment: bool, **fields: Any) -> ArrayDataset:
    """An ArrayDataset of uint8 rows with the papers' normalisation, crop+flip augmentation and backbone."""
    from lifelong.data.augment import standard_augment

    def t(a: Any) -> Tensor:
        return a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    mean, std = stats
    return ArrayDataset(name, t(arrays["train_x"]), t(arrays["train_y"]).long(), t(arrays["test_x"]),
                        t(arrays["test_y"]).long(), scale=1 / 255, mean=mean, std=std, shape=shape,
                        augment=standard_augment(shape, mean, std) if augment else None,
                        default_model="resnet18", **fields)


def remember_fingerprint(data: ArrayDataset, directory: str) -> ArrayDataset:
    """Memory-mapped datasets hash their inputs once (at decode time) and keep the hash next to the cache."""
    path = Path(directory) / "fingerprints.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    key = repr((data.shape, data.scale, data.mean, data.std))
    if key in known:
        data.__dict__["_fingerprint"] = known[key]
    else:
        known[key] = data.fingerprint()
        path.write_text(json.dumps(known))
    return data


@register_dataset("cifar10", "CIFAR-10, 50k/10k 32x32 colour images, 10 classes (downloaded: 163 MB)")
def cifar10(root: str | os.PathLike | None = None, augment: bool = True) -> ArrayDataset:
    path = locate("cifar10", [CIFAR10_FILE], root) / CIFAR10_FILE.filename
    return image_benchmark("cifar10", archives.read_cifar10(path), (3, 32, 32), CIFAR10_STATS, augment)


@register_dataset("cifar100", "CIFAR-100, 50k/10k 32x32 colour images, 100 classes in 20 super-classes "
                  "(downloaded: 161 MB)")
def cifar100(root: str | os.PathLike | None = None, augment: bool = True) -> ArrayDataset:
    path = locate("cifar100", [CIFAR100_FILE], root) / CIFAR100_FILE.filename
    arrays = archives.read_cifar100(path)
    coarse = archives.coarse_table(np.concatenate([arrays["train_y"], arrays["test_y"]]),
                                   np.concatenate([arrays["train_coarse"], arrays["test_coarse"]]), 100)
    return image_benchmark("cifar100", arrays, (3, 32, 32), CIFAR100_STATS, augment, coarse_of=coarse)


@register_dataset("tiny-imagenet", "TinyImageNet, 100k/10k 64x64 colour images, 200 classes (downloaded: 237 MB; "
                  "decoded once to a 1.3 GB memory-mapped cache)")
def tiny_imagenet(root: str | os.PathLike | None = None, augment: bool = True) -> ArrayDataset:
    path = locate("tiny-imagenet", [TINY_IMAGENET_FILE], root) / TINY_IMAGENET_FILE.filename
    arrays = archives.read_tiny_imagenet(path)
    data = image_benchmark("tiny-imagenet", arrays, (3, 64, 64), TINY_IMAGENET_STATS, augment,
                           extras={"wnids": arrays["wnids"]})
    return remember_fingerprint(data, arrays["directory"])


@register_dataset("core50", "CORe50, 50 objects (10 categories) in 11 sessions, 128x128 colour; test sessions 3, "
                  "7, 10 (downloaded: core50_imgs.npz or core50_128x128.zip + protocol tables; memory-mapped)")
def core50(root: str | os.PathLike | None = None, augment: bool = True) -> ArrayDataset:
    """Labels are the 50 objects; `coarse_of` maps each to its category (object // 5). Augmentation is the
    horizontal flip only, as Avalanche's CORe50 benchmark uses it."""
    from lifelong.data.augment import CropFlip

    images = None
    if root:
        for d in (Path(root), Path(root) / "core50"):
            images = next((d / r.filename for r in (CORE50_NPZ, CORE50_ZIP) if (d / r.filename).is_file()), None)
            if images is not None:
                break
    else:
        cached = cache_dir("core50")
        images = next((cached / r.filename for r in (CORE50_NPZ, CORE50_ZIP) if (cached / r.filename).is_file()),
                      None)
    if images is None:
        images = locate("core50", [CORE50_NPZ], root) / CORE50_NPZ.filename
    tables_dir = locate("core50", CORE50_TABLES, images.parent if root else None)
    arrays = archives.read_core50(tables_dir, images)
    mean, std = IMAGENET_STATS
    data = image_benchmark("core50", arrays, (3, 128, 128), IMAGENET_STATS, False,
                           coarse_of=[o // 5 for o in range(50)], classes=list(range(50)),
                           extras={k: arrays[k] for k in ("tables", "row_of", "is_test", "session")})
    if augment:
        data.augment = CropFlip((3, 128, 128), padding=0, fill=[-m / s for m, s in zip(mean, std, strict=True)])
    return remember_fingerprint(data, arrays["directory"])


@register_dataset("svhn", "SVHN cropped digits, 73k/26k 32x32 colour images, 10 classes (downloaded: 246 MB)")
def svhn(root: str | os.PathLike | None = None, augment: bool = False) -> ArrayDataset:
    """No augmentation by default (flipping digits changes them); augment=True adds the crop + flip."""
    where = locate("svhn", SVHN_FILES, root)
    (train_x, train_y), (test_x, test_y) = (archives.read_svhn_mat(where / r.filename) for r in SVHN_FILES)
    return image_benchmark("svhn", {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y},
                           (3, 32, 32), SVHN_STATS, augment)


@register_dataset("kmnist", "Kuzushiji-MNIST, 60k/10k 28x28 grey images of 10 cursive Japanese characters "
                  "(downloaded: 20 MB)")
def kmnist(root: str | os.PathLike | None = None) -> ArrayDataset:
    where = locate("kmnist", KMNIST_FILES, root)
    arrays = {f"{part}_{k}": archives.read_npz_array(where / f"kmnist-{part}-{kind}.npz")
              for part in ("train", "test") for k, kind in (("x", "imgs"), ("y", "labels"))}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
            raise LifelongError(f"kmnist {part}: images {x.dtype} {x.shape} and {len(y)} labels; expected uint8 "
                                "(N, 28, 28) with one label each")
        arrays[f"{part}_x"] = x.reshape(len(x), -1)
        arrays[f"{part}_y"] = y.astype(np.int64)
    return ArrayDataset("kmnist", *(torch.from_numpy(arrays[k]) for k in ("train_x", "train_y", "test_x", "test_y")),
                        scale=1 / 255, mean=0.1918, std=0.3483, shape=(1, 28, 28))


# --- adapters ---------------------------------------------------------------------------------------------


def from_tensors(name: str, train: tuple[Any, Any], test: tuple[Any, Any], scale: float | None = None,
                 channels_last: bool | None = None) -> ArrayDataset:
    """A dataset from (inputs, labels) pairs of tensors or numpy arrays. Images may come as (N, H, W),
    (N, C, H, W) or channels-last (N, H, W, C) (detected up to 4 channels, or say `channels_last`).
    `scale` multiplies the stored values when a batch is prepared; by default 1/255 for uint8 inputs (image
    bytes, as the built-in datasets: unscaled 0-255 inputs trained at chance with the default MLP) and 1
    otherwise."""
    def t(a: Any) -> Tensor:
        return a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    tx, sx = (as_channels_first(t(x), channels_last) for x in (train[0], test[0]))
    return ArrayDataset(name, tx, as_labels(train[1], name, "train"), sx, as_labels(test[1], name, "test"),
                        scale=default_scale(tx, scale))


def default_scale(x: Tensor, scale: float | None) -> float:
    """`scale` if given, else 1/255 for uint8 inputs (image bytes) and 1 for others."""
    if scale is not None:
        return scale
    return 1 / 255 if x.dtype == torch.uint8 else 1.0


def as_labels(labels: Any, name: str, part: str) -> Tensor:
    """Class ids as int64; refuses, in one line, labels that are not whole numbers (names, fractions)."""
    if not isinstance(labels, Tensor):
        array = np.asarray(labels)
        if array.dtype.kind not in "biuf":
            raise LifelongError(f"dataset '{name}': {part} labels must be class ids 0, 1, 2, ..., not {array.dtype} "
                                "values: map them to ids first (np.unique(labels, return_inverse=True)[1])")
        labels = torch.as_tensor(array)
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise LifelongError(f"dataset '{name}': {part} labels must be whole class ids, found fractional values")
    return labels.long()


def stack_torch_dataset(ds: Any) -> tuple[Tensor, Tensor]:
    """Read a map-style dataset (torch / torchvision / anything with __getitem__ -> (x, y)) into two tensors.

    torchvision datasets with `.data` and `.targets` are read directly, without per-sample transforms.
    """
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is not None and targets is not None and getattr(ds, "transform", None) is None:
        x = data if isinstance(data, Tensor) else torch.as_tensor(np.asarray(data))
        return x, as_labels(targets, type(ds).__name__, "the")
    xs, ys = [], []
    for i in range(len(ds)):
        x, y = ds[i][:2]
        xs.append(x if isinstance(x, Tensor) else torch.as_tensor(np.array(x)))  # a copy: PIL arrays are read-only
        ys.append(int(y))
    if not xs:
        raise LifelongError("the dataset is empty")
    check_same_shapes([tuple(x.shape) for x in xs], type(ds).__name__)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def check_same_shapes(shapes: list[tuple[int, ...]], name: str) -> None:
    """Refuse, in one line, samples of different shapes (images of several sizes, or grey mixed with colour)."""
    other = next((i for i, s in enumerate(shapes) if s != shapes[0]), None)
    if other is not None:
        raise LifelongError(f"{name}: samples have different shapes ({shapes[0]} for sample 0, {shapes[other]} for "
                            f"sample {other}): give them one size and mode first (e.g. a transform with Resize and "
                            "convert('RGB'))")


def from_torch_dataset(name: str, train: Any, test: Any, scale: float | None = None,
                       channels_last: bool | None = None) -> ArrayDataset:
    """A dataset from two map-style torch datasets (e.g. torchvision.datasets.FashionMNIST or CIFAR10 objects:
    their `.data` is read directly, (N, 28, 28) grey or (N, 32, 32, 3) channels-last colour). `scale`: as
    `from_tensors` (uint8 images become 0..1)."""
    return from_tensors(name, stack_torch_dataset(train), stack_torch_dataset(test), scale, channels_last)


def from_hf_dataset(name: str, train: Any, test: Any, x_column: str, y_column: str = "label",
                    scale: float | None = None) -> ArrayDataset:
    """A dataset from two Hugging Face `datasets.Dataset` splits with an input and a label column. `scale`: as
    `from_tensors` (uint8 images become 0..1)."""
    def split(ds: Any) -> tuple[Tensor, Tensor]:
        for col in (x_column, y_column):
            if col not in ds.column_names:
                raise LifelongError(f"Hugging Face dataset has no column '{col}' (columns: {ds.column_names})")
        ds = ds.with_format("numpy")
        try:
            x = np.asarray(ds[x_column])
        except ValueError:  # numpy's "inhomogeneous shape": images of several sizes or modes
            check_same_shapes([tuple(np.shape(v)) for v in ds[x_column]], f"column '{x_column}'")
            raise
        if x.dtype == object:
            check_same_shapes([tuple(np.shape(v)) for v in x], f"column '{x_column}'")
        return torch.as_tensor(x), as_labels(ds[y_column], name, f"column '{y_column}'")
    train_x, train_y = split(train)
    return ArrayDataset(name, train_x, train_y, *split(test), scale=default_scale(train_x, scale))
