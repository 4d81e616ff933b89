"""Readers of the standard image benchmarks' original archive formats, and CORe50's NI/NC/NIC protocols.

Every reader returns uint8 arrays of flat channel-major rows (N, C*H*W) and int64 labels. The small datasets
(CIFAR, SVHN, KMNIST) are read into memory. TinyImageNet and CORe50 are decoded once into uint8 `.npy` files in
the cache directory and opened memory-mapped, so rows stream from disk through the page cache.

Pickles (CIFAR batches, CORe50's tables) are read with an unpickler that admits only numpy arrays and plain
Python values, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lifelong.data.download import cache_dir, exclusive
from lifelong.errors import LifelongError

SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings, lists and dicts; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def load_pickle(raw: bytes, what: str) -> Any:
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any decoding failure is a corrupt or foreign file
        raise LifelongError(f"cannot read {what}: {err}"
                            f" (not the original file, or corrupt: delete or replace it)") from None


def key(d: dict, name: str, what: str) -> Any:
    """d[name] for pickles written by Python 2 (bytes keys) or 3 (str keys)."""
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise LifelongError(f"{what} has no '{name}' entry (not the original file)")


# --- CIFAR-10 / CIFAR-100 (python pickle batches in a .tar.gz) ---------------------------------------------


def tar_members(path: Path, wanted: Sequence[str]) -> dict[str, bytes]:
    """The named members' bytes (matched by their last path component)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    f = tar.extractfile(member)
                    out[base] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise LifelongError(f"cannot read {path}: {err} (corrupt or truncated archive: delete or replace it)") from None
    missing = [w for w in wanted if w not in out]
    if missing:
        raise LifelongError(f"{path} lacks {', '.join(missing)} (not the original archive)")
    return out


