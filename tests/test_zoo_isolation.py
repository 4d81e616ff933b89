"""Defining properties of PackNet, HAT, RanPAC and SimpleCIL, each against an independent computation."""

import math

import pytest
import torch

from lifelong.analytic.features import experience_features, model_features
from lifelong.analytic.ranpac import RIDGES, RanPAC, choose_ridge
from lifelong.strategies.base import Gradients
from lifelong.strategies.hat import compensation
from lifelong.strategies.packnet import prune_free
from lifelong.training.engine import Engine


def watch_experiences(engine, record):
    """Call record(exp) after the strategy's end_experience (after pruning, before evaluation)."""
    original = engine.strategy.end_experience

    def end(exp):
        original(exp)
        record(exp)
    engine.strategy.end_experience = end


# --- PackNet --------------------------------------------------------------------------------------------
def packnet_run(digits_cfg, scenario="split-digits", restore=True, prune=0.5):
    cfg = digits_cfg(strategy="packnet", scenario=scenario, experiences=5, epochs=1, momentum=0.9,
                     weight_decay=1e-3, hparams={"prune": prune})
    engine = Engine(cfg)
    s = engine.strategy
    if not restore:  # only zero the gradients: momentum and weight decay still move frozen weights
        s.after_step = lambda batch, out: None
    snaps = []

    def record(exp):
        snaps.append({"weights": {n: p.detach().clone() for n, p in engine.model.named_parameters()},
                      "owner": {n: o.clone() for n, o in s.owner.items()}})
    watch_experiences(engine, record)
    engine.run()
    return engine, snaps


@pytest.mark.parametrize("scenario", ["split-digits", "task-split-digits"])
def test_packnet_frozen_weights_stay_bit_identical_under_momentum_and_weight_decay(digits_cfg, scenario):
    engine, snaps = packnet_run(digits_cfg, scenario)
    final = dict(engine.model.named_parameters())
    first = snaps[0]
    for name, owner in first["owner"].items():
        kept = owner == 1
        assert kept.any()
        assert torch.equal(final[name][kept], first["weights"][name][kept]), name
    biases = [n for n in final if n.endswith("bias") and n not in ("2.bias",)]  # hidden layers' biases
    for n in biases:
        assert torch.equal(final[n], first["weights"][n]), n
    if scenario == "task-split-digits":  # the classes of task 0 keep their head rows (a separate head)
        cls = engine.stream[0].classes
        assert torch.equal(final["2.weight"][cls], first["weights"]["2.weight"][cls])


def test_packnet_without_the_write_back_frozen_weights_move(digits_cfg):
    """The property above is not vacuous: zeroed gradients alone let momentum and weight decay move them."""
    engine, snaps = packnet_run(digits_cfg, restore=False)
    final = dict(engine.model.named_parameters())
    name, owner = next(iter(snaps[0]["owner"].items()))
    kept = owner == 1
    assert not torch.equal(final[name][kept], snaps[0]["weights"][name][kept])


@pytest.mark.parametrize("prune", [0.5, 0.3])
def test_packnet_prunes_exactly_the_requested_fraction_of_free_weights_per_layer(digits_cfg, prune):
    engine, snaps = packnet_run(digits_cfg, prune=prune)
    for name in snaps[0]["owner"]:
        free_before = torch.ones_like(snaps[0]["owner"][name], dtype=torch.bool)
        for k, snap in enumerate(snaps):
            owner, w = snap["owner"][name], snap["weights"][name]
            n_free = int(free_before.sum())
            pruned = free_before & (owner == 0)
            fraction = prune if k < len(snaps) - 1 else 0.0  # the last experience is not pruned (the authors')
            assert int(pruned.sum()) == round(fraction * n_free), (name, k)
            assert int((owner == k + 1).sum()) == n_free - round(fraction * n_free)
            assert torch.all(w[pruned] == 0)
            free_before = owner == 0
        assert not free_before.any()


