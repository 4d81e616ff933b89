"""Defining properties of the class-incremental exemplar methods (iCaRL, BiC, LUCIR, SS-IL), each against an
independent computation on a hand-sized case."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lifelong.errors import LifelongError
from lifelong.models.heads import CosineLinear, replace_last_linear
from lifelong.strategies import make_strategy
from lifelong.strategies.bic import BiasCorrection
from lifelong.strategies.exemplars import ExemplarMemory, herding
from lifelong.strategies.lucir import margin_ranking
from lifelong.strategies.ssil import separated_ce, task_wise_kd
from lifelong.training.engine import Engine


def brute_force_herding(points, m):
    """At each step, try every unchosen point and keep the one whose addition puts the running mean closest
    to the mean of all points (plain Python lists)."""
    d = len(points[0])
    mu = [sum(p[j] for p in points) / len(points) for j in range(d)]
    chosen = []
    for k in range(1, m + 1):
        best, best_cost = None, math.inf
        for i, p in enumerate(points):
            if i in chosen:
                continue
            mean = [(sum(points[c][j] for c in chosen) + p[j]) / k for j in range(d)]
            cost = math.sqrt(sum((mu[j] - mean[j]) ** 2 for j in range(d)))
            if cost < best_cost:
                best, best_cost = i, cost
        chosen.append(best)
    return chosen


def test_herding_picks_the_exemplar_that_brings_the_running_mean_closest_to_the_class_mean():
    g = torch.Generator().manual_seed(3)
    for n, d, m in ((7, 3, 4), (12, 5, 12), (9, 2, 6)):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        assert herding(x, m).tolist() == brute_force_herding(x.tolist(), m)
    assert len(herding(torch.randn(3, 2, generator=g), 10)) == 3  # never more than the class holds


def test_memory_reduction_keeps_each_class_first_exemplars():
    mem = ExemplarMemory(6, seed=0)
    raw = torch.arange(10).reshape(10, 1)
    mem.add(raw, 0, torch.tensor([4, 1, 7, 2, 0, 9]))
    mem.reduce(mem.per_class(2))
    mem.add(raw + 100, 1, torch.tensor([5, 3, 8]))
    assert mem.raw.flatten().tolist() == [4, 1, 7, 105, 103, 108] and mem.y.tolist() == [0, 0, 0, 1, 1, 1]


def nme_strategy(raw, y, num_classes):
    strategy = make_strategy("icarl")
    strategy.ctx = SimpleNamespace(prepare=lambda r: r.float(), stream=SimpleNamespace(num_classes=num_classes))
    strategy.memory = ExemplarMemory(10, seed=0)
    strategy.memory.raw, strategy.memory.y = raw, y
    strategy.memory.rank = torch.zeros(len(y), dtype=torch.long)
    return strategy


def test_nme_predicts_the_nearest_normalised_exemplar_mean_on_a_hand_case():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))  # features = the inputs themselves
    raw = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, -1.0]])
    strategy = nme_strategy(raw, torch.tensor([0, 0, 1]), 3)
    # class 0: mean of the normalised (1, 0) and (0, 1) is (0.5, 0.5), normalised (s, s); class 1: (0, -1)
    s = 1 / math.sqrt(2)
    x = torch.tensor([[5.0, 4.0], [1.0, -3.0]])
    scores = strategy.predict(model, x)
    for i, row in enumerate(x.tolist()):
        norm = math.hypot(*row)
        f = (row[0] / norm, row[1] / norm)
        d0 = (f[0] - s) ** 2 + (f[1] - s) ** 2
        d1 = f[0] ** 2 + (f[1] + 1) ** 2
        assert scores[i, 0].item() == pytest.approx(-d0, abs=1e-6)
        assert scores[i, 1].item() == pytest.approx(-d1, abs=1e-6)
        assert scores[i, 2].item() == -math.inf  # no exemplar: never predicted
    assert scores.argmax(1).tolist() == [0, 1]


def test_bias_correction_is_the_identity_at_first_and_only_touches_the_new_classes():
    logits = torch.randn(4, 6)
    corr = BiasCorrection([2, 5])
    assert torch.equal(corr(logits), logits)
    with torch.no_grad():
        corr.alpha.fill_(2.0)
        corr.beta.fill_(-0.5)
    out = corr(logits)
    for c in range(6):
        expected = 2.0 * logits[:, c] - 0.5 if c in (2, 5) else logits[:, c]
        assert torch.allclose(out[:, c], expected)


def test_cosine_head_outputs_sigma_times_the_cosine_and_replaces_the_last_linear():
    head = CosineLinear(3, 2, sigma=4.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]]))
    f = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    out = head(f)
    for i, fi in enumerate(f.tolist()):
        for c, w in enumerate(head.weight.tolist()):
            dot = sum(a * b for a, b in zip(w, fi, strict=True))
            cos = dot / (math.sqrt(sum(a * a for a in w)) * math.sqrt(sum(b * b for b in fi)))
            assert out[i, c].item() == pytest.approx(4.0 * cos, rel=1e-6)
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    replace_last_linear(model, head)
    assert model[2] is head


def test_lucir_margin_ranking_loss_on_a_hand_case():
    cos = torch.tensor([[0.9, 0.1, 0.5, 0.7],   # old anchor, class 0: hard new cosines 0.7, 0.5
                        [0.2, 0.3, 0.4, 0.1],   # old anchor, class 1: hard new 0.4, 0.1
                        [0.0, 0.0, 0.9, 0.8]])  # a new-class row: not an anchor
    y = torch.tensor([0, 1, 2])
    anchors = torch.tensor([True, True, False])
    loss = margin_ranking(cos, y, anchors, [2, 3], k=2, margin=0.5)
    by_hand = (max(0, 0.5 - 0.9 + 0.7) + max(0, 0.5 - 0.9 + 0.5) + max(0, 0.5 - 0.3 + 0.4)
               + max(0, 0.5 - 0.3 + 0.1)) / 4
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert margin_ranking(cos, y, torch.zeros(3, dtype=torch.bool), [2, 3], 2, 0.5).item() == 0.0


def log_softmax_at(row, classes, label):
    lse = math.log(sum(math.exp(row[c]) for c in classes))
    return row[label] - lse


def test_ssil_loss_is_the_two_separated_cross_entropies():
    g = torch.Generator().manual_seed(0)
    new_logits, old_logits = torch.randn(3, 6, generator=g), torch.randn(2, 6, generator=g)
    new_y, old_y = torch.tensor([4, 5, 4]), torch.tensor([0, 3])
    loss = separated_ce(new_logits, new_y, [4, 5], old_logits, old_y, [0, 1, 2, 3])
    new = sum(log_softmax_at(r, [4, 5], c) for r, c in zip(new_logits.tolist(), new_y.tolist(), strict=True))
    old = sum(log_softmax_at(r, [0, 1, 2, 3], c) for r, c in zip(old_logits.tolist(), old_y.tolist(), strict=True))
    by_hand = -(new + old) / 5
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_ssil_task_wise_distillation_is_one_kl_per_old_task():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    T = 2.0
    total = 0.0
    for group in ([0, 1], [2, 3]):
        for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
            q = [math.exp(t_row[c] / T) for c in group]
            q = [v / sum(q) for v in q]
            logp = [log_softmax_at([v / T for v in s_row], group, c) for c in group]
            total += T * T * sum(qi * (math.log(qi) - lp) for qi, lp in zip(q, logp, strict=True)) / 4
    assert task_wise_kd(student, teacher, [[0, 1], [2, 3]], T).item() == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("name", ["icarl", "bic", "lucir", "ssil"])
def test_loss_owning_methods_refuse_composition_in_one_line(name):
    with pytest.raises(LifelongError, match=f"{name} cannot be combined") as err:
        make_strategy(f"{name}+er")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["icarl", "bic", "lucir", "ssil"])
def test_memory_is_class_balanced_with_a_fixed_total(digits_cfg, name):
    engine = Engine(digits_cfg(strategy=name, epochs=1, hparams={"buffer_size": 40, "replay_batch_size": 8}))
    result = engine.run()
    counts = torch.bincount(engine.strategy.memory.y, minlength=10)
    assert counts.tolist() == [4] * 10
    assert result["final_accuracy"] > 0.3
