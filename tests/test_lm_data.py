"""Corpora (held-out split, cache), replay sampler and LR schedules of lifelong.lm."""

import math
import random

import numpy as np
import pytest

from lifelong.errors import LifelongError
from lifelong.lm import corpora as C
from lifelong.lm.corpora import FORTUNES_DIR
from lifelong.lm.replay import MixtureSampler, replay_rows
from lifelong.lm.schedules import make_phase_schedule
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


def test_restart_schedules_rewarm_and_decay_every_phase():
    # Cosine restarted per phase: warmup 10 (0 at step 0, peak at step 10), floor 0.1 just after the phase
    cos = make_phase_schedule("cosine", [100, 100], 1.0, 0.1, 0.1)
    assert cos.main(0) == 0.0 and cos.main(5) == pytest.approx(0.5) and cos.main(10) == 1.0
    assert cos.main(55) == pytest.approx(0.55)  # cosine midpoint u = 45/90: mean of peak and floor
    last = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90))
    assert cos.main(99) == pytest.approx(last) and cos.main(199) == pytest.approx(last)
    assert cos.main(100) == 0.0 and cos.main(110) == 1.0  # re-warmed from 0
    assert cos.main(200) == pytest.approx(0.1) and cos.branch(0) is None
    assert cos.starts == (0, 100) and cos.phase_steps == (100, 100)
    lin = make_phase_schedule("linear", [100], 1.0, 0.0, 0.0)  # no warmup
    assert lin.main(0) == 1.0 and lin.main(50) == pytest.approx(0.5) and lin.main(99) == pytest.approx(0.01)


def test_infinite_schedule_and_anneal_branches():
    # warmup 5, cosine cooldown to 0.5 by step 25, then constant; branches of 10 updates anneal 0.5 -> 0.1
    inf = make_phase_schedule("infinite", [100, 100], 1.0, 0.1, 0.05, const_ratio=0.5, cooldown_frac=0.25)
    assert inf.main(0) == 0.0 and inf.main(1) == pytest.approx(0.2) and inf.main(5) == 1.0
    assert inf.main(15) == pytest.approx(0.75)  # cooldown midpoint u = 10/20
    assert all(inf.main(t) == pytest.approx(0.5) for t in range(25, 201))  # no re-warming in later phases
    for k in (0, 1):
        rates = inf.branch(k)
        assert len(rates) == 10 and rates[0] == 0.5
        assert rates[5] == pytest.approx(math.sqrt(0.5 * 0.1))  # geometric: halfway in log space
        assert rates[9] == pytest.approx(0.5 * 0.2**0.9)  # the floor 0.1 is reached just after the branch


def test_wsd_and_constant_schedules():
    wsd = make_phase_schedule("wsd", [100, 100], 1.0, 0.1, 0.05, branch_frac=0.2)
    assert wsd.main(0) == 0.0 and wsd.main(1) == pytest.approx(0.2)
    assert all(wsd.main(t) == 1.0 for t in range(5, 201))
    rates = wsd.branch(0)
    assert len(rates) == 20 and rates[0] == 1.0 and rates[10] == pytest.approx(0.55)
    assert rates[19] == pytest.approx(1.0 - 0.9 * 19 / 20)
    cosine_branch = make_phase_schedule("wsd", [100], 1.0, 0.1, 0.05, branch_frac=0.2, decay_shape="cosine")
    assert cosine_branch.branch(0)[10] == pytest.approx(0.55)
    const = make_phase_schedule("constant", [50, 50], 2.0, warmup_frac=0.1)
    assert const.main(0) == 0.0 and const.main(5) == 2.0 and const.main(99) == 2.0 and const.branch(1) is None


def test_phase_schedule_errors():
    with pytest.raises(LifelongError, match="schedule"):
        make_phase_schedule("exponential", [10], 1.0)
    with pytest.raises(LifelongError, match="min_lr"):
        make_phase_schedule("infinite", [10], 1.0, min_ratio=0.0)  # the anneal is geometric
