"""Each standard benchmark read from small archives built here in the original format, served on loopback."""

import hashlib
import io
import pickle
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
from test_download import serve

from lifelong.data import archives
from lifelong.data import datasets as D
from lifelong.data.download import Remote
from lifelong.errors import LifelongError

RNG = np.random.default_rng(0)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def with_md5(monkeypatch, attr: str, bodies: dict[str, bytes]) -> None:
    """Point the dataset's Remote(s) at the test archives' md5s (the official ones are for the real files)."""
    old = getattr(D, attr)
    fix = [Remote(r.filename, r.url, md5=hashlib.md5(bodies[r.filename]).hexdigest())
           for r in (old if isinstance(old, tuple) else (old,))]
    monkeypatch.setattr(D, attr, tuple(fix) if isinstance(old, tuple) else fix[0])


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def cifar10_archive(per_batch: int = 3):
    """data_batch_1..5 + test_batch pickles (bytes keys, as the Python 2 originals) of random images."""
    members, xs, ys = {}, [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = RNG.integers(0, 10, per_batch).tolist()
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps({b"data": x, b"labels": y, b"batch_label": b"b"})
        xs.append(x)
        ys.append(y)
    return tar_gz(members), xs, ys


def test_cifar10_downloads_and_round_trips(cache, monkeypatch):
    body, xs, ys = cifar10_archive()
    with_md5(monkeypatch, "CIFAR10_FILE", {"cifar-10-python.tar.gz": body})
    with serve({"cifar-10-python.tar.gz": body}) as server:
        monkeypatch.setenv("LIFELONG_DATA_URL", server.url)
        data = D.load_dataset("cifar10")
    assert data.shape == (3, 32, 32) and data.train_x.dtype == torch.uint8 and len(data.train_x) == 15
    assert torch.equal(data.train_x, torch.from_numpy(np.concatenate(xs[:5])))
    assert data.train_y.tolist() == sum(ys[:5], []) and data.test_y.tolist() == ys[5]
    # pixel (c, i, j) of an image is row value c*1024 + i*32 + j; normalised per channel
    img = data.prepare(data.test_x[:1]).view(3, 32, 32)
    raw = xs[5][0].reshape(3, 32, 32).astype(np.float64) / 255
    mean, std = (np.array(v).reshape(3, 1, 1) for v in D.CIFAR10_STATS)
    assert np.allclose(img.numpy(), (raw - mean) / std, atol=1e-5)
    assert data.augment is not None and data.default_model == "resnet18"
    assert D.load_dataset("cifar10", augment=False).augment is None  # now from the cache, no server
    assert (cache / "cifar10" / "cifar-10-python.tar.gz").is_file()


def test_cifar100_carries_coarse_labels(tmp_path):
    fine = np.arange(100).repeat(2)
    coarse = fine // 5
    batch = {b"data": RNG.integers(0, 256, (200, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
             b"coarse_labels": coarse.tolist()}
    body = tar_gz({"cifar-100-python/train": pickle.dumps(batch), "cifar-100-python/test": pickle.dumps(batch)})
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(body)
    data = D.load_dataset("cifar100", root=tmp_path)  # --data-dir: no network
    assert data.num_classes == 100 and data.coarse_of == [f // 5 for f in range(100)]


def test_cifar_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    members = {f"cifar-10-batches-py/{n}": pickle.dumps(Evil()) for n in
               [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(tar_gz(members))
    with pytest.raises(LifelongError, match="unexpected object builtins.print"):
        D.load_dataset("cifar10", root=tmp_path)


def test_svhn_mat_label_10_is_0(tmp_path):
    from scipy.io import savemat

    for part, n in (("train", 5), ("test", 3)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [10], [9]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{part}_32x32.mat", {"X": x, "y": y})
        if part == "test":
            test_x, test_y = x, y
    data = D.load_dataset("svhn", root=tmp_path)
    assert data.test_y.tolist() == [0, 1, 2] and data.shape == (3, 32, 32)
    # row of image k is its (C, H, W) planes: X[h, w, c, k] sits at c*1024 + h*32 + w
    assert torch.equal(data.test_x[2].view(3, 32, 32), torch.from_numpy(test_x[..., 2].transpose(2, 0, 1).copy()))
    assert test_y.shape == (3, 1) and data.augment is None


def test_kmnist_npz(tmp_path):
    for part, n in (("train", 6), ("test", 4)):
        np.savez(tmp_path / f"kmnist-{part}-imgs.npz", RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        np.savez(tmp_path / f"kmnist-{part}-labels.npz", np.arange(n) % 10)
    data = D.load_dataset("kmnist", root=tmp_path)
    assert data.shape == (1, 28, 28) and data.train_y.tolist() == list(range(6)) and len(data.test_x) == 4


def jpeg(seed: int, grey: bool = False) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    arr = np.full((64, 64, 3), seed * 40 % 256, dtype=np.uint8)  # flat colours survive JPEG almost exactly
    arr[..., 1] = 255 - arr[..., 0]
    img = Image.fromarray(arr[..., 0] if grey else arr)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_tiny_imagenet_zip_is_decoded_once_and_memory_mapped(cache, monkeypatch):
    files, expect = {}, {}
    wnids = ["n02", "n01"]  # classes are the sorted wnids: n01 -> 0, n02 -> 1
    for k, w in enumerate(wnids):
        for i in range(2):
            raw, arr = jpeg(k * 2 + i, grey=(i == 1))
            files[f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG"] = raw
            expect[(w, i)] = arr
    ann = []
    for i, w in enumerate(wnids):
        raw, arr = jpeg(5 + i)
        files[f"tiny-imagenet-200/val/images/val_{i}.JPEG"] = raw
        ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
        expect[("val", i)] = arr
    files["tiny-imagenet-200/val/val_annotations.txt"] = "\n".join(ann).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    body = buf.getvalue()
    with_md5(monkeypatch, "TINY_IMAGENET_FILE", {"tiny-imagenet-200.zip": body})
    with serve({"tiny-imagenet-200.zip": body}) as server:
        monkeypatch.setenv("LIFELONG_DATA_URL", server.url)
        data = D.load_dataset("tiny-imagenet")
    assert data.train_y.tolist() == [0, 0, 1, 1] and data.test_y.tolist() == [1, 0]
    assert torch.equal(data.train_x[1].view(3, 64, 64), torch.from_numpy(expect[("n01", 1)].transpose(2, 0, 1)))
    assert torch.equal(data.test_x[0].view(3, 64, 64), torch.from_numpy(expect[("val", 0)].transpose(2, 0, 1)))
    fp = data.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only memory map would warn (non-writable tensor)
        again = D.load_dataset("tiny-imagenet")  # from the decoded cache
        picked = again.train_x.index_select(0, torch.tensor([3, 0]))  # the engine's gather on mapped rows
    assert again.__dict__.get("_fingerprint") == fp
    assert torch.equal(picked, data.train_x[[3, 0]])
    files = list((cache / "tiny-imagenet").glob("decoded-*/train_x.npy"))
    assert len(files) == 1 and np.load(files[0], mmap_mode="r").shape == (4, 3 * 64 * 64)


def core50_files(tmp_path, as_zip: bool = False):
    """11 sessions x 4 objects (o1, o2 of category 0; o6, o7 of category 1), one image each; NI: one batch per
    training session; NC: two batches of two objects; the last batch is the test set (sessions 3, 7, 10)."""
    objects = [1, 2, 6, 7]
    paths = [f"s{s}/o{o}/C_{s:02d}_{o:02d}_000.png" for s in range(1, 12) for o in objects]
    x = RNG.integers(0, 256, (len(paths), 128, 128, 3), dtype=np.uint8)
    label = [int(p.split("/o")[1].split("/")[0]) - 1 for p in paths]
    session = [int(p[1:].split("/")[0]) for p in paths]
    train_sessions = [s for s in range(1, 12) if s not in (3, 7, 10)]
    test = [i for i, s in enumerate(session) if s in (3, 7, 10)]
    ni = [[i for i, s in enumerate(session) if s == t] for t in train_sessions] + [test]
    nc_objs = [[1, 6], [2, 7]]
    nc = [[i for i, p in enumerate(paths) if session[i] not in (3, 7, 10) and label[i] + 1 in objs]
          for objs in nc_objs] + [test]
    lup = {"ni": [ni], "nc": [nc]}
    labels = {k: [[[label[i] for i in b] for b in v[0]]] for k, v in lup.items()}
    for name, value in (("paths", paths), ("LUP", lup), ("labels", labels)):
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(value, protocol=2))
    if as_zip:
        from PIL import Image

        with zipfile.ZipFile(tmp_path / "core50_128x128.zip", "w") as zf:
            for p, img in zip(paths, x, strict=True):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                zf.writestr("core50_128x128/" + p, buf.getvalue())
    else:
        np.savez(tmp_path / "core50_imgs.npz", x=x)
    return x, label, session


@pytest.mark.parametrize("as_zip", [False, True])
def test_core50_reads_npz_or_png_zip_and_builds_ni_nc(tmp_path, cache, as_zip):
    x, label, session = core50_files(tmp_path, as_zip)
    data = D.load_dataset("core50", root=tmp_path)
    train = [i for i, s in enumerate(session) if s not in (3, 7, 10)]
    test = [i for i, s in enumerate(session) if s in (3, 7, 10)]
    assert data.train_y.tolist() == [label[i] for i in train] and data.test_y.tolist() == [label[i] for i in test]
    assert torch.equal(data.test_x[5].view(3, 128, 128), torch.from_numpy(x[test[5]].transpose(2, 0, 1).copy()))
    assert data.coarse_of[:10] == [0] * 5 + [1] * 5 and data.num_classes == 50

    ni = archives.core50_ni(data, 8)
    assert len(ni.experiences) == 8
    train_sessions = [1, 2, 4, 5, 6, 8, 9, 11]
    for k, e in enumerate(ni.experiences):  # experience k = k-th training session, every object
        sessions = {session[train[r]] for r in e.train_idx.tolist()}
        assert sessions == {train_sessions[k]} and e.classes == [0, 1, 5, 6] and len(e.test_idx) == len(test)
    nc = archives.core50_nc(data, 2)
    assert [e.classes for e in nc.experiences] == [[0, 5], [1, 6]]
    assert all(set(data.test_y[e.test_idx].tolist()) == set(e.classes) for e in nc.experiences)
    with pytest.raises(LifelongError, match="has 2 experiences"):
        archives.core50_nc(data, 9)
    with pytest.raises(LifelongError, match="run=3 is out of range"):
        archives.core50_ni(data, 8, run=3)
    with pytest.raises(LifelongError, match="needs the core50 dataset"):
        archives.core50_ni(D.ArrayDataset("toy", data.train_x[:2], data.train_y[:2], data.test_x[:2],
                                          data.test_y[:2]), 8)


def test_core50_labels_must_agree_with_paths(tmp_path, cache):
    core50_files(tmp_path)
    labels = pickle.loads((tmp_path / "labels.pkl").read_bytes())
    labels["nc"][0][0][0] = 49
    (tmp_path / "labels.pkl").write_bytes(pickle.dumps(labels))
    data = D.load_dataset("core50", root=tmp_path)
    with pytest.raises(LifelongError, match="labels.pkl disagrees"):
        archives.core50_nc(data, 2)


def test_missing_files_in_data_dir_say_where(tmp_path):
    with pytest.raises(LifelongError, match="does not hold cifar-10-python.tar.gz.*put cifar-10-python.tar.gz"):
        D.load_dataset("cifar10", root=tmp_path)


def test_per_channel_prepare_and_scalar_prepare_unchanged():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, -1)
    per = D.ArrayDataset("p", x, torch.tensor([0, 1]), x, torch.tensor([0, 1]), scale=0.5, mean=(1.0, 2.0, 3.0),
                         std=(2.0, 4.0, 8.0), shape=(3, 2, 2))
    expect = (x.view(2, 3, 4).double() * 0.5 - torch.tensor([1.0, 2, 3]).view(1, 3, 1)) \
        / torch.tensor([2.0, 4, 8]).view(1, 3, 1)
    assert torch.allclose(per.prepare(x).double(), expect.view(2, -1), atol=1e-6)
    scalar = D.ArrayDataset("s", x, torch.tensor([0, 1]), x, torch.tensor([0, 1]), scale=1 / 255, mean=0.2860,
                            std=0.3530, shape=(3, 2, 2))
    assert torch.equal(scalar.prepare(x), x.float().mul_(1 / 255 / 0.3530).sub_(0.2860 / 0.3530))
    with pytest.raises(LifelongError, match="per-channel mean"):
        D.ArrayDataset("bad", x, torch.tensor([0, 1]), x, torch.tensor([0, 1]), mean=(0.0, 1.0), shape=(3, 2, 2))
    moved = per.to("cpu")
    assert moved.mean == per.mean and moved.coarse_of is None and moved.augment is None


def test_concurrent_decodes_of_one_cache_take_turns(tmp_path):
    """Two workers decoding the same archive at once both wrote and renamed train_x.tmp.npy
    (FileNotFoundError for one of them)."""
    import threading
    import time

    from lifelong.data.archives import write_decoded

    made = []

    def rows():
        made.append(1)
        for part in ("train", "test"):
            for i in range(4):
                time.sleep(0.02)
                yield part, i, np.full(3, i, dtype=np.uint8)

    out = [None, None]
    args = (tmp_path / "decoded", {"train": 4, "test": 4}, None, {"train": np.arange(4), "test": np.arange(4)},
            {"name": "t"}, 3)
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, write_decoded(*args[:2], rows(), *args[3:])))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(made) == 1  # the second found the first's decode
    assert out[0]["train_x"].tolist() == out[1]["train_x"].tolist() == [[i] * 3 for i in range(4)]
