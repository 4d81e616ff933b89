"""Defining properties of SCR (supervised contrastive replay, NCM prediction) and Progressive Neural Networks,
each against an independent computation."""

import pytest
import torch
import torch.nn.functional as F

from lifelong.errors import LifelongError
from lifelong.models.backbones import MLP, SmallCNN
from lifelong.strategies.base import Batch
from lifelong.strategies.pnn import Progressive
from lifelong.training.engine import Engine


# --- SCR ----------------------------------------------------------------------------------------------------
def hidden_of(model, x):
    """The MLP's penultimate features, layer by layer (independent of the library's feature tap)."""
    for layer in list(model.base)[:-1]:
        x = layer(x)
    return x


def supcon_by_hand(z, y, t):
    """Khosla et al. 2020, L_out, one anchor and one positive at a time (loops, no masking tricks)."""
    n, terms = len(z), []
    for i in range(n):
        positives = [p for p in range(n) if p != i and y[p] == y[i]]
        if not positives:
            continue
        denom = sum(torch.exp(z[i] @ z[a] / t) for a in range(n) if a != i)
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / t) / denom) for p in positives) / len(positives))
    return sum(terms) / len(terms)


@pytest.fixture(scope="module")
def scr_engine():
    from lifelong.training.config import RunConfig
    cfg = RunConfig.from_dict({"scenario": "split-digits", "hidden": "32", "lr": 0.05, "batch_size": 16,
                               "epochs": 1, "threads": 1, "strategy": "scr",
                               "hparams": {"buffer_size": 40, "replay_batch_size": 8}})
    engine = Engine(cfg)
    engine.run()
    return engine


def test_scr_loss_is_supcon_of_both_views_of_new_and_replayed_rows(scr_engine):
    s, model = scr_engine.strategy, scr_engine.model
    exp = s.ctx.stream[1]
    idx = exp.train_idx[:6]
    raw, y = exp.raw(idx), exp.labels(idx)
    batch = s.training_batch(Batch(s.ctx.segment(raw, y, scored=True), 1))
    assert [n for n, _ in batch] == ["new", "scr.mem", "scr.view"]
    assert len(batch["scr.view"]) == len(batch["new"]) + len(batch["scr.mem"]) == 6 + 8
    out = batch.split(model(batch.x))
    got = s.loss(batch, out)
    with torch.no_grad():
        h = hidden_of(model, batch.x)  # the MLP's penultimate features, computed independently
        z = F.normalize(model.proj(h), dim=1)
        labels = torch.cat([batch["new"].y, batch["scr.mem"].y, batch["scr.view"].y])
        want = supcon_by_hand(z, labels, 0.07)
    assert torch.equal(batch["scr.view"].y, torch.cat([batch["new"].y, batch["scr.mem"].y]))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_scr_supcon_on_a_hand_case():
    """Two unit vectors per class at known angles: the loss has a closed form."""
    from lifelong.strategies.prototypes import supcon_loss
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    # each anchor: positive similarity 1, two negatives at 0: -log(e^(1/t) / (e^(1/t) + 2))
    t = 0.5
    want = -torch.log(torch.exp(torch.tensor(1 / t)) / (torch.exp(torch.tensor(1 / t)) + 2))
    assert torch.allclose(supcon_loss(z, y, t), want)
    assert torch.allclose(supcon_by_hand(z, y, t), want)


def test_scr_predicts_the_nearest_memory_class_mean(scr_engine):
    s, model = scr_engine.strategy, scr_engine.model
    n = len(s.memory)
    raw, ym = s.memory.store["raw"][:n], s.memory.store["y"][:n]
    exp = s.ctx.stream[0]
    x = s.ctx.prepare(exp.raw(exp.test_idx[:50], "test"))
    model.eval()
    with torch.no_grad():
        f = F.normalize(hidden_of(model, s.ctx.prepare(raw)), dim=1)
        classes = sorted(set(ym.tolist()))
        means = torch.stack([F.normalize(f[ym == c].mean(0), dim=0) for c in classes])
        fx = F.normalize(hidden_of(model, x), dim=1)
        dist = ((fx.unsqueeze(1) - means.unsqueeze(0)) ** 2).sum(2)
        want = torch.tensor(classes)[dist.argmin(1)]
        s.means = None
        scores = s.predict(model, x)
    assert torch.equal(scores.argmax(1), want)
    absent = [c for c in range(s.ctx.stream.num_classes) if c not in classes]
    assert not absent or bool(torch.isinf(scores[:, absent]).all())


