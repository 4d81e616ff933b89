import gzip
import struct

import numpy as np
import pytest
import torch

from lifelong.data import datasets as D
from lifelong.data.scenarios import make_stream, rotate_images
from lifelong.errors import LifelongError


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(tmp_path, n_train=40, n_test=20):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / D.FASHION_FILES["train_x"], rng.integers(0, 255, (n_train, 28, 28)))
    write_idx(tmp_path / D.FASHION_FILES["train_y"], np.arange(n_train) % 10)
    write_idx(tmp_path / D.FASHION_FILES["test_x"], rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(tmp_path / D.FASHION_FILES["test_y"], np.arange(n_test) % 10)


def test_fashion_mnist_reads_idx_from_given_dir(tmp_path):
    fake_fashion(tmp_path)
    data = D.fashion_mnist(tmp_path)
    assert data.train_x.shape == (40, 784) and data.train_x.dtype == torch.uint8
    assert data.test_y.tolist() == [i % 10 for i in range(20)]


def test_corrupt_idx_file_is_one_clear_error(tmp_path):
    fake_fashion(tmp_path)
    path = tmp_path / D.FASHION_FILES["train_x"]
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])  # truncated
    with pytest.raises(LifelongError, match="corrupt"):
        D.fashion_mnist(tmp_path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(LifelongError, match="cannot read|corrupt"):
        D.fashion_mnist(tmp_path)


def test_compressed_idx_is_decoded_once_and_a_rewritten_file_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "x-idx3-ubyte.gz"
    first = np.random.default_rng(0).integers(0, 255, (30, 28, 28))
    write_idx(path, first)
    assert np.array_equal(D.read_idx(path), first)
    assert len(list((tmp_path / "cache" / "idx").glob("x-idx3-ubyte-*.npy"))) == 1
    real_open = gzip.open
    monkeypatch.setattr(gzip, "open", lambda *a, **k: pytest.fail("decoded again"))
    kept = D.read_idx(path)
    assert np.array_equal(kept, first) and kept.dtype == np.uint8 and kept.flags.writeable
    monkeypatch.setattr(gzip, "open", real_open)
    second = np.random.default_rng(1).integers(0, 255, (30, 28, 28))  # same size: only the stamp tells
    write_idx(path, second)
    assert np.array_equal(D.read_idx(path), second)
    other = tmp_path / "elsewhere" / "x-idx3-ubyte.gz"  # a file of the same name elsewhere keeps its own copy
    other.parent.mkdir()
    write_idx(other, first)
    assert np.array_equal(D.read_idx(other), first)
    kept = sorted((tmp_path / "cache" / "idx").glob("x-idx3-ubyte-*.npy"))
    assert len(kept) == 2, "the first version's copy is removed once the rewritten file is decoded"
    assert sorted(np.array_equal(np.load(k), second) for k in kept) == [False, True]


def test_damaged_kept_array_or_unwritable_cache_is_passed_over(tmp_path, monkeypatch):
    path = tmp_path / "y-idx1-ubyte.gz"
    labels = np.arange(50) % 10
    write_idx(path, labels)
    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    D.read_idx(path)
    (kept,) = (tmp_path / "cache" / "idx").glob("*.npy")
    kept.write_bytes(kept.read_bytes()[:-7])
    assert np.array_equal(D.read_idx(path), labels)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("LIFELONG_CACHE", str(blocked))
    assert np.array_equal(D.read_idx(path), labels)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "fashion_mnist_dirs", lambda root: [tmp_path])
    with pytest.raises(LifelongError, match="apt-get install dataset-fashion-mnist"):
        D.fashion_mnist(None)


