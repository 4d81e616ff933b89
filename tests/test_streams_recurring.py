"""SCoLe and power-law recurrence: class frequencies, task contents, shares, budgets, seeding."""

import math

import pytest
import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.recurring import class_distribution, largest_remainder, recurrence_shares
from lifelong.data.scenarios import make_stream
from lifelong.errors import LifelongError

CHI2_999 = {9: 27.88}  # chi-square 0.999 quantile, 9 degrees of freedom


def toy(n_classes=10, per_class=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    ty = torch.arange(n_classes).repeat(5)
    return ArrayDataset("fashion-mnist", torch.zeros(len(y), 3, dtype=torch.uint8), y,
                        torch.zeros(len(ty), 3, dtype=torch.uint8), ty)


def scole(n=2000, seed=0, **params):
    return make_stream("scole-fashion-mnist", n, seed=seed, dataset=toy(), params=params)


def chi2(observed, expected):
    return float(((observed - expected) ** 2 / expected).sum())


def test_scole_uniform_class_frequencies_converge():
    s = scole(1000, seed=1, samples=20)
    counts = torch.bincount(torch.tensor([c for e in s for c in e.classes]), minlength=10).double()
    assert chi2(counts, torch.full((10,), 1000 * 2 / 10.0, dtype=torch.float64)) < CHI2_999[9]


def test_scole_longtail_class_frequencies_converge_to_p():
    s = scole(1000, seed=2, classes_per_task=1, distribution="longtail", imbalance=10.0, samples=5)
    order = s.info["class_order"]
    counts = torch.bincount(torch.tensor([order.index(e.classes[0]) for e in s]), minlength=10).double()
    p = torch.tensor([10.0 ** (-k / 9) for k in range(10)], dtype=torch.float64)
    p /= p.sum()
    assert chi2(counts, 1000 * p) < CHI2_999[9]
    assert counts[0] > 5 * counts[9]  # the head is about 10x the tail


def test_class_distribution_profile_is_geometric_with_the_given_ratio():
    p = class_distribution(5, "longtail", 16.0)
    assert torch.allclose(p[:-1] / p[1:], torch.full((4,), 2.0, dtype=torch.float64))
    assert math.isclose(float(p.sum()), 1.0)
    assert torch.equal(class_distribution(4, "uniform", 16.0), torch.full((4,), 0.25, dtype=torch.float64))


def test_scole_tasks_hold_their_classes_samples_and_test_sets():
    data = toy()
    s = make_stream("scole-fashion-mnist", 50, seed=0, dataset=data, params={"classes_per_task": 3, "samples": 31})
    assert not s.online and len(s) == 50
    for e in s:
        assert len(e.classes) == 3 == len(set(e.classes))
        assert e.num_train == 31 and len(e.train_idx.unique()) == 31
        assert set(data.train_y[e.train_idx].tolist()) == set(e.classes)
        expected = torch.isin(data.test_y, torch.tensor(e.classes)).nonzero().flatten()
        assert sorted(e.test_idx.tolist()) == expected.tolist()
    evals = s.evaluated
    assert [e.classes for e in evals] == [[c] for c in range(10)]
    assert sorted(torch.cat([e.test_idx for e in evals]).tolist()) == list(range(len(data.test_y)))


def test_scole_all_classes_per_task_is_subsampled_iid_training():
    s = scole(20, classes_per_task=10, samples=100)
    assert all(e.classes == list(range(10)) for e in s)


@pytest.mark.parametrize("params,match", [({"classes_per_task": 11}, "out of range"),
                                          ({"distribution": "zipf"}, "must be one of"),
                                          ({"imbalance": "0.5"}, ">= 1"), ({"samples": 1}, "at least")])
def test_scole_bad_parameters(params, match):
    with pytest.raises(LifelongError, match=match):
        scole(5, **params)


def test_recurrence_shares_hand_computed():
    # ages 1 and 2, alpha 1: weights 1/2 and 1/3 -> shares 0.6 and 0.4 of the budget
    m = recurrence_shares(torch.tensor([1, 2]), 100.0)
    assert torch.allclose(m, torch.tensor([60.0, 40.0], dtype=torch.float64))
    e = recurrence_shares(torch.tensor([1, 3]), 1.0, decay="exponential", lam=math.log(2))
    assert torch.allclose(e, torch.tensor([0.8, 0.2], dtype=torch.float64))  # weights 1/2 and 1/8


@pytest.mark.parametrize("decay", ["power", "exponential"])
def test_recurrence_shares_sum_to_budget_and_decrease_with_time_since_seen(decay):
    ages = torch.tensor([1, 2, 3, 5, 8, 13])
    m = recurrence_shares(ages, 500.0, alpha=1.5, decay=decay, lam=0.3)
    assert math.isclose(float(m.sum()), 500.0)
    assert (m[1:] < m[:-1]).all()


def test_alpha_zero_is_uniform_rehearsal():
    m = recurrence_shares(torch.tensor([1, 4, 9]), 90.0, alpha=0.0)
    assert torch.allclose(m, torch.full((3,), 30.0, dtype=torch.float64))


def test_largest_remainder_sums_exactly():
    shares = recurrence_shares(torch.tensor([1, 2, 3, 4, 7]), 101.0)
    counts = largest_remainder(shares)
    assert int(counts.sum()) == 101 and ((counts - shares).abs() < 1).all()


@pytest.mark.parametrize("clock", ["last-seen", "introduced"])
def test_power_law_phases_hold_the_new_task_and_exactly_the_budget(clock):
    data = toy()
    s = make_stream("power-law-fashion-mnist", 5, seed=0, dataset=data, params={"rehearsal": 37, "clock": clock})
    groups = [s.info["class_order"][2 * p:2 * p + 2] for p in range(5)]
    for p, e in enumerate(s):
        y = data.train_y[e.train_idx]
        new = torch.isin(y, torch.tensor(groups[p]))
        assert int(new.sum()) == 120  # all of task p
        assert int((~new).sum()) == (37 if p else 0) == sum(s.info["rehearsal_counts"][p])
        assert set(y[~new].tolist()) <= {c for q in range(p) for c in groups[q]}  # rehearsal of old tasks only
    assert [e.classes for e in s.evaluated] == [sorted(g) for g in groups]


def test_power_law_introduced_clock_gives_older_tasks_less():
    s = make_stream("power-law-fashion-mnist", 5, seed=0, dataset=toy(),
                    params={"rehearsal": 1000, "clock": "introduced"})
    last = s.info["rehearsal_counts"][4]  # tasks 0..3 at ages 4..1: weights 1/5, 1/4, 1/3, 1/2
    assert last == largest_remainder(recurrence_shares(torch.tensor([4, 3, 2, 1]), 1000.0)).tolist()
    assert last[0] < last[1] < last[2] < last[3]


def test_power_law_last_seen_clock_rehearses_recent_tasks_more_on_average():
    counts = torch.zeros(4)
    for seed in range(30):
        s = make_stream("power-law-fashion-mnist", 5, seed=seed, dataset=toy(), params={"rehearsal": 3})
        counts += torch.tensor(s.info["rehearsal_counts"][4], dtype=torch.float)
    assert counts[3] > counts[0]


@pytest.mark.parametrize("kind", ["scole", "power-law"])
def test_fixed_seed_gives_the_identical_stream(kind):
    def mk(seed):
        return make_stream(f"{kind}-fashion-mnist", 20 if kind == "scole" else 5, seed=seed, dataset=toy())
    assert mk(3).fingerprint() == mk(3).fingerprint() != mk(4).fingerprint()


def test_power_law_bad_parameters():
    for params, match in (({"decay": "linear"}, "must be one of"), ({"clock": "now"}, "must be one of"),
                          ({"rehearsal": "-3"}, ">= 0"), ({"alpha": "-1"}, ">= 0")):
        with pytest.raises(LifelongError, match=match):
            make_stream("power-law-fashion-mnist", 5, dataset=toy(), params=params)


def test_recurrence_shares_equal_the_formula_and_survive_weights_that_underflow():
    ages = torch.tensor([1, 2, 4])
    w = (ages.double() + 1) ** -1.5
    assert torch.allclose(recurrence_shares(ages, 100.0, alpha=1.5), 100 * w / w.sum())
    w = torch.exp(-0.7 * ages.double())
    assert torch.allclose(recurrence_shares(ages, 10.0, decay="exponential", lam=0.7), 10 * w / w.sum())
    for shares in (recurrence_shares(ages, 100.0, alpha=2000.0),  # (age+1)^-2000 and exp(-1000 age) are 0.0
                   recurrence_shares(ages, 100.0, decay="exponential", lam=1000.0)):
        assert torch.equal(shares, torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64))


def test_a_non_finite_scenario_parameter_is_refused():
    for params in ({"max_degrees": "nan"}, {"max_degrees": "inf"}):
        with pytest.raises(LifelongError, match="must be a finite number"):
            make_stream("rotated-digits", params=params)
