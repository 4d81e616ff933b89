"""Corpora (held-out split, cache), replay sampler and LR schedules of lifelong.lm."""

import math
import random

import numpy as np
import pytest

from lifelong.lm import corpora as C
from lifelong.lm.corpora import FORTUNES_DIR
from lifelong.lm.replay import MixtureSampler, replay_rows
from lifelong.lm.schedules import (
    decay_branch,
    exp_anneal,
    infinite,
    make_phase_schedule,
    warmup_decay,
)
from lifelong.lm.tokenizers import ByteTokenizer

requires_fortunes = pytest.mark.skipif(
    not (FORTUNES_DIR / "de").is_dir(),
    reason="needs the Debian packages fortunes, fortunes-de, fortunes-es, fortunes-it",
)


def test_parse_fortunes_separators_and_overstrike():
    text = "first\nline\n%\n_\bse\becond\n%\n\n%\nthird\n"
    assert C.parse_fortunes(text) == ["first\nline", "second", "third"]


def test_split_is_deterministic_disjoint_and_order_free():
    docs = [f"document number {i} " * (i % 7 + 1) for i in range(2000)]
    a = C.split_documents(docs, 0.05, 0.01)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    b = C.split_documents(shuffled, 0.05, 0.01)
    assert a == b
    sets = [set(a[s]) for s in C.SPLITS]
    assert sum(map(len, sets)) == len(docs) and not (sets[0] & sets[1]) and not (sets[0] & sets[2])
    assert 50 < len(a["val"]) < 150  # ~5 %


def test_tokenize_cache_roundtrip(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("\n\n".join(f"paragraph {i}: " + "abc " * i for i in range(200)))
    src = C.local_corpus(f)
    c1 = C.tokenize_corpus(src, ByteTokenizer(), tmp_path / "cache")
    c2 = C.tokenize_corpus(C.local_corpus(f), ByteTokenizer(), tmp_path / "cache")
    assert isinstance(c2.train, np.memmap) and c1.path == c2.path
    for s in ("train", "val", "probe"):
        assert np.array_equal(np.asarray(getattr(c1, s)), np.asarray(getattr(c2, s)))
    total = sum(len(d.encode()) + 1 for d in src.read())  # bytes + one end-of-document token each
    assert c1.train.shape[0] + c1.val.shape[0] + c1.probe.shape[0] == total
    assert (np.asarray(c1.val) == ByteTokenizer.eos_id).sum() >= 1


@requires_fortunes
def test_builtin_fortunes_de_is_german_and_split(tmp_path):
    c = C.tokenize_corpus(C.resolve_corpus("fortunes-de"), ByteTokenizer(), tmp_path)
    head = np.asarray(c.val[:20000])
    text = bytes(head[head < 256].astype(np.uint8)).decode("utf-8", "replace")
    assert " der " in text and " und " in text
    assert c.train.shape[0] > 10 * c.val.shape[0] > 0


@pytest.mark.parametrize("p,B", [(0.25, 16), (0.5, 8), (0.05, 16), (0.01, 32), (0.0, 8)])
def test_replay_fraction_exact(p, B):
    rng = np.random.default_rng(0)
    cur, old = rng.integers(0, 100, 5000), rng.integers(100, 200, 5000)
    s = MixtureSampler([cur], [old], p, B, 15, seed=3, phase=1)
    total = 0
    for step in range(200):
        x = s.batch(step)
        from_old = (x >= 100).all(dim=1)
        assert int(from_old.sum()) == replay_rows(step, p, B) == int(s.is_replay(step).sum())
        if float(p * B).is_integer():
            assert int(from_old.sum()) == p * B
        total += int(from_old.sum())
    assert total == math.floor(200 * p * B + 1e-9)


def test_replay_rank_slices_compose_the_global_batch():
    rng = np.random.default_rng(0)
    s = MixtureSampler([rng.integers(0, 9, 999)], [rng.integers(0, 9, 999)], 0.25, 8, 7, seed=1, phase=1)
    full = s.batch(5)
    assert np.array_equal(np.concatenate([s.batch(5, slice(0, 4)), s.batch(5, slice(4, 8))]), full)


def test_schedule_boundaries():
    f = warmup_decay(1.0, 0.1, 10, 100, "cosine")
    assert f(0) == 0 and f(5) == pytest.approx(0.5) and f(10) == 1.0 and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.55)  # cosine midpoint = mean of peak and floor
    g = warmup_decay(1.0, 0.0, 10, 110, "linear")
    assert g(60) == pytest.approx(0.5)
    inf = infinite(1.0, 0.5, 10, 30)
    assert inf(10) == 1.0 and inf(30) == 0.5 and inf(10_000) == 0.5 and inf(20) == pytest.approx(0.75)
    b = decay_branch(1.0, 0.1, 20, "linear")
    assert b(0) == 1.0 and b(20) == pytest.approx(0.1) and b(10) == pytest.approx(0.55)
    a = exp_anneal(0.5, 0.05, 10)
    assert a(0) == 0.5 and a(10) == pytest.approx(0.05) and a(5) == pytest.approx(math.sqrt(0.5 * 0.05))


def test_phase_schedules():
    cos = make_phase_schedule("cosine", [100, 100], 1.0, 0.1, 0.1)
    assert cos.main(100) == pytest.approx(0.1) and cos.main(110) == pytest.approx(1.0)  # re-warmed
    assert cos.main(200) == pytest.approx(0.1) and cos.branch(0) is None
    inf = make_phase_schedule("infinite", [100, 100], 1.0, 0.1, 0.05, const_ratio=0.5, cooldown_frac=0.2)
    assert max(inf.main(t) for t in range(101, 201)) == 0.5  # no re-warming in later phases
    n, lr = inf.branch(1)
    assert n == 10 and lr(0) == 0.5 and lr(n) == pytest.approx(0.1)
    wsd = make_phase_schedule("wsd", [100, 100], 1.0, 0.1, 0.05, branch_frac=0.2)
    assert all(wsd.main(t) == 1.0 for t in range(5, 201))
    n, lr = wsd.branch(0)
    assert n == 20 and lr(n) == pytest.approx(0.1)
