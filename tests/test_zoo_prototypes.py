"""Defining properties of refresh learning, PRD, OnPro and TAME, each against an independent computation."""

import math

import torch
import torch.nn.functional as F

from lifelong.strategies.prototypes import ope_loss
from lifelong.strategies.refresh import refresh_update
from lifelong.strategies.tame import ShiftDetector, select_expert


def test_refresh_unlearn_moves_along_plus_gradient_rescaled_and_fisher_damped():
    p = torch.tensor([3.0, 4.0])  # ||p|| = 5
    g = torch.tensor([0.0, 2.0])  # ||g|| = 2 -> rescaled ascent direction (0, 5)
    fisher = torch.tensor([0.0, 1000.0])  # damping 1 + 0.001 F = (1, 2)
    delta = 0.1
    q = p.clone()
    refresh_update([q], [g], [fisher], delta, None)
    assert torch.allclose(q, torch.tensor([3.0, 4.0 + 0.1 * 5.0 / 2.0]))
    eps = torch.tensor([1.0, -1.0])
    r = p.clone()
    refresh_update([r], [g], [fisher], delta, [eps])
    assert torch.allclose(r, torch.tensor([3.0 + 0.1 * 0.001, 4.0 + 0.1 * (5.0 - 0.001) / 2.0]))


def test_refresh_unlearn_raises_the_batch_loss_and_the_relearn_step_lowers_it():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(3, (16,))
    before = F.cross_entropy(lin(x), y)
    params = list(lin.parameters())
    grads = torch.autograd.grad(before, params)
    refresh_update(params, list(grads), [torch.zeros_like(p) for p in params], 0.01, None)
    after_unlearn = F.cross_entropy(lin(x), y)
    assert after_unlearn > before
    opt = torch.optim.SGD(params, lr=0.1)
    opt.zero_grad()
    after_unlearn.backward()
    opt.step()
    assert F.cross_entropy(lin(x), y) < after_unlearn


def test_onpro_prototype_equilibrium_by_hand():
    # class 0: rows 0, 1; class 1: row 2. View 2 equals view 1 rotated for class 1.
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    t = 0.5
    u = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]
    partner = [2, 3, 0, 1]
    terms = []
    for i in range(4):
        denom = sum(math.exp(float(u[i] @ u[j]) / t) for j in range(4) if j != i)
        terms.append(-(float(u[i] @ u[partner[i]]) / t - math.log(denom)))
    loss, means = ope_loss(z1, z2, y, t)
    assert math.isclose(float(loss), sum(terms) / 4, rel_tol=1e-6)
    assert torch.allclose(means, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))


def test_tame_detector_fires_on_a_loss_jump_and_not_on_stationary_noise():
    g = torch.Generator().manual_seed(0)
    det = ShiftDetector(window=20, z=3.0)
    noise = (2.0 + 0.1 * torch.randn(2000, generator=g)).tolist()
    fired = sum(det.check(v) for v in noise)
    # one-sided tail of z = 3 is 0.13 %: a handful at most in 2000 stationary batches
    assert fired <= 0.01 * len(noise)
    det.reset()
    for v in noise[:20]:
        assert not det.check(v)
    assert det.check(4.0)


def test_tame_patience_needs_consecutive_batches_and_selection_takes_lowest_in_distribution_loss():
    det = ShiftDetector(window=5, z=2.0, patience=2)
    for v in [1.0, 1.1, 0.9, 1.0, 1.05]:
        det.check(v)
    assert not det.check(5.0)
    assert det.check(5.0)
    losses = torch.tensor([0.9, 0.5, 0.7])
    assert select_expert(losses, torch.tensor([1.0, 0.4, 0.8])) == 2  # expert 1 is out of its distribution
    assert select_expert(losses, torch.tensor([0.1, 0.1, 0.1])) == -1  # none fits: spawn
