"""Continual-evaluation metrics on hand-made curves; every expected number is worked out in the comments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.errors import LifelongError
from lifelong.evaluation.continual import (
    curve_from_rows,
    curve_metrics,
    learning_curve_area,
    max_window_change,
    mean_seen_accuracy,
    min_acc,
    stability_gaps,
    wc_acc,
    windowed_forgetting,
    windowed_forgetting_per_task,
    windowed_plasticity,
    windowed_plasticity_per_task,
)

# Three experiences, boundaries |T_0| = 3, |T_1| = 6, |T_2| = 9, one evaluation per step 1..9.
# Values are multiples of 1/8 so every sum below is exact in floating point.
N = None
E0 = [0.5, 0.75, 1.0, 0.75, 0.5, 0.375, 0.25, 0.5, 0.625]  # learned on steps 1-3, forgotten afterwards
E1 = [N, N, N, 0.25, 0.625, 0.875, 0.5, 0.75, 0.875]        # learned on steps 4-6
E2 = [N, N, N, N, N, N, 0.25, 0.5, 1.0]                      # learned on steps 7-9
CURVE = {"steps": list(range(1, 10)), "accuracy": [list(r) for r in zip(E0, E1, E2, strict=True)]}
BOUNDS = [3, 6, 9]


def test_min_acc_and_wc_acc_by_hand():
    # min-ACC: E0 after step 3 -> min(0.75, 0.5, 0.375, 0.25, 0.5, 0.625) = 0.25;
    #          E1 after step 6 -> min(0.5, 0.75, 0.875) = 0.5; mean = 0.375.
    assert min_acc(CURVE, BOUNDS) == pytest.approx(0.375)
    # WC-ACC at t = 9 (current task E2, K = 3): 1/3 * 1.0 + 2/3 * 0.375 = 0.583333...
    assert wc_acc(CURVE, BOUNDS) == pytest.approx(1 / 3 + 2 / 3 * 0.375)


def test_windowed_forgetting_by_hand():
    # Windows slide over every evaluation since the task was seen (the authors' code), its own training included:
    # E0 (steps 1-9): 0.5, 0.75, 1.0, 0.75, 0.5, 0.375, 0.25, 0.5, 0.625
    #   w=2: 1.0->0.75 = 0.25;  w=3: 1.0->0.5 = 0.5;  w=4: 1.0->0.375 = 0.625;  w>=5: 1.0->0.25 = 0.75
    # E1 (steps 4-9): 0.25, 0.625, 0.875, 0.5, 0.75, 0.875 -> 0.875->0.5 = 0.375 across its switch (w>=2)
    # E2 (steps 7-9): 0.25, 0.5, 1.0 -> 0.   WF = mean over the three seen tasks (the current one included).
    assert windowed_forgetting_per_task(CURVE, BOUNDS, 2) == {0: 0.25, 1: 0.375, 2: 0.0}
    assert windowed_forgetting(CURVE, BOUNDS, 2) == pytest.approx(0.625 / 3)
    assert windowed_forgetting(CURVE, BOUNDS, 3) == pytest.approx(0.875 / 3)
    assert windowed_forgetting(CURVE, BOUNDS, 4) == pytest.approx(1.0 / 3)
    assert windowed_forgetting(CURVE, BOUNDS, 10) == pytest.approx(1.125 / 3)
    assert windowed_forgetting(CURVE, BOUNDS, 1) == 0.0  # a window of one evaluation holds no pair


def test_windowed_plasticity_by_hand():
    # Same windows, largest gain: E0 w=2 0.25, w>=3 0.5->1.0 = 0.5; E1 w=2 0.25->0.625 = 0.375, w>=3 0.625;
    # E2 w=2 0.5, w>=3 0.75.  w=2: 1.125 / 3 = 0.375;  w>=3: 1.875 / 3 = 0.625.
    assert windowed_plasticity_per_task(CURVE, BOUNDS, 2) == {0: 0.25, 1: 0.375, 2: 0.5}
    assert windowed_plasticity(CURVE, BOUNDS, 2) == pytest.approx(0.375)
    assert windowed_plasticity(CURVE, BOUNDS, 100) == pytest.approx(0.625)


# Synthetic collapse: boundaries |T_0| = 2, |T_1| = 4; E0 is learned to 0.9, collapses to 0.3 at the first evaluation
# after the switch, then recovers to 0.95; E1 is learned from 0.6 to 0.8.
COLLAPSE = {"steps": [1, 2, 3, 4], "accuracy": [[0.5, N], [0.9, N], [0.3, 0.6], [0.95, 0.8]]}


def test_windowed_forgetting_counts_the_collapse_right_after_the_switch():
    # The window {step 2, step 3} slides across the switch: WF(E0) = 0.9 - 0.3 = 0.6 for every w >= 2
    # (the authors' definition); E1 never drops. Mean over the two seen tasks = 0.3.
    for w in (2, 10, 100):
        per_task = windowed_forgetting_per_task(COLLAPSE, [2, 4], w)
        assert per_task[0] == pytest.approx(0.6) and per_task[1] == 0.0
        assert windowed_forgetting(COLLAPSE, [2, 4], w) == pytest.approx(0.3)


def test_windowed_plasticity_counts_the_recovery_after_the_switch():
    # E0: learned 0.5 -> 0.9 (+0.4), recovers 0.3 -> 0.95 (+0.65) after the switch: WP(E0) = 0.65 for w >= 2.
    # E1: 0.6 -> 0.8 = 0.2.  Mean (0.65 + 0.2) / 2 = 0.425.
    per_task = windowed_plasticity_per_task(COLLAPSE, [2, 4], 2)
    assert per_task[0] == pytest.approx(0.65) and per_task[1] == pytest.approx(0.2)
    assert windowed_plasticity(COLLAPSE, [2, 4], 10) == pytest.approx(0.425)


def test_lca_leaves_out_tasks_with_fewer_than_beta_evaluations():
    # beta = 2: E0 current at steps 1, 2 -> (0.5 + 0.9) / 2 = 0.7; E1 current at steps 3, 4 -> 0.7.
    assert learning_curve_area(COLLAPSE, [2, 4], 2) == pytest.approx(0.7)
    # Boundaries [3, 4]: E1 is current only at step 4 (one evaluation < beta) and is left out -> E0 alone:
    # (0.5 + 0.9) / 2 = 0.7 (averaging over the single value too would give (0.7 + 0.8) / 2).
    assert learning_curve_area(COLLAPSE, [3, 4], 2) == pytest.approx(0.7)
    assert learning_curve_area(COLLAPSE, [2, 4], 3) is None  # no task has 3 evaluations while current


def test_wc_acc_is_the_mean_of_current_accuracy_and_the_available_minima():
    # |T_0| = 1, |T_1| = 2; E0 is not evaluated after its end, so only E1 has a minimum (0.5).
    # The authors' code averages [A(E_2, f_3) = 0.75, 0.5] = 0.625 (not 0.75/3 + 2/3 * 0.5).
    curve = {"steps": [1, 2, 3], "accuracy": [[0.5, N, N], [N, 0.75, N], [N, 0.5, 0.75]]}
    assert min_acc(curve, [1, 2, 3]) == 0.5
    assert wc_acc(curve, [1, 2, 3]) == pytest.approx(0.625)


def test_curve_metrics_dict_by_hand():
    m = curve_metrics(CURVE, BOUNDS)
    assert m["evaluations"] == 9
    assert m["wf10"] == pytest.approx(1.125 / 3) and m["wf100"] == pytest.approx(1.125 / 3)
    assert m["wp10"] == pytest.approx(0.625) and m["wp100"] == pytest.approx(0.625)
    # LCA_10: every task had only 3 evaluations while current, fewer than beta = 10 -> no task qualifies.
    assert m["lca"] is None
    # LCA_3: (2.25/3 + 1.75/3 + 1.75/3) / 3 = 5.75 / 9;  LCA_2: (0.625 + 0.4375 + 0.375) / 3
    assert curve_metrics(CURVE, BOUNDS, lca_beta=3)["lca"] == pytest.approx(5.75 / 9)
    assert curve_metrics(CURVE, BOUNDS, windows=(2,), lca_beta=2)["lca"] == pytest.approx(1.4375 / 3)
    assert set(curve_metrics(CURVE, BOUNDS, windows=(2,))) >= {"wf2", "wp2"}


def test_stability_gaps_by_hand():
    g1, g2 = stability_gaps(CURVE, BOUNDS)
    # Switch into E1 at step 3 (old = E0): before 1.0; during 0.75, 0.5, 0.375 -> min 0.375 at step 6, end 0.375.
    # size 0.625; it settles at its minimum, so the dip lasts until step 6 (duration 3) and recovers 0 %.
    assert g1 == {"experience": 1, "switch_step": 3, "before": 1.0, "min": 0.375, "min_step": 6, "end": 0.375,
                  "size": 0.625, "duration": 3, "recovery": 0.0}
    # Switch into E2 at step 6 (old = mean of E0, E1): before (0.375 + 0.875)/2 = 0.625.
    # During: step 7 (0.25+0.5)/2 = 0.375, step 8 (0.5+0.75)/2 = 0.625, step 9 (0.625+0.875)/2 = 0.75.
    # size 0.625 - 0.375 = 0.25; back to min(before, end) = 0.625 at step 8 -> duration 2;
    # recovery (0.75 - 0.375) / 0.25 = 1.5 (ends above the pre-switch level).
    assert g2 == {"experience": 2, "switch_step": 6, "before": 0.625, "min": 0.375, "min_step": 7, "end": 0.75,
                  "size": 0.25, "duration": 2, "recovery": 1.5}


def test_no_dip_gives_zero_size_and_duration():
    curve = {"steps": [1, 2, 3, 4], "accuracy": [[0.5, N], [0.75, N], [0.75, 0.5], [0.875, 0.75]]}
    (g,) = stability_gaps(curve, [2, 4])
    assert g["size"] == 0.0 and g["duration"] == 0 and g["recovery"] is None


def test_evaluation_only_at_boundaries_min_acc_is_min_of_boundary_rows():
    # sanity check: evaluations at task boundaries only -> min of the later boundary accuracies.
    curve = {"steps": [10, 20, 30], "accuracy": [[0.9, N, N], [0.6, 0.8, N], [0.7, 0.5, 0.9]]}
    # E0: min(0.6, 0.7) = 0.6 ; E1: min(0.5) = 0.5 -> 0.55
    assert min_acc(curve, [10, 20, 30]) == pytest.approx(0.55)


def test_first_task_and_running_runs():
    one = {"steps": [1, 2], "accuracy": [[0.25], [0.5]]}
    m = curve_metrics(one, [], lca_beta=2)  # still on the first task, no boundary yet
    assert m["wc_acc"] == 0.5 and m["min_acc"] is None and m["stability_gaps"] == []
    assert m["wf10"] == 0.0  # the task being learned is tracked too; it never dropped
    assert m["wp10"] == pytest.approx(0.25) and m["lca"] == pytest.approx(0.375)
    running = {"steps": [1, 2, 3], "accuracy": [[0.75, N], [0.5, 0.25], [0.625, 0.5]]}
    m = curve_metrics(running, [1])  # E1 in progress after the switch at step 1
    assert m["min_acc"] == 0.5 and m["wc_acc"] == pytest.approx(0.5 / 2 + 0.5 / 2)
    assert m["stability_gaps"][0]["size"] == 0.25


def test_empty_curve_and_bad_curves():
    m = curve_metrics({"steps": [], "accuracy": []}, [5])
    assert all(m[k] is None for k in ("min_acc", "wc_acc", "wf10", "wp100", "lca"))
    with pytest.raises(LifelongError, match="strictly increasing"):
        curve_metrics({"steps": [2, 1], "accuracy": [[0.1], [0.2]]}, [])
    with pytest.raises(LifelongError, match="needs the keys"):
        curve_metrics({"steps": [1]}, [])
    with pytest.raises(LifelongError, match="window size"):
        max_window_change([0.1], 0)


def test_curve_from_rows_and_mean():
    curve = curve_from_rows([(5, 0, 0.5), (10, 0, 0.25), (10, 1, 0.75)], num_experiences=3)
    assert curve == {"steps": [5, 10], "accuracy": [[0.5, None, None], [0.25, 0.75, None]]}
    assert mean_seen_accuracy(curve) == [0.5, 0.5]


def brute(values, w, sign):
    best = 0.0
    for i in range(len(values)):
        for j in range(i + 1, min(len(values), i + w)):
            best = max(best, sign * (values[i] - values[j]))
    return best


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=30), st.integers(1, 12))
def test_max_window_change_matches_brute_force(values, w):
    assert max_window_change(values, w, "drop") == pytest.approx(brute(values, w, 1))
    assert max_window_change(values, w, "gain") == pytest.approx(brute(values, w, -1))
    assert max_window_change(sorted(values), w, "drop") == 0.0  # sanity (c): non-decreasing curve -> WF = 0


def test_task_drops_on_a_hand_made_curve():
    from lifelong.evaluation.continual import task_drops

    # boundaries 2, 4, 6; evaluations every step; task 0 trained to 0.9, dips to 0.3 in experience 1, ends at 0.7
    curve = {"steps": [1, 2, 3, 4, 5, 6],
             "accuracy": [[0.5, None, None], [0.9, None, None], [0.3, 0.6, None], [0.7, 0.8, None],
                          [0.6, 0.2, 0.5], [0.65, 0.5, 0.9]]}
    drops = task_drops(curve, [2, 4, 6])
    assert drops[0] == {"task": 0, "experience": 1, "end_of_training": 0.9, "before": 0.9, "min": 0.3,
                        "min_step": 3, "drop": pytest.approx(0.6), "end": 0.7}
    assert drops[1]["task"] == 0 and drops[1]["experience"] == 2 and drops[1]["min"] == 0.6
    assert drops[1]["drop"] == pytest.approx(0.1)
    assert drops[2] == {"task": 1, "experience": 2, "end_of_training": 0.8, "before": 0.8, "min": 0.2,
                        "min_step": 5, "drop": pytest.approx(0.6), "end": 0.5}
    assert len(drops) == 3


def authors_windowed(curve, boundaries, w, sign):
    """The authors' streaming procedure, written independently: per seen task a window of its last w values,
    the largest sign * (earlier - later) pair inside it after every evaluation, a running max, then the mean."""
    best, windows = {}, {}
    for step, row in zip(curve["steps"], curve["accuracy"], strict=True):
        current = sum(1 for b in boundaries if b < step)
        for j in range(current + 1):
            if j >= len(row) or row[j] is None:
                continue
            window = windows.setdefault(j, [])
            window.append(row[j])
            del window[:-w]
            pairs = [sign * (window[a] - window[b]) for a in range(len(window)) for b in range(a + 1, len(window))]
            best[j] = max([best.get(j, 0.0), *pairs])
    return sum(best.values()) / len(best) if best else None


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 8), st.data())
def test_windowed_metrics_match_the_authors_streaming_procedure(tasks, steps_per_task, w, data):
    boundaries = [steps_per_task * (j + 1) for j in range(tasks)]
    n = data.draw(st.integers(1, boundaries[-1]))
    rows = []
    for step in range(1, n + 1):
        current = sum(1 for b in boundaries if b < step)
        # unseen tasks get a value or None: the authors never evaluate them, so both must be ignored
        rows.append([data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0] + [None] * (j > current)))
                     for j in range(tasks)])
    curve = {"steps": list(range(1, n + 1)), "accuracy": rows}
    assert windowed_forgetting(curve, boundaries, w) == pytest.approx(authors_windowed(curve, boundaries, w, 1))
    assert windowed_plasticity(curve, boundaries, w) == pytest.approx(authors_windowed(curve, boundaries, w, -1))
