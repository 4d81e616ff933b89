"""Bad input: one clear line, nothing changed; versioned store and the unlearn command; feature cache."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from lifelong.analytic import store
from lifelong.analytic.acil import ACIL
from lifelong.analytic.cli import add_unlearn_parser, run_unlearn_command
from lifelong.analytic.dsal import DSAL
from lifelong.analytic.features import FeatureCache, extract_features
from lifelong.analytic.nmc import NMC
from lifelong.errors import LifelongError

D = 10


def data(n=120, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return torch.randn(n, D, generator=g, dtype=torch.float64) + y[:, None], y


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def snapshot(m):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in m.state_dict().items() if k != "ledger"}


def same(a, b):
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


@pytest.fixture
def model():
    x, y = data()
    return ACIL(D, buffer_size=32, gamma=1.0).fit_increment(x, y, torch.arange(len(y))), x, y


def test_refuses_samples_never_learned_and_changes_nothing(model):
    m, x, y = model
    before, n = snapshot(m), len(m.ledger)
    x2, y2 = data(n=5, seed=9)
    with pytest.raises(LifelongError) as e:
        m.unlearn(x2, y2, [1000 + i for i in range(5)])
    assert "never learned" in one_line(e)
    with pytest.raises(LifelongError) as e:  # right id, wrong features
        m.unlearn(x2[:1], y[:1], [0])
    assert "different features" in one_line(e)
    with pytest.raises(LifelongError) as e:  # right id and features, wrong label
        m.unlearn(x[:1], (y[:1] + 1) % 4, [0])
    assert "label" in one_line(e)
    with pytest.raises(LifelongError) as e:  # a learned sample mixed with a never-learned one
        m.unlearn(torch.cat([x[:1], x2[:1]]), torch.cat([y[:1], y2[:1]]))
    assert "never learned" in one_line(e)
    assert same(before, snapshot(m)) and len(m.ledger) == n


def test_bad_inputs_one_line(model):
    m, x, y = model
    with pytest.raises(LifelongError) as e:
        m.unlearn(torch.randn(3, D + 1), y[:3])
    assert "dimension 11" in one_line(e)
    with pytest.raises(LifelongError) as e:
        m.fit_increment(torch.randn(3, D - 1), y[:3])
    assert "dimension" in one_line(e)
    with pytest.raises(LifelongError) as e:
        m.unlearn_classes([7], x, y)
    assert "class 7 is not learned" in one_line(e)
    with pytest.raises(LifelongError) as e:  # only part of a class given
        m.unlearn_classes([1], x[:30], y[:30], list(range(30)))
    assert "needs all of them" in one_line(e)
    for g in (0, -1.0):
        with pytest.raises(LifelongError) as e:
            ACIL(D, gamma=g)
        assert "gamma" in one_line(e)
    with pytest.raises(LifelongError) as e:
        ACIL(D, buffer_size=2_000_000)
    msg = one_line(e)
    assert "buffer_size=2000000 needs" in msg and "TiB" in msg and "available" in msg
    with pytest.raises(LifelongError) as e:
        ACIL(D, buffr_size=3)
    assert "buffer_size" in one_line(e)
    with pytest.raises(LifelongError) as e:
        DSAL(D, buffer_size=8).unlearn(x, y)
    assert "does not support exact unlearning" in one_line(e)


def test_state_memory_is_reported():
    m = ACIL(D, buffer_size=64)
    assert m.state_nbytes == 64 * 64 * 8 + 64 * D * 8
    m.fit_increment(*data())
    assert m.state_nbytes == 64 * 64 * 8 + 64 * 4 * 8 + 64 * D * 8
    assert NMC(D).fit_increment(*data()).state_nbytes == (4 * D + 4) * 8


def _unlearn(argv):
    p = argparse.ArgumentParser()
    add_unlearn_parser(p.add_subparsers(dest="cmd"))
    return run_unlearn_command(p.parse_args(["unlearn", *argv]))


def test_store_and_unlearn_command(tmp_path, model, capsys):
    m, x, y = model
    run = tmp_path / "run1"
    v, _ = store.save_model_version(run, m, {"dataset": "toy"})
    assert v == 1
    store.save_samples(run / store.TRAIN_FEATURES, x, y, torch.arange(len(y)))
    # never-learned samples: refused, logged, no new version
    bad = tmp_path / "bad.pt"
    store.save_samples(bad, x[:3] + 100, y[:3], [500, 501, 502])
    with pytest.raises(LifelongError):
        _unlearn([str(run), "--samples", str(bad)])
    assert store.model_versions(run) == [1]
    assert store.read_requests(run)[-1]["status"] == "refused"
    # samples by id
    good = tmp_path / "good.npz"
    import numpy as np

    np.savez(good, features=x[:10].numpy(), labels=y[:10].numpy(), ids=np.arange(10))
    assert _unlearn([str(run), "--samples", str(good)]) == 0
    m2, v2, _ = store.load_model_version(run)
    assert v2 == 2 and len(m2.ledger) == len(y) - 10
    ref = ACIL(D, buffer_size=32, gamma=1.0).fit_increment(x[10:], y[10:], torch.arange(10, len(y)))
    assert float((m2.W - ref.W).norm() / ref.W.norm()) <= 1e-8
    # sample ids only (features looked up in the run's training features)
    (tmp_path / "ids.txt").write_text("10\n11,12\n")
    assert _unlearn([str(run), "--samples", str(tmp_path / "ids.txt")]) == 0
    (tmp_path / "ids.json").write_text("[11, 999]")
    with pytest.raises(LifelongError) as e:
        _unlearn([str(run), "--samples", str(tmp_path / "ids.json")])
    assert "not in" in one_line(e)
    (tmp_path / "ids.json").write_text("[13]")
    assert _unlearn([str(run), "--samples", str(tmp_path / "ids.json")]) == 0
    m2b, _, _ = store.load_model_version(run)
    ref = ACIL(D, buffer_size=32, gamma=1.0).fit_increment(x[14:], y[14:], torch.arange(14, len(y)))
    assert float((m2b.W - ref.W).norm() / ref.W.norm()) <= 1e-8
    # whole classes from the run's stored training features
    assert _unlearn([str(run), "--classes", "1,2"]) == 0
    m3, v3, payload = store.load_model_version(run)
    assert v3 == 5 and m3.classes_ == [0, 3] and payload["meta"]["parent_version"] == 4
    with pytest.raises(LifelongError) as e:
        _unlearn([str(run), "--classes", "2"])
    assert "never learned" in one_line(e)
    reqs = store.read_requests(run)
    assert [r["status"] for r in reqs] == ["refused", "done", "done", "refused", "done", "done", "refused"]
    assert json.dumps(reqs)  # plain JSON
    # the earlier versions are untouched
    m1, _, _ = store.load_model_version(run, 1)
    assert torch.equal(m1.W, m.W)


def test_unlearn_refuses_non_analytic_model(tmp_path):
    class Fake:
        def state_dict(self):
            return {"kind": "slca", "head": torch.zeros(2)}

    store.save_model_version(tmp_path, Fake())
    f = tmp_path / "s.pt"
    store.save_samples(f, torch.zeros(1, D), torch.zeros(1, dtype=torch.long))
    with pytest.raises(LifelongError) as e:
        _unlearn([str(tmp_path), "--samples", str(f)])
    assert "cannot be unlearned exactly" in one_line(e)
    assert store.model_versions(tmp_path) == [1]
    with pytest.raises(LifelongError) as e:
        _unlearn([str(tmp_path / "nope"), "--classes", "1"])
    assert "not found" in one_line(e)


def test_feature_cache_and_base_phase(tmp_path):
    calls = []

    class Ext(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x):
            calls.append(len(x))
            return self.lin(x)

    torch.manual_seed(0)
    ext, data_ = Ext(), torch.randn(50, 4)
    cache = FeatureCache(tmp_path)
    a = extract_features(ext, data_, cache=cache, batch_size=16)
    b = extract_features(ext, data_, cache=cache, batch_size=16)
    assert torch.equal(a, b) and (cache.misses, cache.hits) == (1, 1) and sum(calls) == 50
    with torch.no_grad():
        ext.lin.weight.add_(1)  # changed extractor: recomputed, not stale
    c = extract_features(ext, data_, cache=cache)
    assert cache.misses == 2 and not torch.equal(a, c)
    extract_features(ext, data_ + 1, cache=cache)  # changed data: recomputed
    assert cache.misses == 3


def test_versions_and_requests_recorded_in_run_store(tmp_path, model):
    from lifelong.tracking.store import RunStore

    m, x, y = model
    RunStore.create(tmp_path, {"config": {"strategy": "acil"}}).close()
    store.save_model_version(tmp_path, m)
    store.save_samples(tmp_path / store.TRAIN_FEATURES, x, y, torch.arange(len(y)))
    assert _unlearn([str(tmp_path), "--classes", "0"]) == 0
    with pytest.raises(LifelongError):
        _unlearn([str(tmp_path), "--classes", "0"])
    rs = RunStore.open(tmp_path)
    try:
        arts, events = rs.artifacts(), rs.events("unlearn")
    finally:
        rs.close()
    assert {k: v[1] for k, v in arts.items()} == {"model_v1": "analytic-model", "model_v2": "analytic-model"}
    assert [e["status"] for e in events] == ["done", "refused"] and events[0]["to_version"] == 2


def test_unlearning_from_an_older_version_says_which_later_requests_the_latest_model_drops(tmp_path, model, capsys):
    m, x, y = model
    run = tmp_path / "run"
    store.save_model_version(run, m, {"dataset": "toy"})
    store.save_samples(run / store.TRAIN_FEATURES, x, y, torch.arange(len(y)))
    assert _unlearn([str(run), "--classes", "1"]) == 0  # version 2
    assert _unlearn([str(run), "--classes", "2"]) == 0  # version 3 (from 2)
    assert "note:" not in capsys.readouterr().err
    assert _unlearn([str(run), "--classes", "3", "--version", "2"]) == 0  # version 4 from 2: drops version 3
    err = capsys.readouterr().err
    assert "model_v4.pt is built from version 2" in err and "version 3 (classes 2)" in err
    latest, v, _ = store.load_model_version(run)
    assert v == 4 and 2 in latest.classes_ and 1 not in latest.classes_
    assert _unlearn([str(run), "--classes", "0"]) == 0  # from the latest (4): nothing new is dropped
    assert "note:" not in capsys.readouterr().err


def test_an_id_given_twice_in_one_call_with_other_features_is_refused_and_nothing_learned():
    x, y = data()
    ids = list(range(len(y)))
    ids[1] = 0  # row 1 reuses row 0's id: the ledger would keep row 0's digest, and row 1 could never be unlearned
    m = ACIL(D, buffer_size=32, gamma=1.0)
    with pytest.raises(LifelongError, match="sample id 0 is given twice in this call with other features"):
        m.fit_increment(x, y, ids)
    assert len(m.ledger) == 0
    twice = torch.cat([x[:1], x[:1]]), torch.cat([y[:1], y[:1]])  # the same sample twice: learned twice
    m.fit_increment(*twice, [7, 7])
    assert m.ledger.entries[7][2] == 2