# --- PNN ----------------------------------------------------------------------------------------------------
def pnn_run(digits_cfg, scenario):
    cfg = digits_cfg(strategy="pnn", scenario=scenario, experiences=5, epochs=1, momentum=0.9, weight_decay=1e-3)
    engine = Engine(cfg)
    snaps = []
    original = engine.strategy.end_experience

    def end(exp):
        original(exp)
        m = engine.model
        snaps.append({"columns": len(m.columns),
                      "weights": [[p.detach().clone() for p in [*c.parameters(), *lat.parameters()]]
                                  for c, lat in zip(m.columns, m.laterals, strict=True)]})
    engine.strategy.end_experience = end
    engine.run()
    return engine, snaps


@pytest.mark.parametrize("scenario", ["split-digits", "task-split-digits"])
def test_pnn_adds_one_column_per_experience_and_earlier_columns_stay_bit_identical(digits_cfg, scenario):
    engine, snaps = pnn_run(digits_cfg, scenario)
    assert [s["columns"] for s in snaps] == [1, 2, 3, 4, 5]
    for k, snap in enumerate(snaps):
        for later in snaps[k + 1:]:
            for a, b in zip(snap["weights"][k], later["weights"][k], strict=True):
                assert torch.equal(a, b)
    # the newest column did learn (the property is not vacuous)
    first, last = snaps[-2]["weights"][-1], snaps[-1]["weights"][-1]
    assert len(first) != len(last) or any(not torch.equal(a, b) for a, b in zip(first, last, strict=True))


def test_pnn_task_aware_prediction_reads_each_tasks_own_column(digits_cfg):
    engine, _ = pnn_run(digits_cfg, "task-split-digits")
    s, model = engine.strategy, engine.model
    stream = s.ctx.stream
    exp = stream[0]
    x = s.ctx.prepare(exp.raw(exp.test_idx[:20], "test"))
    with torch.no_grad():
        outs = model.forward_all(x)
        scores = s.predict(model, x)
    for k in range(len(stream)):
        cols = stream[k].classes
        assert torch.equal(scores[:, cols], outs[k][:, cols])


def test_pnn_laterals_feed_the_new_column_by_hand():
    mlp = MLP([2], 2, hidden=(2,))
    net = Progressive(mlp)
    net.grow(torch.Generator().manual_seed(0))
    c0, c1, lat = net.columns[0], net.columns[1], net.laterals[1][0]
    with torch.no_grad():
        c0[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        c0[0].bias.copy_(torch.tensor([0.0, 0.5]))
        c1[0].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        c1[0].bias.zero_()
        c1[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        c1[1].bias.copy_(torch.tensor([0.0, 1.0]))
        lat.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 5.0]]))
    x = torch.tensor([[1.0, -2.0]])
    # column 0 hidden: relu([1, 2 + 0.5]) = [1, 2.5]; column 1 hidden: relu([2, -2]) = [2, 0]
    # column 1 logits: I [2, 0] + [0, 1] + U [1, 2.5] = [2 + 3, 0 + 1 + 12.5]
    assert torch.allclose(net(x), torch.tensor([[5.0, 13.5]]))
    assert len(net.laterals[1]) == 1 and lat.weight.shape == (2, 2)  # one lateral per layer after the first


def test_pnn_refuses_a_model_that_is_not_an_mlp(digits_cfg):
    engine = Engine(digits_cfg(strategy="pnn"))
    with pytest.raises(LifelongError, match="MLP"):
        engine.strategy.adapt_model(SmallCNN([1, 8, 8], 10), engine.stream[0])
