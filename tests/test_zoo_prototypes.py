"""Defining properties of refresh learning, PRD, OnPro and TAME, each against an independent computation."""

import math

import torch
import torch.nn.functional as F

from lifelong.strategies.prototypes import ope_loss
from lifelong.strategies.refresh import refresh_update
from lifelong.strategies.tame import Track, detect, record_active


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


def test_tame_detector_follows_the_authors_rules_by_hand():
    """utils_.py of HaoranZhuExplorer/TAME: window seeded with log(classes), threshold mean + z max(std, 0.005)
    of the raw losses while active, tested against the moving average (0.2) of the loss on every batch."""
    z, floor, w = 3.0, 0.005, 0.2
    tracks = [Track(35, math.log(2))]
    assert detect(tracks, [0.69], 0, z, floor, w) == 0  # 0.69 <= log 2 + 3 * 0.005
    assert math.isclose(tracks[0].threshold, math.log(2) + 0.015)
    record_active(tracks[0], 0.69, w)
    for loss in [0.5, 0.3, 0.2, 0.1, 0.1, 0.1]:
        assert detect(tracks, [loss], 0, z, floor, w) == 0
        record_active(tracks[0], loss, w)
    window = [math.log(2), 0.69, 0.5, 0.3, 0.2, 0.1, 0.1, 0.1]
    smoothed = 0.69
    for loss in [0.5, 0.3, 0.2, 0.1, 0.1, 0.1]:
        smoothed = w * loss + (1 - w) * smoothed
    assert math.isclose(tracks[0].smoothed, smoothed) and list(tracks[0].window) == window
    jump = 6.0  # a new task: the moving average 0.2 * 4 + 0.8 * s crosses mean + 3 std of the window
    t = torch.tensor(window, dtype=torch.float64)
    assert w * jump + (1 - w) * smoothed > float(t.mean() + 3 * t.std(unbiased=False))
    assert detect(tracks, [jump], 0, z, floor, w) is None  # no expert is in distribution: spawn


def test_tame_switches_to_the_first_expert_in_distribution_in_creation_order():
    w = 0.2
    tracks = [Track(35, 1.0) for _ in range(3)]
    for track, (threshold, active_avg) in zip(tracks, [(0.3, 0.2), (1.0, 0.5), (1.0, 0.1)], strict=True):
        track.threshold, track.smoothed_active, track.smoothed = threshold, active_avg, active_avg
    tracks[2].window.clear()
    tracks[2].window.extend([0.1] * 5)  # the active expert (2) sees a jump: 0.2 * 3 + 0.8 * 0.1 > 0.1 + 0.015
    got = detect(tracks, [0.4, 0.9, 3.0], 2, 3.0, 0.005, w)
    # expert 0: 0.2 * 0.4 + 0.8 * 0.2 = 0.24 < 0.3 is first in order (expert 1: 0.58 < 1.0 also fits)
    assert got == 0
    assert math.isclose(tracks[2].threshold, 0.115)  # refreshed from its window while active; others frozen
    assert tracks[1].threshold == 1.0
