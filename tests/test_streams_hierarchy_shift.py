"""HLE (hierarchical label expansion), concept shift and class-imbalanced streams."""

import pytest
import torch

from lifelong.data.datasets import ArrayDataset
from lifelong.data.hierarchy import FASHION_GROUPS
from lifelong.data.scenarios import make_stream, scenario_names
from lifelong.errors import LifelongError


def toy(name="fashion-mnist", n_classes=10, per_class=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(per_class)
    y = y[torch.randperm(len(y), generator=g)]
    ty = torch.arange(n_classes).repeat(3)
    return ArrayDataset(name, torch.zeros(len(y), 3, dtype=torch.uint8), y,
                        torch.zeros(len(ty), 3, dtype=torch.uint8), ty)


def hle(data=None, n=5, seed=0, **params):
    return make_stream("hle-fashion-mnist", n, seed=seed, dataset=data or toy(), params=params)


def test_hle_fashion_groups_hand_checked():
    s = hle()
    e0 = s[0]
    assert s.num_classes == 15 and s.online
    # Sneaker (7) is footwear (group 3) -> coarse id 10 + 3; Coat (4) is a top -> 10; Bag (8) -> 14
    assert e0.label_map[7] == 13 and e0.label_map[4] == 10 and e0.label_map[8] == 14 and e0.label_map[1] == 11
    assert FASHION_GROUPS == ((0, 2, 4, 6), (1,), (3,), (5, 7, 9), (8,))
    assert set(e0.labels(e0.train_idx).tolist()) == set(range(10, 15)) == set(e0.classes)


@pytest.mark.parametrize("mode", ["dual", "single"])
@pytest.mark.parametrize("seed", [0, 1])
def test_hle_every_fine_label_has_its_parent_earlier(mode, seed):
    s = make_stream("hle-fashion-mnist", 4, seed=seed, shuffle_classes=True, dataset=toy(), params={"mode": mode})
    seen: set[int] = set()
    for e in s:
        labels = set(e.labels(e.train_idx).tolist())
        for c in labels:
            if c < 10:
                assert int(s[0].label_map[c]) in seen  # its coarse parent came in an earlier experience
        seen |= labels
    assert seen == set(range(15))


def test_hle_dual_mode_coarse_and_fine_image_sets_are_equal():
    data = toy()
    s = hle(data, mode="dual")
    coarse = sorted(s[0].train_idx.tolist())
    fine = sorted(torch.cat([e.train_idx for e in s.experiences[1:]]).tolist())
    assert coarse == fine == list(range(len(data.train_y)))


def test_hle_single_mode_gives_each_image_one_label():
    data = toy()
    s = hle(data, mode="single", coarse_share=0.25)
    idx = torch.cat([e.train_idx for e in s])
    assert sorted(idx.tolist()) == list(range(len(data.train_y)))
    assert s[0].num_train == 10 * 10  # a quarter of each class's 40 images


def test_hle_evaluates_each_level_on_the_whole_test_set():
    data = toy()
    s = hle(data)
    coarse, fine = s.evaluated
    assert len(coarse.test_idx) == len(fine.test_idx) == len(data.test_y)
    assert coarse.labels(coarse.test_idx, "test").min() >= 10 and fine.label_map is None
    assert s.info["levels"] == ["coarse", "fine"]


def test_hle_uses_a_dataset_hierarchy_or_a_users_and_refuses_none():
    data = toy("digits")
    with pytest.raises(LifelongError, match="hierarchy"):
        make_stream("hle-digits", 3, dataset=data)
    s = make_stream("hle-digits", 3, dataset=data, params={"hierarchy": "0,1,2,3,4;5,6,7,8,9"})
    assert s.num_classes == 12 and int(s[0].label_map[6]) == 11
    data.coarse_of = [c // 5 for c in range(10)]
    assert make_stream("hle-digits", 3, dataset=data).fingerprint() == s.fingerprint()
    with pytest.raises(LifelongError, match="every class"):
        make_stream("hle-digits", 3, dataset=data, params={"hierarchy": "0,1;2"})
    assert "hle-fashion-mnist" in scenario_names() and "hle-digits" not in scenario_names()


def test_hle_bad_parameters():
    for params, match in (({"mode": "triple"}, "must be one of"), ({"coarse_share": "1.5"}, "strictly")):
        with pytest.raises(LifelongError, match=match):
            hle(**params)
    with pytest.raises(LifelongError, match="out of range"):
        hle(n=1)


def test_concept_shift_permute_relabels_a_partition_of_the_training_set():
    data = toy()
    s = make_stream("concept-shift-fashion-mnist", 4, seed=0, dataset=data)
    assert sorted(torch.cat([e.train_idx for e in s]).tolist()) == list(range(len(data.train_y)))
    assert torch.equal(s[0].label_map, torch.arange(10))
    for e in s.experiences[1:]:
        assert sorted(e.label_map.tolist()) == list(range(10)) and not torch.equal(e.label_map, torch.arange(10))
        assert len(e.test_idx) == len(data.test_y)
        assert torch.equal(e.labels(e.test_idx, "test"), e.label_map[data.test_y])


def test_concept_shift_merge_reduces_the_labels_over_time():
    data = toy()
    s = make_stream("concept-shift-fashion-mnist", 5, seed=0, dataset=data, params={"mode": "merge"})
    counts = [len(set(e.labels(e.train_idx).tolist())) for e in s]
    assert counts[0] == 10 and counts[-1] == 2 and counts == sorted(counts, reverse=True)
    # at 2 labels, the first five classes of the class order share a label, the last five another
    order, last = s.info["class_order"], s[-1].label_map
    assert {int(last[c]) for c in order[:5]} == {order[0]} and {int(last[c]) for c in order[5:]} == {order[5]}


def test_imbalanced_counts_hand_computed():
    data = toy(per_class=100)
    s = make_stream("imbalanced-fashion-mnist", 5, seed=0, dataset=data, params={"ratio": "10"})
    counts = [s.info["train_counts"][c] for c in s.info["class_order"]]
    assert counts == [int(100 * 10 ** (-k / 9)) for k in range(10)]
    assert counts[0] == 100 and counts[-1] == 10
    for e in s:
        assert set(data.train_y[e.train_idx].tolist()) == set(e.classes)


@pytest.mark.parametrize("kind,params", [("hle", {}), ("hle", {"mode": "single"}), ("concept-shift", {}),
                                         ("concept-shift", {"mode": "merge"}), ("imbalanced", {})])
def test_fixed_seed_gives_the_identical_stream(kind, params):
    def mk(seed):
        return make_stream(f"{kind}-fashion-mnist", 5, seed=seed, shuffle_classes=True, dataset=toy(),
                           params=params)
    assert mk(2).fingerprint() == mk(2).fingerprint() != mk(3).fingerprint()


def test_shift_bad_parameters():
    for kind, params, match in (("concept-shift", {"mode": "swap"}, "must be one of"),
                                ("concept-shift", {"min_labels": "0"}, "out of range"),
                                ("imbalanced", {"ratio": "0.5"}, ">= 1")):
        with pytest.raises(LifelongError, match=match):
            make_stream(f"{kind}-fashion-mnist", 5, dataset=toy(), params=params)
