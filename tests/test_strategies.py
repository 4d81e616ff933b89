"""Defining properties of the classic strategies."""

import copy

import pytest
import torch

from lifelong.strategies import Outputs, make_strategy
from lifelong.strategies.buffers import ClassBalancedBuffer, ReservoirBuffer
from lifelong.strategies.lwf import distillation_loss
from lifelong.strategies.regularization import fisher_diagonal
from lifelong.training.engine import Engine


def train(cfg):
    engine = Engine(cfg)
    result = engine.run()
    return engine, result


def same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values(),
                                                  strict=True))


def test_ewc_changes_training_and_reduces_forgetting(digits_cfg):
    naive, r0 = train(digits_cfg(strategy="naive"))
    ewc, r1 = train(digits_cfg(strategy="ewc", hparams={"ewc_lambda": 10.0}))
    assert not same_weights(naive, ewc)
    assert r1["forgetting"] < r0["forgetting"]


def test_replay_beats_naive(digits_cfg):
    _, r0 = train(digits_cfg(strategy="naive"))
    _, r1 = train(digits_cfg(strategy="er", hparams={"buffer_size": 200}))
    assert r1["final_accuracy"] > r0["final_accuracy"] + 0.2


def test_ewc_penalty_is_fisher_weighted_squared_distance(digits_cfg):
    engine = Engine(digits_cfg(strategy="ewc", hparams={"ewc_lambda": 3.0}))
    s = engine.strategy
    params = dict(engine.model.named_parameters())
    anchors = [{k: v.detach() + 0.1 * t for k, v in params.items()} for t in (1, -2, 3)]
    fishers = [{k: torch.rand_like(v) * (t > 0) for k, v in params.items()} for t in (1, 0, 2)]  # one all-zero
    s.anchors, s.importances = anchors, fishers
    s.consolidate()
    pairs = list(zip(anchors, fishers, strict=True))
    direct = 0.5 * 3.0 * sum((f[k] * (params[k] - a[k]) ** 2).sum() for a, f in pairs for k in params)
    got = s.penalty(None, Outputs(torch.zeros(1, 10), {"new": 1}))
    assert torch.allclose(got, direct, rtol=1e-4)
    # ...and its gradient is the gradient of the direct sum
    g_got = torch.autograd.grad(got, list(params.values()))
    g_direct = torch.autograd.grad(direct, list(params.values()))
    for a, b in zip(g_got, g_direct, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


class TinyConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 2, 3)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x.unsqueeze(1))).flatten(1))


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)),  # outer-product path
    TinyConv,  # torch.func per-sample-gradient path
])
def test_fisher_diagonal_matches_per_sample_loop(make):
    torch.manual_seed(0)
    model = make()
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    got = fisher_diagonal(model, x, y, chunk=3)
    expected = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for i in range(7):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in model.named_parameters():
            expected[k] += p.grad ** 2 / 7
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-7)


def test_online_ewc_accumulates_with_gamma(digits_cfg):
    engine = Engine(digits_cfg(strategy="online-ewc", hparams={"gamma": 0.5}))
    s = engine.strategy
    f1 = {k: torch.ones_like(v) for k, v in engine.model.named_parameters()}
    f2 = {k: 2 * torch.ones_like(v) for k, v in engine.model.named_parameters()}
    calls = iter([f1, f2])
    s.importance = lambda exp: next(calls)
    s.end_experience(engine.stream[0])
    s.end_experience(engine.stream[1])
    assert len(s.importances) == 1
    assert all(torch.allclose(v, torch.full_like(v, 0.5 * 1 + 2)) for v in s.importances[0].values())


def test_lwf_distillation_formula():
    student, teacher, T = torch.randn(4, 3), torch.randn(4, 3), 2.0
    q = torch.softmax(teacher / T, 1)
    expected = (q * (q.log() - torch.log_softmax(student / T, 1))).sum(1).mean()
    assert torch.allclose(distillation_loss(student, teacher, T), expected)  # as the paper and Avalanche
    assert torch.allclose(distillation_loss(student, teacher, T, t_squared=True), expected * T * T)


def test_er_batch_is_new_plus_replayed(digits_cfg):
    engine = Engine(digits_cfg(strategy="er", hparams={"buffer_size": 50, "replay_batch_size": 8}))
    sizes = []
    original = engine.strategy.training_batch

    def spy(batch):
        out = original(batch)
        sizes.append((len(out.new), len(out.x)))
        return out
    engine.strategy.training_batch = spy
    engine.run()
    assert sizes[0] == (16, 16)  # empty memory at the first step
    assert all(total == new + 8 for new, total in sizes[1:])


def test_reservoir_buffer_holds_uniform_sample():
    n, capacity, trials = 200, 20, 400
    counts = torch.zeros(n)
    for t in range(trials):
        buf = ReservoirBuffer(capacity, seed=t)
        for start in range(0, n, 32):  # offered in batches, like the engine does
            ids = torch.arange(start, min(start + 32, n))
            buf.add(raw=ids.float().unsqueeze(1), y=ids)
        assert len(buf) == capacity and buf.seen == n
        assert len(set(buf.store["y"].tolist())) == capacity  # no sample stored twice
        counts[buf.store["y"]] += 1
    expected = trials * capacity / n  # 40 per item
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 280  # chi-square with 199 dof: p ~ 1e-4 at 280
    first_half, second_half = counts[:100].sum(), counts[100:].sum()
    assert abs(first_half - second_half) / (first_half + second_half) < 0.05