def cifar_batch(raw: bytes, what: str, label_keys: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    d = load_pickle(raw, what)
    if not isinstance(d, dict):
        raise LifelongError(f"{what} is not a CIFAR batch (a dict)")
    x = np.asarray(key(d, "data", what))
    labels = [np.asarray(key(d, k, what), dtype=np.int64) for k in label_keys]
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or any(len(y) != len(x) for y in labels):
        raise LifelongError(f"{what}: expected uint8 rows of 3072 values with one label each, got {x.dtype} "
                            f"{x.shape}")
    return x, labels


def read_cifar10(path: Path) -> dict[str, np.ndarray]:
    """cifar-10-python.tar.gz: data_batch_1..5 (train) and test_batch; rows are already R, G, B planes."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    raw = tar_members(path, names)
    parts = [cifar_batch(raw[n], f"{path}:{n}", ["labels"]) for n in names]
    return {"train_x": np.concatenate([p[0] for p in parts[:5]]),
            "train_y": np.concatenate([p[1][0] for p in parts[:5]]),
            "test_x": parts[5][0], "test_y": parts[5][1][0]}


def read_cifar100(path: Path) -> dict[str, np.ndarray]:
    """cifar-100-python.tar.gz: train and test with fine_labels (100) and coarse_labels (20)."""
    raw = tar_members(path, ["train", "test"])
    out: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        x, (fine, coarse) = cifar_batch(raw[part], f"{path}:{part}", ["fine_labels", "coarse_labels"])
        out[f"{part}_x"], out[f"{part}_y"], out[f"{part}_coarse"] = x, fine, coarse
    return out


def coarse_table(fine: np.ndarray, coarse: np.ndarray, n_fine: int) -> list[int]:
    """coarse_of[fine] from paired label arrays, checking that every fine class has one coarse class."""
    table = [-1] * n_fine
    for f, c in set(zip(fine.tolist(), coarse.tolist(), strict=True)):
        if table[f] not in (-1, c):
            raise LifelongError(f"fine class {f} appears under two coarse classes ({table[f]} and {c})")
        table[f] = c
    if -1 in table:
        raise LifelongError(f"fine classes {[i for i, c in enumerate(table) if c == -1]} have no coarse class")
    return table


# --- SVHN (.mat) and KMNIST (.npz) -------------------------------------------------------------------------


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """train_32x32.mat / test_32x32.mat: X is (32, 32, 3, N) uint8, y is (N, 1) with digit 0 stored as 10."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as err:  # noqa: BLE001 - scipy raises several types for a bad file
        raise LifelongError(f"cannot read {path}: {err}"
                            f" (not a MATLAB file, or corrupt: delete or replace it)") from None
    if "X" not in mat or "y" not in mat:
        raise LifelongError(f"{path} has no X and y arrays (not SVHN's cropped-digits file)")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise LifelongError(f"{path}: X has shape {x.shape}, expected (32, 32, 3, {len(y)})")
    y[y == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).reshape(len(y), -1).astype(np.uint8), y


def read_npz_array(path: Path) -> np.ndarray:
    """The single array ('arr_0') of an .npz file such as KMNIST's."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["arr_0"] if "arr_0" in f.files else f[f.files[0]]
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as err:
        raise LifelongError(f"cannot read {path}: {err}"
                            f" (not an .npz array file, or corrupt: delete or replace it)") from None


# --- decoded caches (memory-mapped) ------------------------------------------------------------------------


def decoded_dir(name: str, sources: Sequence[Path]) -> Path:
    """Where the decoded arrays of `sources` live: keyed by the sources' names, sizes and modification times."""
    h = hashlib.sha256()
    for p in sources:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return cache_dir(name) / f"decoded-{h.hexdigest()[:16]}"


def open_rows(path: Path) -> torch.Tensor:
    """A uint8 .npy of rows, memory-mapped copy-on-write: a writable tensor (no torch warning) whose pages come
    from the file on demand and are never written back."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def open_decoded(directory: Path) -> dict[str, Any] | None:
    """The decoded arrays of a finished cache directory (None when absent or unfinished)."""
    meta = directory / "meta.json"
    if not meta.is_file():
        return None
    out: dict[str, Any] = json.loads(meta.read_text())
    out["directory"] = str(directory)
    for part in ("train", "test"):
        out[f"{part}_x"] = open_rows(directory / f"{part}_x.npy")
        out[f"{part}_y"] = torch.from_numpy(np.load(directory / f"{part}_y.npy")).long()
    return out


def write_decoded(directory: Path, counts: dict[str, int], rows: Iterator[tuple[str, int, np.ndarray]],
                  labels: dict[str, np.ndarray], meta: dict[str, Any], width: int) -> dict[str, Any]:
    """Decode in one pass into `directory`: `rows` yields (part, row, flat uint8 values) for the parts in
    `counts`; meta.json is written last, so an interrupted decode is redone. Processes decoding the same cache
    take turns (`exclusive`): a later one finds it decoded."""
    with exclusive(directory):
        done = open_decoded(directory)
        return done if done is not None else _write_decoded(directory, counts, rows, labels, meta, width)


def _write_decoded(directory: Path, counts: dict[str, int], rows: Iterator[tuple[str, int, np.ndarray]],
                   labels: dict[str, np.ndarray], meta: dict[str, Any], width: int) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    out = {part: np.lib.format.open_memmap(directory / f"{part}_x.tmp.npy", mode="w+", dtype=np.uint8,
                                           shape=(n, width)) for part, n in counts.items()}
    for part, i, values in rows:
        out[part][i] = values
    for part in counts:
        out[part].flush()
        del out[part]
        (directory / f"{part}_x.tmp.npy").replace(directory / f"{part}_x.npy")
        np.save(directory / f"{part}_y.npy", labels[part].astype(np.int64))
    (directory / "meta.json").write_text(json.dumps(meta))
    decoded = open_decoded(directory)
    assert decoded is not None
    return decoded


# --- TinyImageNet (tiny-imagenet-200.zip of JPEGs) ---------------------------------------------------------


def decode_image(raw: bytes, size: tuple[int, int], what: str) -> np.ndarray:
    """One image file -> flat channel-major uint8 RGB of `size` (width, height); greyscale is made RGB."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            rgb = img.convert("RGB")
    except Exception as err:  # noqa: BLE001 - PIL raises several types for a bad image
        raise LifelongError(f"cannot decode {what}: {err}") from None
    if rgb.size != size:
        raise LifelongError(f"{what} is {rgb.size[0]}x{rgb.size[1]}, expected {size[0]}x{size[1]}")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)