def test_packnet_keeps_batchnorm_statistics_so_task_incremental_forgetting_is_zero(digits_cfg):
    """The authors' train_nobn: after the first experience BatchNorm layers train in eval mode. Without it the
    running statistics follow the newest task and old tasks' accuracies drop (forgetting > 0)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    engine = Engine(digits_cfg(strategy="packnet", scenario="task-split-digits", experiences=5, epochs=2),
                    model=model)
    norm, stats = model[2], []
    watch_experiences(engine, lambda exp: stats.append((norm.running_mean.clone(), norm.running_var.clone())))
    result = engine.run()
    assert all(torch.equal(m, stats[0][0]) and torch.equal(v, stats[0][1]) for m, v in stats[1:])
    rows = result["accuracy_matrix"]
    assert all(rows[-1][j] == rows[j][j] for j in range(len(rows))), rows


def test_packnet_prunes_the_smallest_free_weights_by_hand():
    w = torch.tensor([[0.3, -0.1], [0.5, 0.2]])
    owner = torch.tensor([[0, 0], [1, 0]], dtype=torch.int16)  # 0.5 is owned by an earlier task
    assert prune_free(w, owner, 0.5, 2) == 2  # round(0.5 * 3 free)
    assert torch.equal(w, torch.tensor([[0.3, 0.0], [0.5, 0.0]]))
    assert torch.equal(owner, torch.tensor([[2, 0], [1, 0]], dtype=torch.int16))


def test_packnet_task_aware_prediction_uses_each_tasks_own_weights(digits_cfg):
    engine, snaps = packnet_run(digits_cfg, "task-split-digits")
    s, model = engine.strategy, engine.model
    exp0 = engine.stream[0]
    x = engine.learner.prepare(exp0.raw(exp0.test_idx, "test"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        saved = {n: params[n].clone() for n in s.owner}
        for n, o in s.owner.items():  # task 0's network: only the weights experience 0 owns
            params[n].mul_((o == 1).to(params[n].dtype))
        expected = model(x)[:, exp0.classes]
        for n in s.owner:
            params[n].copy_(saved[n])
        got = s.predict(model, x)[:, exp0.classes]
    assert torch.allclose(got, expected, atol=1e-6)


# --- HAT ------------------------------------------------------------------------------------------------
def test_hat_gradient_restriction_and_embedding_compensation_follow_the_paper(digits_cfg):
    engine = Engine(digits_cfg(strategy="hat", scenario="task-split-digits", experiences=2, epochs=1,
                               hidden="4,3"))
    engine.run()
    s, model = engine.strategy, engine.model
    g = torch.Generator().manual_seed(3)
    a1, a2 = torch.rand(4, generator=g).round(), torch.rand(3, generator=g)  # a^<t of the two hidden layers
    s.used, s.s, s.task = [a1, a2], 7.5, 1
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    s.before_step(None, None, Gradients(params))
    got = {n: p.grad for n, p in model.named_parameters()}
    for i in range(4):
        for j in range(64):
            assert math.isclose(got["0.weight"][i, j], raw["0.weight"][i, j] * (1 - a1[i]), abs_tol=1e-7)
    for i in range(3):
        assert math.isclose(got["2.bias"][i], raw["2.bias"][i] * (1 - a2[i]), abs_tol=1e-7)
        for j in range(4):
            factor = 1 - min(float(a2[i]), float(a1[j]))
            assert math.isclose(got["2.weight"][i, j], raw["2.weight"][i, j] * factor, rel_tol=1e-6, abs_tol=1e-7)
    smax = s.hp["smax"]
    for name in ("hat_embedding_0", "hat_embedding_1"):
        e = dict(model.named_parameters())[name].detach()
        for t in range(e.shape[0]):
            for u in range(e.shape[1]):
                v = float(e[t, u])
                want = smax / 7.5 * (math.cosh(max(-50, min(50, 7.5 * v))) + 1) / (math.cosh(v) + 1)
                assert math.isclose(float(got[name][t, u]), float(raw[name][t, u]) * want, rel_tol=1e-5)
    assert torch.allclose(compensation(torch.tensor([0.0]), 1.0, 1.0), torch.tensor([1.0]))
    s.stash = None


def test_hat_gates_are_binary_at_smax_and_old_tasks_units_are_frozen(digits_cfg):
    cfg = digits_cfg(strategy="hat", scenario="task-split-digits", experiences=5, epochs=2, momentum=0.9)
    engine = Engine(cfg)
    s = engine.strategy
    snaps = []
    watch_experiences(engine, lambda exp: snaps.append(
        {n: p.detach().clone() for n, p in engine.model.named_parameters()}))
    engine.run()
    smax = s.hp["smax"]
    for e in s.embeddings():
        a = torch.sigmoid(smax * e.detach()[:3])
        binary = (a < 1e-6) | (a > 1 - 1e-6)
        assert binary.float().mean() > 0.95
        far = e.detach()[:3].abs() > 20 / smax  # sigmoid(20) = 1 in float32 up to 2e-9
        assert torch.equal(a[far], (e.detach()[:3][far] > 0).float())
    # task 0's fully used units: their incoming weights never change in later tasks (momentum SGD)
    used0 = torch.sigmoid(smax * snaps[0]["hat_embedding_0"][0])
    rows = used0 == 1
    final = dict(engine.model.named_parameters())
    assert rows.any()
    assert torch.equal(final["0.weight"][rows], snaps[0]["0.weight"][rows])
    assert torch.equal(final["hat_embedding_0"][0], snaps[0]["hat_embedding_0"][0])


# --- RanPAC ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_ranpac_weights_are_the_ridge_solution_on_all_projected_features(digits_cfg, ridge):
    cfg = digits_cfg(strategy="ranpac", experiences=5, hparams={"projection_size": 48, "ridge": ridge})
    engine = Engine(cfg)
    engine.run()
    learner = engine.strategy.learner
    feats, labels = [], []
    for exp in engine.stream:
        f, y, _ = experience_features(engine.model, engine.stream, exp, engine.learner.prepare, "backbone")
        feats.append(f)
        labels.append(y)
    F, y = torch.cat(feats).double(), torch.cat(labels)
    H = torch.relu(F @ learner.buffer.weight.T)
    Y = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()
    lam = learner.lam
    if ridge:
        assert lam == ridge
    else:
        assert lam in RIDGES
    W = torch.linalg.solve(H.T @ H + lam * torch.eye(H.shape[1], dtype=torch.float64), H.T @ Y)
    assert torch.allclose(learner.W, W, rtol=1e-6, atol=1e-8 * float(W.abs().max()))


def test_ranpac_lambda_is_the_candidate_with_least_held_out_error():
    g = torch.Generator().manual_seed(0)
    H = torch.relu(torch.randn(120, 10, generator=g, dtype=torch.float64))
    Y = torch.nn.functional.one_hot(torch.randint(0, 3, (120,), generator=g), 3).double()
    fit, val = slice(0, 96), slice(96, 120)
    errors = []
    for lam in RIDGES:
        A = H[fit].T @ H[fit] + lam * torch.eye(10, dtype=torch.float64)
        W = torch.linalg.solve(A, H[fit].T @ Y[fit])
        errors.append(float(((H[val] @ W - Y[val]) ** 2).mean()))
    want = RIDGES[min(range(len(errors)), key=errors.__getitem__)]
    assert choose_ridge(H[fit].T @ H[fit], H[fit].T @ Y[fit], H[val], Y[val]) == want


def test_ranpac_leaves_out_ridges_float64_cannot_solve_accurately():
    """A projection wider than the samples: the least held-out error would be at 1e-8, where the weights are
    accurate only to about 0.5 relative; the choice is among the candidates within PRECISION_WARN."""
    import warnings

    from lifelong.analytic.acil import PRECISION_WARN, rounding_floor

    g = torch.Generator().manual_seed(0)
    m = RanPAC(8, projection_size=512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the precision warning of a too small lambda
        x, y = torch.randn(12, 8, generator=g) * 10, torch.randint(0, 3, (12,), generator=g)
        m.fit_increment(x.repeat(5, 1), y.repeat(5))  # held-out rows repeat fitted ones: interpolation wins
        assert torch.isfinite(m.W).all()  # solving is where a too small lambda warns
    assert rounding_floor(m.ridge.G, m.lam) <= PRECISION_WARN
    assert rounding_floor(m.ridge.G, 1e-8) > PRECISION_WARN  # the case: 1e-8 was a candidate before


def test_ranpac_learner_state_round_trips():
    g = torch.Generator().manual_seed(1)
    m = RanPAC(6, projection_size=16)
    m.fit_increment(torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g))
    other = RanPAC.from_state_dict(m.state_dict())
    assert other.lam == m.lam and torch.equal(other.W, m.W)


# --- SimpleCIL ------------------------------------------------------------------------------------------
def test_simplecil_prototypes_are_class_means_and_prediction_is_the_cosine_nearest(digits_cfg):
    engine = Engine(digits_cfg(strategy="simplecil", experiences=5))
    engine.run()
    s, model = engine.strategy, engine.model
    feats, labels = [], []
    for exp in engine.stream:
        f, y, _ = experience_features(model, engine.stream, exp, engine.learner.prepare, "backbone")
        feats.append(f)
        labels.append(y)
    F, y = torch.cat(feats).double(), torch.cat(labels)
    protos = torch.stack([F[y == c].mean(0) for c in range(int(y.max()) + 1)])
    assert torch.allclose(s.learner.means, protos, atol=1e-10)
    exp = engine.stream[0]
    x = engine.learner.prepare(exp.raw(exp.test_idx, "test"))
    f = model_features(model, x, "backbone").double()
    cos = torch.stack([torch.nn.functional.cosine_similarity(f, p.unsqueeze(0), dim=1) for p in protos], 1)
    with torch.no_grad():
        got = s.predict(model, x)
    assert torch.equal(got.argmax(1), cos.argmax(1))


def test_packnet_leaves_a_layer_the_user_froze_unpruned(digits_cfg):
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    model[0].requires_grad_(False)  # a pretrained, frozen first layer
    frozen = model[0].weight.detach().clone()
    engine = Engine(digits_cfg(strategy="packnet", scenario="task-split-digits", experiences=5, epochs=1),
                    model=model)
    engine.run()
    assert set(engine.strategy.owner) == {"2.weight"}
    assert torch.equal(engine.model[0].weight, frozen)
    assert (engine.strategy.owner["2.weight"] != 0).any()  # the trainable layer is still pruned and owned


def test_a_one_row_batch_trains_a_batchnorm_model_with_its_running_statistics(digits_cfg):
    """An experience whose size leaves one sample for its last batch: torch refuses BatchNorm in train mode on
    one row; the engine normalises that row with the running statistics (and leaves them as they are)."""
    from torch import nn

    from lifelong.training.learner import norms_in_eval_mode

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))
    x = torch.randn(1, 64)
    before = model[2].running_mean.clone()
    with norms_in_eval_mode(model):
        assert not model[2].training
        out = model(x)
    assert model[2].training and torch.equal(model[2].running_mean, before)
    model.eval()
    assert torch.allclose(out, model(x))
    model.train()
    cfg = digits_cfg(strategy="naive", experiences=5, epochs=1, batch_size=16)  # 273 samples: 17 x 16 + 1
    assert cfg.make_stream()[0].num_train % 16 == 1
    assert len(Engine(cfg, model=model).run()["accuracy_matrix"]) == 5  # torch refused the 1-row batch before
