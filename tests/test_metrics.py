import pytest

from lifelong.evaluation import metrics as M

# Hand-made 3x3 accuracy matrix: R[i][j] = accuracy on experience j after training experience i.
R = [[0.9, 0.1, 0.2],
     [0.6, 0.8, 0.3],
     [0.5, 0.7, 0.9]]
INITIAL = [0.1, 0.2, 0.1]


def test_final_accuracy():
    assert M.final_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)


def test_average_incremental_accuracy():
    # mean of 0.9, (0.6+0.8)/2 = 0.7, (0.5+0.7+0.9)/3 = 0.7
    assert M.average_incremental_accuracy(R) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_backward_transfer():
    # (0.5-0.9 + 0.7-0.8) / 2 = -0.25
    assert M.backward_transfer(R) == pytest.approx(-0.25)


def test_forward_transfer():
    # (R[0][1]-b1 + R[1][2]-b2)/2 = (0.1-0.2 + 0.3-0.1)/2 = 0.05
    assert M.forward_transfer(R, INITIAL) == pytest.approx(0.05)


def test_forgetting_uses_best_past_accuracy():
    # exp0: max(0.9, 0.6) - 0.5 = 0.4 ; exp1: max(0.8) - 0.7 = 0.1  -> 0.25
    assert M.average_forgetting(R) == pytest.approx(0.25)
    # forgetting differs from -BWT when accuracy peaked after the experience's own training
    peaked = [[0.5, 0.0, 0.0], [0.8, 0.9, 0.0], [0.6, 0.7, 0.9]]
    assert M.average_forgetting(peaked) == pytest.approx(((0.8 - 0.6) + (0.9 - 0.7)) / 2)
    assert M.backward_transfer(peaked) == pytest.approx(((0.6 - 0.5) + (0.7 - 0.9)) / 2)


def test_single_row_has_no_transfer_metrics():
    s = M.summarize([[0.8, 0.9]], [0.1, 0.1])
    assert s["final_accuracy"] == pytest.approx(0.85)
    assert s["bwt"] is None and s["forgetting"] is None and s["fwt"] is None


def test_an_experience_without_test_samples_is_skipped_by_every_mean():
    nan = float("nan")
    R = [[0.8, nan, 0.1], [0.6, nan, 0.2], [0.4, nan, 0.9]]
    m = M.summarize(R, [0.1, nan, 0.3])
    assert m["final_accuracy"] == pytest.approx((0.4 + 0.9) / 2)
    assert m["average_incremental_accuracy"] == pytest.approx((0.8 + 0.6 + (0.4 + 0.9) / 2) / 3)
    assert m["bwt"] == pytest.approx(0.4 - 0.8)
    assert m["forgetting"] == pytest.approx(0.8 - 0.4)
    assert m["fwt"] == pytest.approx(0.2 - 0.3)