def read_tiny_imagenet(path: Path) -> dict[str, Any]:
    """tiny-imagenet-200.zip: train/<wnid>/images/*.JPEG (500 per class) and val/images with
    val/val_annotations.txt (50 per class; the labelled test set). Classes are the sorted wnids (as
    torchvision's ImageFolder numbers them). Decoded once to a memory-mapped cache."""
    directory = decoded_dir("tiny-imagenet", [path])
    cached = open_decoded(directory)
    if cached is not None:
        return cached
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise LifelongError(f"cannot read {path}: {err} (corrupt or truncated zip: delete or replace it)") from None
    with zf:
        names = zf.namelist()
        train = sorted(n for n in names if re.search(r"/train/[^/]+/images/[^/]+\.jpe?g$", n, re.I))
        ann = [n for n in names if n.endswith("val/val_annotations.txt")]
        if not train or not ann:
            raise LifelongError(f"{path} has no train/<wnid>/images/*.JPEG or val/val_annotations.txt "
                                "(not tiny-imagenet-200.zip)")
        wnids = sorted({n.split("/")[-3] for n in train})
        label_of = {w: i for i, w in enumerate(wnids)}
        val_dir = ann[0][: -len("val_annotations.txt")] + "images/"
        val: list[tuple[str, int]] = []
        for line in zf.read(ann[0]).decode().splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                if fields[1] not in label_of:
                    raise LifelongError(f"{path}: validation image {fields[0]} has unknown class {fields[1]}")
                val.append((val_dir + fields[0], label_of[fields[1]]))
        val.sort()
        train_y = np.array([label_of[n.split("/")[-3]] for n in train])
        test_y = np.array([y for _, y in val])

        def rows() -> Iterator[tuple[str, int, np.ndarray]]:
            for part, members in (("train", train), ("test", [n for n, _ in val])):
                for i, n in enumerate(members):
                    yield part, i, decode_image(zf.read(n), (64, 64), f"{path}:{n}")

        return write_decoded(directory, {"train": len(train), "test": len(val)}, rows(),
                             {"train": train_y, "test": test_y}, {"wnids": wnids}, 3 * 64 * 64)


# --- CORe50 ------------------------------------------------------------------------------------------------

CORE50_TEST_SESSIONS = (3, 7, 10)
CORE50_PROTOCOL_BATCHES = {"ni": 8, "nc": 9, "nic": 79}
SESSION_OBJECT = re.compile(r"s(\d+)/o(\d+)/")


def read_core50_tables(directory: Path) -> dict[str, Any]:
    """paths.pkl (one relative path per image, e.g. s1/o1/C_01_01_000.png), LUP.pkl (LUP[scenario][run][batch]:
    image indices; the last batch is the test set) and labels.pkl (the same nesting: each image's label)."""
    out = {}
    for name in ("paths", "LUP", "labels"):
        value = load_pickle((directory / f"{name}.pkl").read_bytes(), f"{directory / name}.pkl")

        def plain(v: Any) -> Any:
            if isinstance(v, bytes):
                return v.decode()
            if isinstance(v, dict):
                return {plain(k): plain(x) for k, x in v.items()}
            if isinstance(v, (list, tuple, np.ndarray)):
                return [plain(x) for x in v]
            return v.item() if isinstance(v, np.generic) else v
        out[name] = plain(value)
    return out


