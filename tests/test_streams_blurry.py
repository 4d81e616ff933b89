"""Online split, i-Blurry and Si-Blurry: partitions, disjoint classes, blur bounds, reductions, seeding."""

import pytest
import torch

from lifelong.data.blurry import blurry_tasks
from lifelong.data.datasets import ArrayDataset
from lifelong.data.scenarios import make_stream, parse_scenario
from lifelong.errors import LifelongError


def toy(n_classes=10, per_class=60, name="fashion-mnist", seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    ty = torch.arange(n_classes).repeat(5)
    return ArrayDataset(name, torch.randint(0, 255, (len(y), 4), generator=g, dtype=torch.uint8), y,
                        torch.zeros(len(ty), 4, dtype=torch.uint8), ty)


def stream(kind, data=None, seed=0, n=5, **params):
    return make_stream(f"{kind}-fashion-mnist", n, seed=seed, dataset=data or toy(), params=params)


def assert_partition(s, n_samples):
    idx = torch.cat([e.train_idx for e in s])
    assert len(idx) == n_samples and len(idx.unique()) == n_samples


def test_parse_tries_the_longest_kind_first():
    assert parse_scenario("si-blurry-fashion-mnist")[0].name == "si-blurry"
    assert parse_scenario("blurry-fashion-mnist")[0].name == "blurry"
    assert parse_scenario("online-split-fashion-mnist")[0].name == "online-split"


def test_online_split_is_the_class_split_in_a_seeded_arrival_order():
    data = toy()
    s = stream("online-split", data)
    offline = make_stream("split-fashion-mnist", 5, dataset=data)
    assert s.online and not offline.online
    for e, o in zip(s, offline, strict=True):
        assert sorted(e.train_idx.tolist()) == o.train_idx.tolist() and e.classes == o.classes
        assert e.train_idx.tolist() != o.train_idx.tolist()  # shuffled once, not in dataset order
    assert_partition(s, len(data.train_y))


@pytest.mark.parametrize("kind", ["blurry", "si-blurry"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("disjoint,blurred", [(50, 10), (0, 30), (100, 0), (40, 100)])
def test_blurry_streams_partition_the_training_set(kind, seed, disjoint, blurred):
    data = toy(seed=seed)
    s = stream(kind, data, seed=seed, disjoint=disjoint, blurred=blurred)
    assert s.online
    assert_partition(s, len(data.train_y))  # 10 classes, T=5: every class is used


@pytest.mark.parametrize("kind", ["blurry", "si-blurry"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_disjoint_class_lies_in_one_task(kind, seed):
    s = stream(kind, toy(seed=seed), seed=seed, disjoint=50, blurred=30)
    dis = s.info["disjoint_classes"]
    for t, e in enumerate(s):
        labels = set(e.labels(e.train_idx).tolist())
        for u in range(len(s)):
            for c in dis[u]:
                assert (c in labels) == (u == t and (e.data.train_y == c).any().item())
    blurry_homes = [set(b) for b in s.info["blurry_classes"]]
    assert all(not (a & b) for i, a in enumerate(blurry_homes) for b in blurry_homes[i + 1:])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("blurred", [10, 30])
def test_iblurry_task_keeps_its_share_of_its_blurry_samples(seed, blurred):
    data = toy(per_class=100, seed=seed)
    s = stream("blurry", data, seed=seed, blurred=blurred)
    for t, e in enumerate(s):
        home = torch.tensor(s.info["blurry_classes"][t])
        n_home = int(torch.isin(data.train_y, home).sum())
        kept = int(torch.isin(data.train_y[e.train_idx], home).sum())
        assert kept >= n_home - n_home * blurred // 100  # the first floor(n*M/100) leave, some may come back
        # per class, in expectation (the leavers are the first in dataset order): a loose bound
        for c in home.tolist():
            n_c = int((data.train_y == c).sum())
            assert int((data.train_y[e.train_idx] == c).sum()) >= (1 - 2 * blurred / 100) * n_c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_si_blurry_moves_at_most_m_percent_of_the_blurry_samples(seed):
    data = toy(seed=seed)
    s = stream("si-blurry", data, seed=seed, disjoint=50, blurred=10)
    home_of = {c: t for t, grp in enumerate(s.info["blurry_classes"]) for c in grp}
    n_blurry = int(torch.isin(data.train_y, torch.tensor(list(home_of))).sum())
    away = sum(int(sum(1 for y in data.train_y[e.train_idx].tolist() if y in home_of and home_of[y] != t))
               for t, e in enumerate(s))
    assert away <= n_blurry * 10 // 100


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_si_blurry_with_no_blur_and_all_disjoint_is_disjoint_class_incremental(seed):
    data = toy(seed=seed)
    s = stream("si-blurry", data, seed=seed, disjoint=100, blurred=0)
    seen = set()
    for e in s:
        labels = set(e.labels(e.train_idx).tolist())
        assert not labels & seen
        assert e.train_idx.sort().values.tolist() == torch.isin(data.train_y, torch.tensor(sorted(labels),
                                                                dtype=torch.long)).nonzero().flatten().tolist()
        seen |= labels
    assert seen == set(range(10)) and s.info["blurry_classes"] == [[]] * 5
    assert len({len(g) for g in s.info["disjoint_classes"]}) > 1 or seed == 5  # random task sizes


def test_iblurry_with_no_blur_and_all_disjoint_is_an_equal_class_split():
    s = stream("blurry", toy(), disjoint=100, blurred=0)
    assert [len(g) for g in s.info["disjoint_classes"]] == [2] * 5
    assert [len(set(e.labels(e.train_idx).tolist())) for e in s] == [2] * 5


def test_blurry_tasks_counts_match_the_authors_formulas():
    # 12 classes, T=5, N=50: n_dis = floor(floor(6)/5)*5 = 5, n_blur = floor(7/5)*5 = 5, 2 classes left out
    y = torch.arange(12).repeat(10)
    tasks, dis, blur = blurry_tasks(y, list(range(12)), 5, 50, 10, 0, stochastic=False)
    assert sum(len(d) for d in dis) == 5 and sum(len(b) for b in blur) == 5
    used = {c for grp in dis + blur for c in grp}
    assert len(used) == 10
    assert sorted(torch.cat(tasks).tolist()) == [i for i in range(120) if int(y[i]) in used]


@pytest.mark.parametrize("kind", ["online-split", "blurry", "si-blurry"])
def test_fixed_seed_gives_the_identical_stream(kind):
    a, b, c = stream(kind, seed=3), stream(kind, seed=3), stream(kind, seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert all(torch.equal(x.train_idx, y.train_idx) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("params,match", [({"disjoint": 150}, "percentage"), ({"blurred": -1}, "percentage"),
                                          ({"disjoint": "half"}, "must be int"), ({"mix": 3}, "unknown parameter")])
def test_bad_parameters_are_one_clear_line(params, match):
    with pytest.raises(LifelongError, match=match):
        stream("si-blurry", **params)


def test_blurry_refuses_a_class_order_and_too_many_tasks():
    with pytest.raises(LifelongError, match="class_order"):
        make_stream("blurry-fashion-mnist", 5, class_order=list(range(10)), dataset=toy())
    with pytest.raises(LifelongError, match="out of range"):
        stream("blurry", n=11)


@pytest.mark.parametrize("kind", ["blurry", "si-blurry"])
def test_blurry_streams_refuse_a_class_order_or_shuffle_they_would_ignore(kind):
    with pytest.raises(LifelongError, match="leave class_order unset"):
        make_stream(f"{kind}-digits", class_order=list(range(10)))
    with pytest.raises(LifelongError, match="leave shuffle_classes unset"):  # it trained as without it before
        make_stream(f"{kind}-digits", shuffle_classes=True)