def test_class_incremental_split_is_disjoint_and_complete():
    s = make_stream("split-digits", n_experiences=5, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert [e.classes for e in s] == [[9, 8], [7, 6], [5, 4], [3, 2], [1, 0]]
    data = s[0].data
    all_train = torch.cat([e.train_idx for e in s])
    assert len(all_train) == len(data.train_y) == len(set(all_train.tolist()))
    for e in s:
        assert set(data.train_y[e.train_idx].tolist()) == set(e.classes)
        assert set(data.test_y[e.test_idx].tolist()) == set(e.classes)


@pytest.mark.parametrize("order,msg", [([0, 1, 2], "missing"), ([0, 0, 1, 2, 3, 4, 5, 6, 7, 8], "repeated"),
                                       ([*range(10), 11], "unknown")])
def test_bad_class_order(order, msg):
    with pytest.raises(LifelongError, match=msg):
        make_stream("split-digits", class_order=order)


def test_experiences_must_divide_classes():
    with pytest.raises(LifelongError, match="divide"):
        make_stream("split-digits", n_experiences=3)


def test_task_incremental_has_task_ids_and_masks():
    s = make_stream("task-split-digits")
    assert s.task_aware and [e.task_id for e in s] == [0, 1, 2, 3, 4]
    mask = s.task_class_mask()
    assert mask.sum(1).tolist() == [2] * 5 and mask[1].nonzero().flatten().tolist() == [2, 3]


def test_permuted_keeps_pixels_and_labels():
    s = make_stream("permuted-digits", n_experiences=3)
    idx = torch.arange(10)
    a, b = s[0].raw(idx), s[1].raw(idx)
    assert not torch.equal(a, b)
    assert torch.equal(a.sort(1).values, b.sort(1).values)  # same pixels, other positions
    assert torch.equal(s[0].labels(idx), s[1].labels(idx))


def test_rotation_by_zero_is_identity_and_by_90_is_rot90():
    x = torch.randint(0, 255, (3, 64), dtype=torch.uint8)
    assert torch.equal(rotate_images(x, 0.0, (1, 8, 8)), x)
    r = rotate_images(x, 90.0, (1, 8, 8)).reshape(3, 8, 8)
    assert torch.equal(r, torch.rot90(x.reshape(3, 8, 8), k=1, dims=(1, 2))) or torch.equal(
        r, torch.rot90(x.reshape(3, 8, 8), k=-1, dims=(1, 2)))


def test_adapters_numpy_and_torch_dataset():
    x = np.random.rand(20, 4).astype(np.float32)
    y = np.arange(20) % 2
    a = D.from_tensors("np", (x, y), (x, y))
    assert a.num_classes == 2 and a.train_x.shape == (20, 4)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    b = D.from_torch_dataset("torch", ds, ds)
    assert torch.equal(b.train_x, a.train_x) and torch.equal(b.train_y, a.train_y)
    s = make_stream("split-digits", n_experiences=2, dataset=b)
    assert [e.classes for e in s] == [[0], [1]]


def test_hf_adapter_on_local_dataset():
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_dict({"pixels": [[0, 1], [2, 3], [4, 5]], "label": [0, 1, 0]})
    d = D.from_hf_dataset("hf", train, train, "pixels")
    assert d.train_x.tolist() == [[0, 1], [2, 3], [4, 5]] and d.train_y.tolist() == [0, 1, 0]
    with pytest.raises(LifelongError, match="no column"):
        D.from_hf_dataset("hf", train, train, "image")


def test_mnist1d_generates_offline():
    d = D.load_dataset("mnist1d")
    assert d.train_x.shape[1] == 40 and d.num_classes == 10


class TorchvisionLike(torch.utils.data.Dataset):
    """The interface of torchvision's MNIST-family datasets: uint8 `.data`, `.targets`, `transform`."""

    def __init__(self, n):
        self.data = torch.randint(0, 255, (n, 28, 28), dtype=torch.uint8)
        self.targets = torch.arange(n) % 10
        self.transform = None

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


def test_torchvision_style_dataset_is_read_without_per_sample_calls():
    train, test = TorchvisionLike(50), TorchvisionLike(20)
    d = D.from_torch_dataset("tv", train, test, scale=1 / 255)
    assert d.train_x.dtype == torch.uint8 and torch.equal(d.train_x, train.data.flatten(1))  # stored flat
    assert d.shape == (1, 28, 28)  # (N, 28, 28) grey images gain their channel
    with_transform = TorchvisionLike(5)
    with_transform.transform = lambda x: x  # a transform forces the per-sample path
    x, y = D.stack_torch_dataset(with_transform)
    assert torch.equal(x, with_transform.data) and y.tolist() == [0, 1, 2, 3, 4]
    s = make_stream("split-digits", dataset=d)
    assert len(s) == 5 and s[0].classes == [0, 1]


def test_fixed_protocol_scenarios_parse_without_a_dataset_suffix():
    from lifelong.data.scenarios import parse_scenario, scenario_names

    kind, dataset = parse_scenario("core50-nc")
    assert (kind.name, dataset) == ("core50-nc", "core50")
    assert "core50-ni" in scenario_names() and not any(n.startswith("core50-ni-") for n in scenario_names())
    with pytest.raises(LifelongError):
        parse_scenario("core50-ni-digits")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_last_images_with_up_to_four_channels_are_read_as_such(channels):
    x = torch.arange(5 * 6 * 7 * channels).reshape(5, 6, 7, channels)
    first = D.as_channels_first(x)
    assert first.shape == (5, channels, 6, 7) and torch.equal(first[2, -1], x[2, :, :, -1])
    assert D.as_channels_first(first).shape == (5, channels, 6, 7)  # already channels-first: unchanged
    data = D.from_tensors("mine", (x.to(torch.uint8), torch.arange(5) % 2), (x[:2].to(torch.uint8), torch.arange(2)))
    assert data.shape == (channels, 6, 7)  # two channels were read as 6 channels of 7 x 2


def test_uint8_inputs_are_scaled_to_0_1_by_default_and_other_inputs_kept():
    """torchvision's .data is uint8: read unscaled (0..255) it trained the default MLP at chance."""
    x = torch.randint(0, 256, (6, 4, 4), dtype=torch.uint8)
    data = D.from_tensors("u8", (x, torch.arange(6) % 2), (x[:2], torch.arange(2)))
    assert data.scale == 1 / 255 and float(data.prepare(data.train_x[:1]).max()) <= (1.0 - data.mean) / data.std
    assert D.from_tensors("f", (x.float(), torch.arange(6) % 2), (x[:2].float(), torch.arange(2))).scale == 1.0
    assert D.from_tensors("u8", (x, torch.arange(6) % 2), (x[:2], torch.arange(2)), scale=1.0).scale == 1.0


def test_samples_of_several_sizes_are_one_line():
    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros((1, 8, 8) if i < 2 else (3, 8, 8)), i % 2

    with pytest.raises(LifelongError, match=r"samples have different shapes \(\(1, 8, 8\) for sample 0, \(3, 8, 8\)"):
        D.from_torch_dataset("mixed", Mixed(), Mixed())