def core50_npz_rows(path: Path) -> tuple[int, Callable[[], Iterator[np.ndarray]]]:
    """core50_imgs.npz's array 'x' (N, 128, 128, 3) uint8, read in chunks straight from the zip (never whole)."""
    per = 128 * 128 * 3

    def open_x(zf: zipfile.ZipFile) -> tuple[Any, tuple[int, ...]]:
        if "x.npy" not in zf.namelist():
            raise LifelongError(f"{path} has no array 'x' (not core50_imgs.npz)")
        f = zf.open("x.npy")
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        if fortran or dtype != np.uint8 or len(shape) != 4 or shape[1:] != (128, 128, 3):
            raise LifelongError(f"{path}: x is {dtype} {shape}, expected uint8 (N, 128, 128, 3)")
        return f, shape

    try:
        with zipfile.ZipFile(path) as zf:
            count = open_x(zf)[1][0]
    except (zipfile.BadZipFile, OSError) as err:
        raise LifelongError(f"cannot read {path}: {err} (corrupt or truncated: delete or replace it)") from None

    def chunks() -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as zf:
            f, _ = open_x(zf)
            with f:
                left = count
                while left:
                    n = min(left, 512)
                    buf = f.read(n * per)
                    if len(buf) != n * per:
                        raise LifelongError(f"{path} is truncated")
                    yield from np.frombuffer(buf, np.uint8).reshape(n, 128, 128, 3).transpose(0, 3, 1, 2) \
                        .reshape(n, -1)
                    left -= n
    return count, chunks


def core50_png_rows(path: Path, paths: list[str]) -> Callable[[], Iterator[np.ndarray]]:
    """The images of core50_128x128.zip in the order of paths.pkl."""
    def images() -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as zf:
            names = {n.split("core50_128x128/", 1)[-1]: n for n in zf.namelist() if n.lower().endswith(".png")}
            for p in paths:
                if p not in names:
                    raise LifelongError(f"{path} lacks {p} (listed in paths.pkl)")
                yield decode_image(zf.read(names[p]), (128, 128), f"{path}:{p}")
    return images


def read_core50(directory: Path, images: Path) -> dict[str, Any]:
    """CORe50 (50 objects in 10 categories of 5, 11 sessions): training sessions 1, 2, 4, 5, 6, 8, 9, 11 are
    the training set, sessions 3, 7, 10 the test set; the label is the object (0..49). `images` is
    core50_imgs.npz or core50_128x128.zip (in paths.pkl's order). Decoded once to a memory-mapped cache; the
    protocol tables ride along in the result ('tables', and 'row_of': image index -> row of its split)."""
    tables = read_core50_tables(directory)
    paths = tables["paths"]
    parsed = [SESSION_OBJECT.search(p) for p in paths]
    if not paths or any(m is None for m in parsed):
        raise LifelongError(f"{directory / 'paths.pkl'}: paths must look like s<session>/o<object>/...")
    session = np.array([int(m.group(1)) for m in parsed])  # type: ignore[union-attr]
    obj = np.array([int(m.group(2)) - 1 for m in parsed])  # type: ignore[union-attr]
    is_test = np.isin(session, CORE50_TEST_SESSIONS)
    row_of = np.zeros(len(paths), dtype=np.int64)
    row_of[~is_test] = np.arange(int((~is_test).sum()))
    row_of[is_test] = np.arange(int(is_test.sum()))
    directory_out = decoded_dir("core50", [images, directory / "paths.pkl"])
    decoded = open_decoded(directory_out)
    if decoded is None:
        if images.suffix == ".npz":
            count, chunks = core50_npz_rows(images)
            if count != len(paths):
                raise LifelongError(f"{images} holds {count} images but paths.pkl lists {len(paths)}")
        else:
            chunks = core50_png_rows(images, paths)
        rows = (("test" if is_test[i] else "train", int(row_of[i]), values) for i, values in enumerate(chunks()))
        decoded = write_decoded(directory_out, {"train": int((~is_test).sum()), "test": int(is_test.sum())}, rows,
                                {"train": obj[~is_test], "test": obj[is_test]}, {}, 3 * 128 * 128)
    decoded.update(tables=tables, row_of=row_of, is_test=is_test, session=session)
    return decoded


