"""Defining properties of the projection and regularisation methods of the zoo (issue 12): A-GEM, GEM, MAS,
RWalk, GPM and the rehearsal-free toolbox, each against an independent computation or a hand-computed case."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.strategies import make_strategy
from lifelong.strategies.base import Gradients
from lifelong.strategies.gpm import grow_basis, project_out
from lifelong.strategies.mas import mas_importance
from lifelong.strategies.projection import agem_project, flatten, gem_project, nonneg_qp
from lifelong.strategies.rwalk import riemannian_score
from lifelong.training.engine import Engine


def run_with_check(cfg, strategy, check, **changes):
    """Train `strategy` on split-digits; `check(strategy, batch, out, grads)` runs after every before_step."""
    engine = Engine(cfg(strategy=strategy, epochs=1, **changes))
    original, calls = engine.strategy.before_step, [0]

    def before_step(batch, out, grads):
        original(batch, out, grads)
        if check(engine.strategy, batch, out, grads):
            calls[0] += 1
    engine.strategy.before_step = before_step
    engine.run()
    return calls[0]


# --- A-GEM --------------------------------------------------------------------------------------------------
def test_agem_projection_is_the_papers_rule():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g, ref = torch.randn(20, generator=gen, dtype=torch.float64), torch.randn(20, generator=gen,
                                                                                 dtype=torch.float64)
        out = agem_project(g, ref)
        if torch.dot(g, ref) >= 0:
            assert out is g
        else:
            assert torch.dot(out, ref) == pytest.approx(0.0, abs=1e-12)
            assert torch.allclose(out, g - torch.dot(g, ref) / torch.dot(ref, ref) * ref)


def test_agem_applied_gradient_never_conflicts_with_the_memory_gradient(digits_cfg):
    drawn = {}

    def check(strategy, batch, out, grads):
        if "ref" not in drawn:
            return False
        ref, raw = drawn.pop("ref"), drawn.pop("raw")
        model = strategy.ctx.model
        seg = strategy.ctx.segment(ref["raw"], ref["y"])
        loss = strategy.ctx.cross_entropy(model(seg.x), seg.y)
        g_ref = flatten(torch.autograd.grad(loss, grads.params, allow_unused=True), grads.params)
        applied = flatten(grads.total(), grads.params)
        assert torch.dot(applied, g_ref) >= -1e-5 * g_ref.norm() * applied.norm()
        if torch.dot(raw, g_ref) >= 0:
            assert torch.equal(applied, raw)
        return True

    engine = Engine(digits_cfg(strategy="agem", epochs=1, experiences=5, hparams={"buffer_size": 60,
                                                                            "replay_batch_size": 16}))
    strat = engine.strategy
    replay, original = strat.replay, strat.before_step

    def recording_replay():
        ref = replay()
        if ref is not None:
            drawn["ref"] = ref
        return ref

    def before_step(batch, out, grads):
        drawn["raw"] = flatten(grads.total(), grads.params).clone()
        original(batch, out, grads)
        before_step.checked += bool(check(strat, batch, out, grads))
    before_step.checked = 0
    strat.replay, strat.before_step = recording_replay, before_step
    engine.run()
    assert before_step.checked > 0 and strat.projected > 0


# --- GEM ----------------------------------------------------------------------------------------------------
def reference_projection(g: np.ndarray, G: np.ndarray) -> np.ndarray:
    """The primal QP min 1/2||x - g||^2 s.t. G x >= 0 by exhaustive search over active sets (independent of our
    dual solver): the optimum is the projection of g onto {x : G_S x = 0} for its active set S, and it is the
    closest of the feasible such projections."""
    best = None
    for mask in itertools.product([False, True], repeat=len(G)):
        S = G[list(mask)]
        x = g - S.T @ np.linalg.lstsq(S @ S.T, S @ g, rcond=None)[0] if len(S) else g
        if (G @ x >= -1e-9).all() and (best is None or np.sum((x - g) ** 2) < np.sum((best - g) ** 2)):
            best = x
    return best


@pytest.mark.parametrize("seed", range(8))
def test_gem_projection_satisfies_every_constraint_and_is_the_closest(seed):
    rng = np.random.default_rng(seed)
    p, t = 7, 1 + seed % 4
    G = rng.standard_normal((t, p))
    if seed == 7:  # linearly dependent past gradients: a singular Gram matrix
        G = np.vstack([G, 2.0 * G[:1]])
    g = -G.sum(0) + 0.3 * rng.standard_normal(p)  # conflicts with the past gradients
    assert (G @ g < 0).any()
    x = gem_project(torch.tensor(g), torch.tensor(G)).numpy()
    assert (G @ x >= -1e-6).all()
    assert np.allclose(x, reference_projection(g, G), atol=1e-5)


def test_gem_margin_keeps_the_constraints_and_leaves_a_harmless_gradient_alone():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((3, 6))
    g = -G[0] + 0.1 * rng.standard_normal(6)
    x = gem_project(torch.tensor(g), torch.tensor(G), margin=0.5).numpy()
    assert (G @ x >= -1e-9).all()
    safe = torch.tensor(np.linalg.lstsq(G, np.ones(3), rcond=None)[0])  # G safe = 1 > 0
    assert gem_project(safe, torch.tensor(G), margin=0.5) is safe


def test_nonneg_qp_matches_the_kkt_conditions():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 4))
    P, c = A.T @ A, rng.standard_normal(4)
    w = nonneg_qp(P, c)
    grad = P @ w + c
    assert (w >= 0).all() and (grad >= -1e-10).all() and abs(w @ grad) < 1e-10


def test_gem_step_satisfies_the_constraints_of_each_past_experience(digits_cfg):
    def check(strategy, batch, out, grads):
        if not strategy.y:
            return False
        model, ctx = strategy.ctx.model, strategy.ctx
        applied = flatten(grads.total(), grads.params)
        for raw, y in zip(strategy.raw, strategy.y, strict=True):
            seg = ctx.segment(raw, y)
            loss = torch.nn.functional.cross_entropy(model(seg.x), seg.y)
            g_k = flatten(torch.autograd.grad(loss, grads.params, allow_unused=True), grads.params)
            assert torch.dot(applied, g_k) >= -1e-4 * g_k.norm() * applied.norm()
        return True
    assert run_with_check(digits_cfg, "gem", check, experiences=5, hparams={"buffer_size": 30, "margin": 0.0}) > 0


def test_gem_refuses_a_memory_smaller_than_the_stream(digits_cfg):
    with pytest.raises(LifelongError, match="buffer_size=3 is smaller than the number of experiences"):
        Engine(digits_cfg(strategy="gem", hparams={"buffer_size": 3}))


# --- MAS ----------------------------------------------------------------------------------------------------
class Affine(torch.nn.Module):
    """f(x) = W x + b with the parameters held directly (not an nn.Linear): exercises the per-sample path."""

    def __init__(self) -> None:
        super().__init__()
        self.W = torch.nn.Parameter(torch.eye(2))
        self.b = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return x @ self.W.T + self.b


def test_mas_importance_on_a_hand_computed_linear_model():
    # f = x (W = I, b = 0); d||f||^2/dW = 2 f x^T, d/db = 2 f.
    # x1 = (1, 2): |grad W| = [[2, 4], [4, 8]], |grad b| = (2, 4); x2 = (-1, 1): [[2, 2], [2, 2]], (2, 2).
    # The mean of absolute values: W [[2, 3], [3, 5]], b (2, 3)  (the absolute mean gradient would be [[2,1],[1,5]]).
    x = torch.tensor([[1.0, 2.0], [-1.0, 1.0]])
    linear = torch.nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
    for model, w, b in ((linear, "weight", "bias"), (Affine(), "W", "b")):
        omega = mas_importance(model, x)
        assert torch.allclose(omega[w], torch.tensor([[2.0, 3.0], [3.0, 5.0]]))
        assert torch.allclose(omega[b], torch.tensor([2.0, 3.0]))
    omega = mas_importance(linear, x, mask=torch.tensor([[True, False], [True, False]]))  # only output 0 counts
    assert torch.allclose(omega["weight"], torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


# --- RWalk --------------------------------------------------------------------------------------------------
def test_rwalk_score_on_a_hand_case():
    assert float(riemannian_score(torch.tensor(0.5), torch.tensor(2.0), torch.tensor(0.5), 1e-3)) == \
        pytest.approx(0.5 / (0.5 * 2.0 * 0.25 + 1e-3))
    assert float(riemannian_score(torch.tensor(-0.5), torch.tensor(2.0), torch.tensor(0.5), 1e-3)) == 0.0

    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
    strategy = make_strategy("rwalk", {"update_every": 2, "alpha": 0.9, "xi": 1e-3})
    strategy.ctx = SimpleNamespace(model=model)
    strategy.begin_experience(None)
    # Two steps moving only the first weight: g = 1 then 0.5, theta 1 -> 0.9 -> 0.85.
    for g, new in ((1.0, 0.9), (0.5, 0.85)):
        grads = Gradients([model.weight], task=[torch.tensor([[g, 0.0]])])
        strategy.before_step(None, None, grads)
        with torch.no_grad():
            model.weight[0, 0] = new
        strategy.after_step(None, None)
    # w = 1*0.1 + 0.5*0.05 = 0.125; F = 0.9 * (1 + 0.25) / 2 = 0.5625; score = w / (F/2 * 0.15^2 + xi).
    fisher, score = 0.5625, 0.125 / (0.5 * 0.5625 * 0.15 ** 2 + 1e-3)
    assert strategy.fisher["weight"][0].tolist() == pytest.approx([fisher, 0.0])
    assert strategy.score_t["weight"][0].tolist() == pytest.approx([score, 0.0], rel=1e-5)
    strategy.end_experience(None)
    # min-max normalised Fisher and score: (1, 0) each; importance 2 for the moved weight, 0 for the other.
    assert strategy.importances[0]["weight"][0].tolist() == pytest.approx([2.0, 0.0], rel=1e-6)
    assert torch.equal(strategy.anchors[0]["weight"], torch.tensor([[0.85, 3.0]]))


# --- GPM ----------------------------------------------------------------------------------------------------
def test_gpm_basis_meets_the_energy_threshold_and_projection_is_orthogonal():
    gen = torch.Generator().manual_seed(0)
    R1 = torch.randn(10, 3, generator=gen, dtype=torch.float64) @ torch.randn(3, 40, generator=gen,
                                                                              dtype=torch.float64)
    M = grow_basis(None, R1, 0.99)
    assert torch.allclose(M.T @ M, torch.eye(M.shape[1], dtype=torch.float64), atol=1e-10)
    kept = (M @ (M.T @ R1)).pow(2).sum() / R1.pow(2).sum()
    assert kept >= 0.99 and M.shape[1] <= 3
    R2 = torch.randn(10, 40, generator=gen, dtype=torch.float64)
    M2 = grow_basis(M, R2, 0.9)
    assert torch.allclose(M2[:, :M.shape[1]], M) and torch.allclose(M2.T @ M2, torch.eye(M2.shape[1],
                                                                                         dtype=torch.float64))
    assert (M2 @ (M2.T @ R2)).pow(2).sum() / R2.pow(2).sum() >= 0.9
    grad = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    assert torch.allclose(project_out(grad, M2) @ M2, torch.zeros(5, M2.shape[1], dtype=torch.float64), atol=1e-10)


def test_gpm_steps_leave_past_inputs_outputs_unchanged(digits_cfg):
    def check(strategy, batch, out, grads):
        if not strategy.bases:
            return False
        for layer, basis in zip(strategy.layers(), strategy.bases, strict=True):
            aug = torch.cat([layer.weight.grad, layer.bias.grad.unsqueeze(1)], dim=1)
            assert (aug @ basis).abs().max() < 1e-5 * max(1.0, float(aug.abs().max()))
        return True
    assert run_with_check(digits_cfg, "gpm", check, experiences=2) > 0


def test_gpm_refuses_models_it_does_not_support(digits_cfg):
    with pytest.raises(LifelongError, match="gpm supports models built only of linear layers") as err:
        Engine(digits_cfg(strategy="gpm", model="cnn"))
    assert "\n" not in str(err.value)


# --- rehearsal-free -----------------------------------------------------------------------------------------
def test_rehearsal_free_terms_vanish_when_the_model_equals_the_previous_one(digits_cfg):
    hp = {"pred_kd": 1.0, "feat_kd": 1.0, "l2": 0.1, "ewc": 10.0, "fisher_samples": 50}
    engine = Engine(digits_cfg(strategy="rehearsal-free", epochs=1, experiences=2, hparams=hp))
    strategy, penalty, seen = engine.strategy, engine.strategy.penalty, []

    def first_penalty(batch, out):
        value = penalty(batch, out)
        if strategy.teacher is not None and not seen:
            seen.append(float(value.detach()))
        return value
    strategy.penalty = first_penalty
    engine.run()
    assert seen and abs(seen[0]) < 1e-6
    assert strategy.fisher and strategy.merged  # EWC and L2 were active


def test_rehearsal_free_lwf_mc_is_the_authors_sigmoid_bce_over_the_seen_classes(digits_cfg):
    """shaunak27/data-free-continual-learning learners/kd.py LWF_MC: BCELoss(sigmoid(logits[:, seen]), target),
    target one-hot on the seen classes with sigmoid(teacher logits) on the old ones; it replaces the CE."""
    engine = Engine(digits_cfg(strategy="rehearsal-free", epochs=1, experiences=5))
    s, loss, seen = engine.strategy, engine.strategy.loss, []

    def record(batch, out):
        value = loss(batch, out)
        if s.teacher is not None and not seen:
            with torch.no_grad():
                seen.append((batch.new.x.clone(), batch.new.y.clone(), out["new"].detach().clone(),
                             s.teacher(batch.new.x), float(value)))
        return value
    s.loss = record
    engine.run()
    x, y, z, z_old, got = seen[0]
    old, new = engine.stream[0].classes, engine.stream[1].classes
    cols = sorted(old + new)
    p = torch.sigmoid(z[:, cols]).double()
    t = torch.stack([(y == c).double() if c in new else torch.sigmoid(z_old[:, c]).double() for c in cols], 1)
    want = float(-(t * p.log() + (1 - t) * (1 - p).log()).mean())
    assert abs(got - want) < 1e-5
    scores = s.predict(engine.model, x)  # prediction among the seen classes (the authors' outputs)
    unseen = sorted(set(range(10)) - {c for e in engine.stream for c in e.classes})
    assert not unseen or torch.isinf(scores[:, unseen]).all()


def test_rehearsal_free_l2_and_ewc_leave_the_head_out_as_the_authors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ctx = SimpleNamespace(model=model, stream=SimpleNamespace(task_aware=False))
    s = make_strategy("rehearsal-free", {"pred_kd": 0.0, "l2": 0.7})
    s.ctx = ctx
    s.end_experience(SimpleNamespace(task_id=0, classes=[0]))
    assert torch.equal(s.merged["0.weight"][0], torch.full((4, 3), 0.7))
    assert not s.merged["2.weight"][0].any() and not s.merged["2.bias"][0].any()  # model.feat only


def test_rehearsal_free_ewc_with_unit_fisher_is_l2():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ctx = SimpleNamespace(model=model, stream=SimpleNamespace(task_aware=False))
    exp = SimpleNamespace(task_id=0, classes=[0])
    merged = []
    for hp in ({"pred_kd": 0.0, "l2": 0.7}, {"pred_kd": 0.0, "ewc": 0.7}):
        s = make_strategy("rehearsal-free", hp)
        s.ctx = ctx
        s.importance = lambda e: {k: torch.ones_like(v) for k, v in model.named_parameters()}
        s.end_experience(exp)
        merged.append(s.merged)
    assert merged[0].keys() == merged[1].keys()
    for k in merged[0]:
        assert all(torch.equal(a, b) for a, b in zip(merged[0][k], merged[1][k], strict=True))
