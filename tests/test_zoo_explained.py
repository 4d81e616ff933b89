"""The zoo figures explained in issue 12: PRD as the authors' code computes it, TAME's shift detection, and the
diagnostics behind the k-FPF, SS-IL and GPM notes."""

import math

import pytest
import torch
import torch.nn.functional as F

from lifelong.analytic.features import penultimate
from lifelong.strategies.prd import prototype_loss, relation_loss
from lifelong.strategies.prototypes import Prototyped, feature_dim
from lifelong.training.engine import Engine


@pytest.fixture
def engine(digits_cfg):
    def make(strategy, hp=None, **changes):
        return Engine(digits_cfg(strategy=strategy, epochs=1, hparams=hp or {}, **changes))
    return make


# --- PRD (authors' methods/repe.py) ---------------------------------------------------------------------------
def test_prd_relation_loss_is_per_sample_over_each_old_experience_with_unnormalised_features():
    h = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # ||h_0|| = 2 scales its scores (no feature normalisation)
    protos = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # norms divide out
    protos_old = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    h_old = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = 2.0
    # one old experience holding classes 0 and 1; class 2 belongs to another (single-class) experience
    scores_new = [[2.0, 0.0], [0.0, 1.0]]
    scores_old = [[0.0, 1.0], [0.0, 1.0]]
    expected = 0.0
    for s_new, s_old in zip(scores_new, scores_old, strict=True):
        q_old = torch.softmax(torch.tensor(s_old) / t, 0)
        log_q = torch.log_softmax(torch.tensor(s_new) / t, 0)
        expected += float(-(q_old * log_q).sum()) / 2
    # the single-class experience contributes -log 1 = 0
    got = relation_loss(h, protos, h_old, protos_old, [[0, 1], [2]], t)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    assert float(relation_loss(h, protos, h_old, protos_old, [[2]], t)) == 0.0


def test_prd_prototype_loss_is_one_minus_cosine_and_does_not_reach_the_features():
    h = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    protos = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss = prototype_loss(h, protos, y)
    assert math.isclose(float(loss.detach()), ((1 - 0.6) + (1 - 0.0)) / 2, rel_tol=1e-6)
    loss.backward()
    assert h.grad is None
    assert protos.grad is not None and float(protos.grad.abs().sum()) > 0


def test_prd_prototypes_live_in_the_backbone_feature_space_with_the_authors_defaults(engine):
    eng = engine("prd")
    exp = eng.train_stream[0]
    eng.learner.adapt(exp)
    model = eng.learner.model
    assert isinstance(model, Prototyped)
    assert model.prototypes.shape == (eng.stream.num_classes, feature_dim(model.base))
    hp = eng.strategy.hp
    assert (hp["prd_lambda"], hp["proto_weight"], hp["relation_temperature"]) == (4.0, 2.0, 1.0)
    x = eng.learner.prepare(exp.raw(exp.test_idx[:5], "test"))
    eng.strategy.begin_experience(exp)
    h = F.normalize(penultimate(model.base, x), dim=1)
    expected = h @ F.normalize(model.prototypes, dim=1).t()
    got = eng.strategy.predict(model, x)
    seen = exp.classes
    assert torch.allclose(got[:, seen], expected[:, seen], atol=1e-6)


# --- TAME ---------------------------------------------------------------------------------------------------
def first_batch(eng, n=8):
    exp = eng.train_stream[0]
    eng.learner.adapt(exp)
    return eng.learner.batch(exp, exp.train_idx[:n])


def test_tame_a_shift_trains_a_fresh_expert_on_the_batch_that_revealed_it(engine):
    eng = engine("tame", {"z": 3.0})
    s = eng.strategy
    batch = first_batch(eng)
    model = eng.learner.model
    s.tracks[0].window.clear()
    s.tracks[0].window.extend([0.01, 0.01, 0.01])  # threshold 0.025: an untrained model's CE (~2.3) is far above
    out = batch.split(model(batch.x))
    loss = s.loss(batch, out)
    assert int(model.active) == 1 and int(model.used) == 2 and len(s.shifts) == 1
    assert float(loss.detach()) > 1.0 and loss.requires_grad
    assert list(s.tracks[1].window)[1] == float(loss.detach())  # its window: log(C), then this batch's loss


def test_tame_defaults_are_the_authors():
    from lifelong.strategies.tame import TAME
    hp = {k: p.default for k, p in TAME.params.items()}
    assert (hp["window"], hp["smoothing"], hp["z"], hp["min_std"]) == (35, 0.2, 3.0, 0.005)