def core50_protocol(data: Any, n_experiences: int, class_order: Sequence[int] | None, seed: int,
                    shuffle: bool, protocol: str, run: int) -> Any:
    """The CORe50 `protocol` (ni, nc, nic) of run `run` (0..9), as its authors' LUP.pkl/labels.pkl define it:
    experience b trains on LUP[protocol][run][b]; every experience tests on LUP[protocol][run][-1] (sessions 3,
    7, 10). The batch count is fixed by the protocol; the class order is the protocol's (per run)."""
    from lifelong.data.stream import Experience, Stream

    extras = getattr(data, "extras", {}) or {}
    if "tables" not in extras:
        raise LifelongError(f"core50-{protocol} needs the core50 dataset (its protocol files), not '{data.name}'")
    if class_order is not None or shuffle:
        raise LifelongError(f"core50-{protocol} follows the protocol's own order: leave class_order and "
                            "shuffle_classes unset (choose one of its 10 orders with scenario_params run=N)")
    lup, labels = extras["tables"]["LUP"], extras["tables"]["labels"]
    if protocol not in lup:
        raise LifelongError(f"LUP.pkl has no '{protocol}' protocol (has {sorted(lup)})")
    if not 0 <= run < len(lup[protocol]):
        raise LifelongError(f"run={run} is out of range: CORe50 defines runs 0..{len(lup[protocol]) - 1}")
    batches = lup[protocol][run]
    n = len(batches) - 1
    if n_experiences != n:
        raise LifelongError(f"core50-{protocol} has {n} experiences (its protocol's batches), not {n_experiences}")
    row_of, is_test = torch.as_tensor(extras["row_of"]), torch.as_tensor(extras["is_test"])

    def rows(batch: int, test: bool) -> torch.Tensor:
        idx = torch.as_tensor(batches[batch], dtype=torch.long)
        if bool((is_test[idx] != test).any()):
            raise LifelongError(f"LUP.pkl {protocol} run {run} batch {batch} mixes training and test sessions")
        got = torch.as_tensor(labels[protocol][run][batch], dtype=torch.long)
        r = row_of[idx]
        stored = (data.test_y if test else data.train_y)[r]
        if len(got) != len(r) or not torch.equal(got, stored):
            raise LifelongError(f"labels.pkl disagrees with paths.pkl's objects ({protocol} run {run} batch {batch})")
        return r

    test_rows = rows(n, True)
    exps = []
    for b in range(n):
        train_rows = rows(b, False)
        classes = sorted(data.train_y[train_rows].unique().tolist())
        exps.append(Experience(b, data, train_rows, test_rows[torch.isin(data.test_y[test_rows],
                                                                         torch.tensor(classes))], classes))
    order = []
    for e in exps:
        order += [c for c in e.classes if c not in order]
    return Stream(f"core50-{protocol}", exps, data.num_classes, info={"class_order": order, "run": run})


def core50_ni(data: Any, n_experiences: int = 8, class_order: Sequence[int] | None = None, seed: int = 0,
              shuffle: bool = False, run: int = 0) -> Any:
    """CORe50 NI: 8 experiences, each one training session of all 50 objects (new instances)."""
    return core50_protocol(data, n_experiences, class_order, seed, shuffle, "ni", run)


def core50_nc(data: Any, n_experiences: int = 9, class_order: Sequence[int] | None = None, seed: int = 0,
              shuffle: bool = False, run: int = 0) -> Any:
    """CORe50 NC: 9 experiences of new objects (10 in the first, 5 in each next), all their training sessions."""
    return core50_protocol(data, n_experiences, class_order, seed, shuffle, "nc", run)


def core50_nic(data: Any, n_experiences: int = 79, class_order: Sequence[int] | None = None, seed: int = 0,
               shuffle: bool = False, run: int = 0) -> Any:
    """CORe50 NIC: 79 experiences of new instances and new classes."""
    return core50_protocol(data, n_experiences, class_order, seed, shuffle, "nic", run)
