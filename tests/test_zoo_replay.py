"""Defining properties of the replay zoo (der, xder, er-ace, mir, gss, gdumb) against independent computations."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong.errors import LifelongError
from lifelong.strategies import Batch, Context, make_strategy
from lifelong.strategies.base import Segment
from lifelong.strategies.er_ace import mask_absent
from lifelong.strategies.xder import update_logits


class FakeStream(list):
    def __init__(self, classes, num_classes):
        super().__init__(SimpleNamespace(index=i, classes=c) for i, c in enumerate(classes))
        self.num_classes = num_classes


def make_ctx(model, classes=((0, 1), (2, 3)), num_classes=4, seed=0, batch_size=4):
    return Context(model, FakeStream(classes, num_classes), torch.device("cpu"), torch.Generator().manual_seed(seed),
                   lambda raw: raw.float(), lambda z, y: F.cross_entropy(z, y), lambda y: None, batch_size)


def strategy(name, model, seed=0, **hp):
    s = make_strategy(name, hp)
    s.setup(make_ctx(model, seed=seed))
    return s


def new_batch(x, y, experience=1):
    return Batch(Segment.stored(x, lambda raw: raw.float(), y, None, scored=True), experience)


def step_outputs(s, model, batch):
    batch = s.training_batch(batch)
    return batch, batch.split(model(batch.x))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(40, 3, generator=g), torch.randint(0, 4, (40,), generator=g)


def test_der_loss_is_ce_plus_alpha_mse_of_stored_logits(data):
    x, y = data
    model = nn.Linear(3, 4)
    s = strategy("der", model, alpha=0.7, buffer_size=8, replay_batch_size=8)
    first = new_batch(x[:8], y[:8])
    stored = model(x[:8]).detach()
    s.observe(first, first.split(model(x[:8])))
    with torch.no_grad():
        model.weight.add_(0.3)  # the stored logits are now stale
    batch, out = step_outputs(s, model, new_batch(x[8:12], y[8:12]))
    ce = F.cross_entropy(model(x[8:12]), y[8:12])
    total = F.cross_entropy(out["new"], y[8:12]) + s.penalty(batch, out)
    seg = batch["der.logits"]
    rows = [int(torch.nonzero((x[:8] == r).all(1))[0]) for r in seg.raw]  # which stored sample each row is
    assert sorted(rows) == list(range(8))
    mse = ((model(x[:8][rows]) - stored[rows]) ** 2).mean()
    assert torch.allclose(total, ce + 0.7 * mse, atol=1e-6)


def test_er_ace_masks_exactly_the_classes_absent_from_the_incoming_batch(data):
    x, y = data
    logits = torch.randn(3, 5)
    masked = mask_absent(logits, torch.tensor([1, 3, 1]))
    low = torch.finfo(logits.dtype).min
    assert torch.equal(masked[:, [1, 3]], logits[:, [1, 3]]) and (masked[:, [0, 2, 4]] == low).all()

    model = nn.Linear(3, 4)
    s = strategy("er-ace", model, buffer_size=20, replay_batch_size=20)
    old = new_batch(x[:20], y[:20], experience=0)
    s.observe(old, old.split(model(x[:20])))
    xb, yb = x[20:24], torch.tensor([2, 3, 3, 2])
    batch, out = step_outputs(s, model, new_batch(xb, yb))
    loss = s.loss(batch, out)
    z = model(xb)
    ace = -F.log_softmax(z[:, [2, 3]], 1)[torch.arange(4), yb - 2].mean()  # softmax over present classes only
    seg = batch["er-ace"]
    assert torch.allclose(loss, ace + F.cross_entropy(model(seg.x), seg.y), atol=1e-6)
    grad = torch.autograd.grad(loss, out.all)[0][:4]
    assert (grad[:, [0, 1]] == 0).all() and (grad[:, [2, 3]] != 0).all()
    first = new_batch(xb, yb, experience=0)  # first experience: plain cross-entropy, no replay
    assert s.loss(*step_outputs(s, model, first)) is None and "er-ace" not in first


def test_mir_retrieves_the_top_k_candidates_by_loss_increase(data):
    x, y = data
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    s = strategy("mir", model, buffer_size=30, replay_batch_size=6, candidates=30, lr=0.5)
    mem = new_batch(x[:30], y[:30], experience=0)
    s.observe(mem, mem.split(model(x[:30])))
    xb, yb = x[30:34], y[30:34]
    batch = s.training_batch(new_batch(xb, yb))
    got = {tuple(r.tolist()) for r in batch["mir"].raw}
    virtual = [p.detach().clone().requires_grad_() for p in model.parameters()]

    def f(params, inp):
        w1, b1, w2, b2 = params
        return torch.tanh(inp @ w1.T + b1) @ w2.T + b2

    g = torch.autograd.grad(F.cross_entropy(f(virtual, xb), yb), virtual)
    after_params = [p - 0.5 * gi for p, gi in zip(virtual, g, strict=True)]
    with torch.no_grad():
        rise = (F.cross_entropy(f(after_params, x[:30]), y[:30], reduction="none")
                - F.cross_entropy(f(virtual, x[:30]), y[:30], reduction="none"))
    want = {tuple(x[i].tolist()) for i in torch.topk(rise, 6).indices}
    assert got == want
    assert all(p.grad is None for p in model.parameters())  # the virtual step leaves the model alone


def test_gss_score_is_max_cosine_of_per_sample_gradients_plus_one(data):
    x, y = data
    model = nn.Linear(3, 4)
    s = strategy("gss", model, buffer_size=20, candidates=10)  # not full: every sample is scored
    s.offer(x[:10], y[:10])
    c = s.scores_of(x[10:13], y[10:13])

    def grad_of(i):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        return torch.cat([model.weight.grad.flatten(), model.bias.grad.flatten()])

    stored = torch.stack([grad_of(i) for i in range(10)])
    for j, i in enumerate(range(10, 13)):
        want = F.cosine_similarity(grad_of(i)[None], stored).max() + 1
        assert torch.allclose(c[j], want, atol=1e-5)


def test_gss_keeps_the_sample_with_the_lowest_score():
    """W = 0, two classes: the CE gradient of (x, 0) is anti-parallel to that of (x, 1). The memory holds four
    (e1, 0): three redundant (score 2) and one with score 0. A new (e1, 1) scores 0 (cos = -1 to every stored
    gradient), so it surely replaces a redundant one (accept probability C / (C + 0) = 1), and the score-0
    sample, drawn with probability 0, is never the victim."""
    e1 = torch.tensor([[1.0, 0.0]])
    for seed in range(5):
        model = nn.Linear(2, 2, bias=False)
        nn.init.zeros_(model.weight)
        s = strategy("gss", model, seed=seed, buffer_size=4, candidates=4)
        s.store = {"raw": e1.repeat(4, 1), "y": torch.zeros(4, dtype=torch.long),
                   "score": torch.tensor([2.0, 2.0, 2.0, 0.0])}
        s.size = 4
        assert torch.allclose(s.scores_of(e1, torch.tensor([1])), torch.zeros(1), atol=1e-6)
        s.offer(e1, torch.tensor([1]))
        assert s.store["y"].tolist().count(1) == 1 and s.store["y"][3] == 0 and s.store["score"][3] == 0
        assert s.store["score"].tolist().count(2.0) == 2


def test_gss_full_memory_refuses_a_batch_whose_gradient_agrees_with_the_memory():
    """Alg. 2 (and the authors' code, change_th 0): once the memory is full, a batch enters only if its gradient's
    largest cosine to the memory subset is negative (c < 1). W = 0: the gradient of (2 e1, 0) is parallel to that
    of the stored (e1, 0) (c = 2), so nothing is replaced although every stored score is 2 (without the gate each
    new sample would replace one with probability 2 / (2 + 2)). A batch of (e1, 1) (c = 0) does enter."""
    e1 = torch.tensor([[1.0, 0.0]])
    for seed in range(3):
        model = nn.Linear(2, 2, bias=False)
        nn.init.zeros_(model.weight)
        s = strategy("gss", model, seed=seed, buffer_size=4, candidates=4)
        s.store = {"raw": e1.repeat(4, 1), "y": torch.zeros(4, dtype=torch.long), "score": torch.full((4,), 2.0)}
        s.size = 4
        s.offer(2 * e1.repeat(8, 1), torch.zeros(8, dtype=torch.long))
        assert torch.equal(s.store["raw"], e1.repeat(4, 1)) and torch.equal(s.store["score"], torch.full((4,), 2.0))
        s.offer(e1.repeat(8, 1), torch.ones(8, dtype=torch.long))
        assert int(s.store["y"].sum()) > 0


def fake_experience(index, x, y, classes):
    data = SimpleNamespace(train_x=x, train_y=y)
    return SimpleNamespace(index=index, data=data, train_idx=torch.arange(len(y)), num_train=len(y), classes=classes,
                           raw=lambda idx: x[idx], labels=lambda idx: y[idx])


def test_gdumb_memory_is_class_balanced_and_the_model_depends_only_on_the_memory():
    g = torch.Generator().manual_seed(3)
    y1 = torch.tensor([0] * 50 + [1] * 10)  # imbalanced: class 1 has fewer than its share
    y2 = torch.tensor([2] * 30 + [3] * 40)
    x1, x2 = torch.randn(60, 3, generator=g), torch.randn(70, 3, generator=g)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    s = strategy("gdumb", model, buffer_size=20, epochs=3)
    assert not s.learns_by_sgd(fake_experience(0, x1, y1, [0, 1]))
    s.fit_experience(fake_experience(0, x1, y1, [0, 1]))
    assert s.memory.counts() == {0: 10, 1: 10}
    s.fit_experience(fake_experience(1, x2, y2, [2, 3]))
    assert s.memory.counts() == {0: 5, 1: 5, 2: 5, 3: 5}
    probe = torch.randn(16, 3, generator=g)
    other_model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))  # other weights: not used
    t = strategy("gdumb", other_model, buffer_size=20, epochs=3)
    t.memory.load_state_dict(s.memory.state_dict())  # the same memory, without its history
    t.net = t.train_on_memory()
    with torch.no_grad():
        assert torch.equal(s.predict(model, probe), t.predict(other_model, probe))


def test_xder_logit_update_on_a_hand_case():
    old = torch.tensor([[2.0, 0.0, 0.5, 0.5], [3.0, 1.0, 0.0, 0.0]])
    new = torch.tensor([[9.0, 9.0, 4.0, 1.0], [9.0, 9.0, 1.0, -1.0]])
    cols = torch.tensor([False, False, True, True])
    out = update_logits(old, new, torch.tensor([0, 0]), cols, 0.85)
    assert torch.allclose(out, torch.tensor([[2.0, 0.0, 4 * 0.85 * 2 / 4, 1 * 0.85 * 2 / 4], [3.0, 1.0, 1.0, -1.0]]))


def test_xder_updates_future_logits_of_a_replayed_past_sample():
    model = nn.Linear(3, 4)
    s = strategy("xder", model, buffer_size=1, replay_batch_size=1, gamma=0.5)
    xs = torch.tensor([[1.0, -1.0, 0.5]])
    s.store = {"raw": xs, "y": torch.tensor([0]), "logits": torch.tensor([[0.2, 0.1, 0.0, 0.0]]),
               "counter": torch.zeros(1)}
    s.size = 1
    batch, out = step_outputs(s, model, new_batch(torch.randn(2, 3), torch.tensor([2, 3])))
    s.after_step(batch, out)  # first replay this experience: updated with probability 1
    z = model(xs)[0].detach()
    future = z[2:]
    scale = 0.5 * 0.2 / future.max() if future.max() > 0.2 else 1.0
    assert torch.allclose(s.store["logits"][0], torch.cat([torch.tensor([0.2, 0.1]), future * scale]))
    assert s.store["counter"][0] == 1  # drawn by both draws: counted once (duplicates dropped)


def test_xder_refuses_a_stream_whose_classes_recur():
    s = make_strategy("xder")
    ctx = make_ctx(nn.Linear(3, 4), classes=((0, 1), (0, 1)), num_classes=2)
    with pytest.raises(LifelongError, match="exactly one experience"):
        s.setup(ctx)


def test_gdumb_keeps_layers_the_user_froze_and_resets_the_rest():
    from lifelong.strategies.gdumb import fresh_copy

    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    model[0].requires_grad_(False)  # a pretrained, frozen body
    net = fresh_copy(model, seed=0)
    assert torch.equal(net[0].weight, model[0].weight) and torch.equal(net[0].bias, model[0].bias)
    assert not net[0].weight.requires_grad
    assert not torch.equal(net[2].weight, model[2].weight)  # the trainable head starts afresh
    model[0].requires_grad_(True)
    assert not torch.equal(fresh_copy(model, seed=0)[0].weight, model[0].weight)


def test_er_ace_classifies_with_the_authors_fixed_scale_cosine_head():
    from lifelong.training.config import RunConfig
    from lifelong.training.engine import Engine

    cfg = RunConfig(scenario="split-digits", strategy="er-ace", experiences=2, epochs=1, checkpoint_every=0)
    engine = Engine(cfg)
    engine.run()
    model = engine.model
    head = model[-1]
    x = torch.randn(5, 64)
    features = nn.Sequential(*list(model)[:-1])(x)
    expected = 10.0 * F.normalize(features, dim=1) @ F.normalize(head.weight, dim=1).T  # the authors' distLinear
    assert torch.allclose(model(x), expected, atol=1e-5)
    assert head.bias is None and float(head.sigma) == 10.0 and not head.sigma.requires_grad
    plain = Engine(cfg.with_overrides(hparams={"cosine_head": False}))
    assert isinstance(plain.model[-1], nn.Linear) and plain.model[-1].bias is not None