def test_class_balanced_buffer_balances_an_imbalanced_stream():
    buf = ClassBalancedBuffer(30, seed=0)
    labels = torch.cat([torch.zeros(300), torch.ones(40), torch.full((30,), 2)]).long()
    for s in range(0, len(labels), 32):
        y = labels[s:s + 32]
        buf.add(raw=y.float().unsqueeze(1), y=y)
    counts = torch.bincount(buf.store["y"], minlength=3)
    assert counts.tolist() == [10, 10, 10]


def test_composition_runs_both_parts(digits_cfg):
    engine = Engine(digits_cfg(strategy="er+lwf", hparams={"buffer_size": 40, "alpha": 1.0}))
    result = engine.run()
    assert len(engine.strategy.parts) == 2
    assert engine.strategy.parts[1].teacher is not None
    assert 0 <= result["final_accuracy"] <= 1


def test_joint_is_one_experience_and_cumulative_grows(digits_cfg):
    joint = Engine(digits_cfg(strategy="joint"))
    assert len(joint.train_stream) == 1
    assert joint.train_stream[0].num_train == sum(e.num_train for e in joint.stream)
    cumul = Engine(digits_cfg(strategy="cumulative"))
    sizes = [e.num_train for e in cumul.train_stream]
    assert sizes == sorted(sizes) and sizes[-1] == joint.train_stream[0].num_train
    r = joint.run()
    assert len(r["accuracy_matrix"]) == 1 and r["bwt"] is None


def test_unknown_hyperparameter_suggests(digits_cfg):
    from lifelong.errors import LifelongError
    with pytest.raises(LifelongError, match="buffer_size"):
        make_strategy("er", {"bufer_size": 10})
    with pytest.raises(LifelongError, match=r"out of range"):
        make_strategy("er", {"buffer_size": 0})


def test_strategy_state_round_trip(digits_cfg):
    engine = Engine(digits_cfg(strategy="derpp", hparams={"buffer_size": 30}))
    engine.run()
    state = copy.deepcopy(engine.strategy.state_dict())
    other = Engine(digits_cfg(strategy="derpp", hparams={"buffer_size": 30}))
    other.strategy.load_state_dict(state)
    for k, v in engine.strategy.memory.store.items():
        assert torch.equal(other.strategy.memory.store[k], v)


def test_non_finite_fisher_is_one_clear_error(digits_cfg):
    from lifelong.errors import LifelongError

    engine = Engine(digits_cfg(strategy="ewc"))
    with torch.no_grad():
        engine.model[-1].weight.fill_(1e38)  # eval-mode outputs overflow
    with pytest.raises(LifelongError, match="Fisher information .* is not finite"):
        engine.strategy.end_experience(engine.stream[0])


def test_task_aware_loss_and_prediction_ignore_other_tasks(digits_cfg):
    engine = Engine(digits_cfg(scenario="task-split-digits", strategy="er"))
    y = torch.tensor([2, 3])  # task 1 = classes 2, 3
    logits = torch.zeros(2, 10)
    logits[:, [0, 1, 4, 5, 6, 7, 8, 9]] = 100.0  # other tasks' classes dominate the head
    expected = torch.nn.functional.cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]))
    assert torch.allclose(engine.learner.cross_entropy(logits, y), expected)
    assert engine.learner.task_of(y).tolist() == [1, 1]
    result = engine.run()
    assert result["final_accuracy"] > 0.8  # task-incremental: predictions within the task's two classes


def test_lwf_distils_each_old_task_head_separately_on_task_aware_streams(digits_cfg):
    """Task-incremental LwF: one softmax per old task's classes, the terms summed (the paper's loss per old
    task), not one softmax over every old class; class-incremental: one softmax over the old classes."""
    for scenario in ("task-split-digits", "split-digits"):
        engine = Engine(digits_cfg(scenario=scenario, strategy="lwf", hparams={"alpha": 0.7}))
        lwf, stream = engine.strategy, engine.stream
        for exp in stream.experiences[:2]:
            lwf.begin_experience(exp)
            lwf.end_experience(exp)
        lwf.begin_experience(stream[2])
        batch = engine.learner.batch(stream[2], stream[2].train_idx[:8])
        out = batch.split(engine.model(batch.x))
        with torch.no_grad():
            teacher = lwf.teacher(batch.new.x)
        heads = [stream[0].classes, stream[1].classes] if scenario.startswith("task") else [
            stream[0].classes + stream[1].classes]
        expected = 0.7 * sum(distillation_loss(out["new"][:, h], teacher[:, h], 2.0) for h in heads)
        assert torch.allclose(lwf.penalty(batch, out), expected)


def test_outputs_give_whole_logits_unsliced_and_other_segments_as_their_rows():
    """A segment (or adjacent segments) covering every row reads `all` itself: no slice node in the graph,
    so its gradient is the same tensor; partial segments read exactly their rows."""
    w = torch.randn(4, 3, requires_grad=True)
    logits = torch.randn(6, 4) @ w
    whole = Outputs(logits, {"new": 6})
    assert whole["new"] is logits and whole.rows(["new"]) is logits
    parts = Outputs(logits, {"new": 2, "er": 3, "der": 1})
    assert parts.rows(["new", "er", "der"]) is logits
    assert torch.equal(parts["er"], logits[2:5]) and torch.equal(parts.rows(["er", "der"]), logits[2:6])
    assert parts["er"].grad_fn.name() == "SliceBackward0"
    (g_whole,) = torch.autograd.grad(whole["new"].square().sum(), w, retain_graph=True)
    (g_direct,) = torch.autograd.grad(logits.square().sum(), w)
    assert torch.equal(g_whole, g_direct)
