"""Online metrics (A_auc, online accuracy, anytime points) and eval-set matrix metrics on hand-computed inputs."""

import math

import pytest

from lifelong.evaluation.metrics import summarize
from lifelong.evaluation.online import a_auc, evaluation_points, online_accuracy, online_summary


def test_a_auc_is_the_mean_of_uniformly_spaced_evaluations():
    # trapezoid-free area / length with uniform spacing: (0.5 + 0.7 + 0.9) / 3
    assert a_auc([0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert a_auc([None, 0.4, 0.6]) == pytest.approx(0.5)  # before any label was seen: left out
    assert a_auc([]) is None


def test_online_accuracy_and_its_checks():
    assert online_accuracy(7, 20) == pytest.approx(0.35)
    assert online_accuracy(0, 0) is None
    with pytest.raises(ValueError):
        online_accuracy(21, 20)


def test_evaluation_points_count_crossed_multiples():
    assert evaluation_points(0, 10, 1000) == 0
    assert evaluation_points(990, 1000, 1000) == 1
    assert evaluation_points(995, 1005, 1000) == 1
    assert evaluation_points(0, 2500, 1000) == 2
    assert evaluation_points(0, 2500, 0) == 0


def test_online_summary_keys():
    out = online_summary(3, 4, [2, 4], [0.5, 1.0], 0.9)
    assert out == {"a_auc": 0.75, "a_last": 0.9, "online_accuracy": 0.75,
                   "anytime": {"samples": [2, 4], "accuracy": [0.5, 1.0]}}


def test_eval_set_metrics_by_hand():
    # 3 training experiences x 4 eval sets; set 0 learned at row 0, set 1 at row 1, set 2 at row 0, set 3 never
    R = [[0.8, 0.0, 0.6, 0.0],
         [0.5, 0.9, 0.7, 0.0],
         [0.4, 0.6, 0.3, float("nan")]]
    m = summarize(R, learned_at=[0, 1, 0, None])
    assert m["final_accuracy"] == pytest.approx((0.4 + 0.6 + 0.3) / 3)  # the NaN set is skipped
    row_means = [(0.8 + 0.6) / 4, (0.5 + 0.9 + 0.7) / 4, (0.4 + 0.6 + 0.3) / 3]
    assert m["average_incremental_accuracy"] == pytest.approx(sum(row_means) / 3)
    # BWT: set0 0.4-0.8, set1 0.6-0.9, set2 0.3-0.6
    assert m["bwt"] == pytest.approx(((0.4 - 0.8) + (0.6 - 0.9) + (0.3 - 0.6)) / 3)
    # forgetting: set0 max(0.8,0.5)-0.4, set1 0.9-0.6, set2 max(0.6,0.7)-0.3
    assert m["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.9 - 0.6) + (0.7 - 0.3)) / 3)
    assert m["fwt"] is None


def test_eval_set_metrics_reduce_to_the_square_ones():
    R = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.1], [0.5, 0.7, 0.95]]
    square = summarize(R, [0.1, 0.1, 0.1])
    sets = summarize(R, learned_at=[0, 1, 2])
    for key in ("final_accuracy", "bwt", "forgetting"):
        assert math.isclose(sets[key], square[key]), key


def test_eval_set_metrics_need_one_entry_per_set():
    with pytest.raises(ValueError, match="eval sets"):
        summarize([[0.5, 0.5]], learned_at=[0])
