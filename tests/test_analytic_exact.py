"""Exact-equivalence checks of the analytic learners (methods.md Appendix B items 4-7)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifelong.analytic.acil import ACIL, GACIL, ridge_solution
from lifelong.analytic.dsal import DSAL
from lifelong.analytic.nmc import NMC
from lifelong.analytic.slca import normalized_logits

D, B, GAMMA = 12, 48, 0.5


def data(n=240, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, D, generator=g, dtype=torch.float64) * 2
    x = centers[y] + torch.randn(n, D, generator=g, dtype=torch.float64)
    return x, y


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def joint(model, x, y, num_classes=None):
    return ridge_solution(model.expand(x), y, GAMMA, num_classes)


def fit_stream(model, x, y, order, batch):
    for s in range(0, len(order), batch):
        i = order[s : s + batch]
        model.fit_increment(x[i], y[i], sample_ids=i)
    return model


@pytest.mark.parametrize("batch", [1, 37, 1000])
def test_acil_incremental_equals_joint_ridge_any_batch(batch):
    x, y = data()
    # class-incremental phases in a shuffled class order, mini-batches inside each phase
    class_order = torch.randperm(6, generator=torch.Generator().manual_seed(batch)).tolist()
    order = torch.cat([(y == c).nonzero().flatten() for c in class_order])
    m = fit_stream(ACIL(D, buffer_size=B, gamma=GAMMA), x, y, order, batch)
    W, R = joint(m, x, y)
    assert rel(m.W, W) <= 1e-8 and rel(m.R, R) <= 1e-8
    assert torch.allclose(m.R, m.R.T)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n_phases=st.integers(1, 8),
    batch=st.integers(1, 80),
    chunk=st.integers(1, 64),
)
def test_gacil_any_phases_any_order_equals_joint(seed, n_phases, batch, chunk):
    x, y = data(n=150, seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)  # blurry: old and new classes mixed in every phase
    m = GACIL(D, buffer_size=B, gamma=GAMMA, chunk_size=chunk)
    for phase in torch.tensor_split(order, n_phases):
        fit_stream(m, x, y, phase, batch)
    W, _ = joint(m, x, y)
    assert rel(m.W, W) <= 1e-8


def test_unlearn_equals_never_learned_and_relearn_restores():
    x, y = data()
    ids = torch.arange(len(y))
    m = ACIL(D, buffer_size=B, gamma=GAMMA).fit_increment(x, y, ids)
    W0, R0 = m.W.clone(), m.R.clone()
    S = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:70]
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[S] = False
    m.unlearn(x[S], y[S], ids[S])
    W, R = joint(m, x[keep], y[keep], num_classes=6)
    assert rel(m.W, W) <= 1e-8 and rel(m.R, R) <= 1e-8
    assert len(m.ledger) == int(keep.sum())
    m.fit_increment(x[S], y[S], ids[S])  # (b) relearning the same batch gives the original model back
    assert rel(m.W, W0) <= 1e-8 and rel(m.R, R0) <= 1e-8


def test_unlearn_whole_class_zeroes_its_column_and_matches_retraining():
    x, y = data()
    m = ACIL(D, buffer_size=B, gamma=GAMMA).fit_increment(x, y)  # content hashes as ids
    m.unlearn_classes([3], x, y)
    assert m.W[:, 3].abs().max() <= 1e-8 * m.W.abs().max()
    assert 3 not in m.classes_ and (m.predict(x) != 3).all()
    W, R = joint(m, x[y != 3], y[y != 3], num_classes=6)
    assert rel(m.W, W) <= 1e-8 and rel(m.R, R) <= 1e-8


def test_nmc_incremental_equals_joint_and_order_free():
    x, y = data()
    a = NMC(D).fit_increment(x, y)
    b = NMC(D)
    for c in [5, 2, 0, 4, 1, 3]:
        i = (y == c).nonzero().flatten()
        for s in range(0, len(i), 7):
            b.fit_increment(x[i[s : s + 7]], y[i[s : s + 7]])
    assert torch.allclose(a.means, b.means, rtol=0, atol=1e-12)
    assert torch.equal(a.predict(x), b.predict(x))
    xn = torch.nn.functional.normalize(x, dim=1)
    for c in range(6):
        assert torch.allclose(a.means[c], xn[y == c].mean(0), atol=1e-12)
    b.unlearn(x[y == 2], y[y == 2])
    assert 2 not in b.classes_ and torch.equal(b.sums[2], torch.zeros(D, dtype=torch.float64))


def test_dsal_main_stream_is_acil_and_predicts():
    x, y = data()
    m = DSAL(D, buffer_size=B, gamma=GAMMA, gamma_comp=GAMMA)
    a = ACIL(D, buffer_size=B, gamma=GAMMA)
    for c in range(0, 6, 2):
        i = (y == c) | (y == c + 1)
        m.fit_increment(x[i], y[i])
        a.fit_increment(x[i], y[i])
    assert rel(m.main.W, a.W) <= 1e-10
    assert m.comp.W.abs().sum() > 0
    assert (m.predict(x) == y).float().mean() > 0.5
    assert m.state_nbytes > a.state_nbytes


def test_slca_logit_norm_is_scale_invariant():
    z = torch.randn(5, 6, dtype=torch.float64)
    blocks = [[0, 1], [2, 3, 4], [5]]
    a = normalized_logits(z, blocks, 0.1)
    assert torch.allclose(a, normalized_logits(7.5 * z, blocks, 0.1), atol=1e-6)


def test_registry_builds_by_name_with_suggestions():
    from lifelong.analytic import make_analytic
    from lifelong.errors import LifelongError

    assert isinstance(make_analytic("g-acil", D, buffer_size=8), GACIL)
    with pytest.raises(LifelongError, match="Did you mean 'acil'"):
        make_analytic("acill", D)
