"""Schedule formulas against hand-computed values at phase boundaries and mid-phase, and their identities."""

import math

import pytest

from lifelong.schedules import (
    SCHEDULES,
    WSD,
    WSDC,
    WSDS,
    Constant,
    Cosine,
    Infinite,
    Linear,
    Refined,
    RepeatedCosine,
    decay_branch,
    make_schedule,
)
from lifelong.schedules.infinite import anneal


def values(schedule, steps):
    return {t: schedule.lr(t) for t in steps}


def assert_values(schedule, expected):
    for step, want in expected.items():
        assert schedule.lr(step) == pytest.approx(want, abs=1e-12), f"step {step}"


def test_registry_has_every_cli_name():
    names = {"constant", "linear", "cosine", "repeated-cosine", "wsd", "wsd-s", "wsdc", "infinite", "refined"}
    assert set(SCHEDULES) == names
    for name in names:
        assert SCHEDULES.get(name).name == name


def test_constant():
    assert_values(Constant(peak=0.3, warmup=3), {0: 0.0, 1: 0.1, 3: 0.3, 4: 0.3, 10_000: 0.3})
    assert_values(Constant(peak=0.3), {0: 0.3, 7: 0.3})


def test_linear():
    assert_values(Linear(peak=1.0, total=10), {0: 1.0, 5: 0.5, 9: 0.1, 10: 0.0, 50: 0.0})
    assert_values(
        Linear(peak=1.0, warmup=4, min_lr=0.2, total=12),
        {0: 0.0, 2: 0.5, 4: 1.0, 8: 0.6, 10: 0.4, 12: 0.2, 13: 0.2},
    )


def test_cosine():
    s = Cosine(peak=1.0, warmup=4, min_lr=0.2, total=12)
    assert_values(s, {0: 0.0, 2: 0.5, 4: 1.0, 6: 0.2 + 0.4 * (1 + math.sqrt(0.5)), 8: 0.6, 12: 0.2, 99: 0.2})
    assert s.lr(10) == pytest.approx(0.2 + 0.4 * (1 - math.sqrt(0.5)))


def test_repeated_cosine_rewarms_every_period():
    s = RepeatedCosine(peak=1.0, warmup=2, min_lr=0.0, period=10)
    assert_values(s, {0: 0.0, 1: 0.5, 2: 1.0, 6: 0.5, 10: 0.0, 11: 0.5, 12: 1.0, 16: 0.5, 26: 0.5})
    assert s.lr(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))


def test_budgeted_schedules_take_the_run_length():
    assert make_schedule("linear", total_steps=10, peak=1.0).lr(5) == pytest.approx(0.5)
    assert make_schedule("repeated-cosine", total_steps=8, peak=1.0).period == 8
    with pytest.raises(Exception, match="bind"):
        Cosine(peak=1.0).lr(3)


WSD_KW = dict(peak=1.0, warmup=10, decay_start=20, decay_steps=10, min_lr=0.1)


@pytest.mark.parametrize(
    "shape, at22, at25",
    [
        ("linear", 0.82, 0.55),
        ("cosine", 0.1 + 0.45 * (1 + math.cos(0.2 * math.pi)), 0.55),
        ("1-sqrt", 0.1 + 0.9 * (1 - math.sqrt(0.2)), 0.1 + 0.9 * (1 - math.sqrt(0.5))),
        ("exp", 0.1**0.2, 0.1**0.5),
        ("inverse", 1 / (1 + 9 * 0.2), 1 / 5.5),
    ],
)
def test_wsd_every_shape(shape, at22, at25):
    s = WSD(**WSD_KW, shape=shape)
    boundaries = {0: 0.0, 5: 0.5, 9: 0.9, 10: 1.0, 15: 1.0, 19: 1.0, 20: 1.0, 30: 0.1, 31: 0.1, 10**6: 0.1}
    assert_values(s, {**boundaries, 22: at22, 25: at25})
    decay = [s.lr(t) for t in range(20, 31)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), "decay is monotone"


def test_wsd_without_warmup_and_linear_equals_warmup_plus_linear_decay():
    assert WSD(peak=2.0, warmup=0, decay_start=5, decay_steps=5, min_lr=0.0).lr(0) == 2.0
    wsd = WSD(peak=1.0, warmup=4, decay_start=4, decay_steps=16, min_lr=0.0, shape="linear")
    lin = Linear(peak=1.0, warmup=4, min_lr=0.0, total=20)
    assert [wsd.lr(t) for t in range(30)] == pytest.approx([lin.lr(t) for t in range(30)])


def test_wsdc_is_wsd_whose_decay_ends_tail_steps_before_the_run():
    wsdc = WSDC(peak=1.0, warmup=10, decay_steps=10, tail_steps=40, min_lr=0.1, shape="cosine")
    bound = wsdc.bind(70)
    wsd = WSD(**WSD_KW, shape="cosine")  # decay_start=20 = 70 - 40 - 10
    assert bound.decay_start == 20 and bound.end == 70
    assert [bound.lr(t) for t in range(70)] == [wsd.lr(t) for t in range(70)]
    assert all(bound.lr(t) == 0.1 for t in range(30, 70)) and bound.lr(29) > 0.1  # the 40-step tail
    longer = wsdc.bind(100)  # a longer run: the stable phase grows, the decay still leaves 40 tail steps
    assert longer.decay_start == 50 and longer.lr(49) == 1.0 and longer.lr(59) > 0.1 == longer.lr(60)
    no_tail = WSDC(peak=1.0, warmup=10, decay_steps=10, min_lr=0.1, shape="cosine").bind(70)
    assert no_tail.lr(50) == 1.0 and bound.lr(50) == 0.1  # tail_steps moves the decay
    with pytest.raises(Exception, match="bind"):
        wsdc.lr(0)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt", "exp", "inverse"])
def test_wsd_s_with_one_pit_stop_equals_wsd(shape):
    s = WSDS(peak=1.0, warmup=10, pit_stops=(100,), decay_fraction=0.1, min_lr=0.1, shape=shape)
    assert s.decay_windows() == [(91, 100)]
    wsd = WSD(peak=1.0, warmup=10, decay_start=91, decay_steps=9, min_lr=0.1, shape=shape)
    assert [s.lr(t) for t in range(150)] == [wsd.lr(t) for t in range(150)]


def test_wsd_s_pit_stops_decay_then_jump_back_to_peak():
    s = WSDS(peak=1.0, warmup=10, pit_stops="100,200,400", decay_fraction=0.1, min_lr=0.1, shape="linear")
    assert s.pit_stops == (100, 200, 400)
    assert s.decay_windows() == [(91, 100), (190, 200), (380, 400)]
    expected = {
        0: 0.0, 5: 0.5, 10: 1.0, 90: 1.0, 91: 1.0, 99: 0.2,
        100: 1.0, 189: 1.0, 190: 1.0, 195: 0.55, 199: 0.19,
        200: 1.0, 379: 1.0, 395: 0.325, 399: 0.145, 400: 0.1, 500: 0.1,
    }  # fmt: skip
    assert_values(s, expected)


def test_wsd_s_inverse_decay_is_decreasing_and_convex():
    s = WSDS(peak=1.0, warmup=0, pit_stops=(1000,), decay_fraction=0.2, min_lr=0.1, shape="inverse")
    d = [s.lr(t) for t in range(800, 1001)]
    assert d[0] == 1.0 and d[-1] == pytest.approx(0.1)
    diffs = [b - a for a, b in zip(d, d[1:], strict=False)]
    assert all(x < 0 for x in diffs)
    assert all(b >= a - 1e-15 for a, b in zip(diffs, diffs[1:], strict=False))


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt", "exp", "inverse"])
def test_decay_branch_off_a_stable_main_branch_equals_wsd(shape):
    main = WSD(peak=1.0, warmup=10, decay_start=10**9, decay_steps=1, min_lr=0.1)
    branch = decay_branch(main, start=50, steps=20, shape=shape, min_lr=0.1)
    wsd = WSD(peak=1.0, warmup=10, decay_start=50, decay_steps=20, min_lr=0.1, shape=shape)
    assert len(branch) == 20
    assert branch == pytest.approx([wsd.lr(t) for t in range(50, 70)], abs=1e-15)


def test_decay_branch_during_warmup_starts_from_the_current_rate():
    main = Constant(peak=1.0, warmup=10)
    assert decay_branch(main, start=5, steps=4, shape="linear", min_lr=0.0) == pytest.approx(
        [0.5, 0.375, 0.25, 0.125]
    )


INF = dict(peak=1.0, constant=0.5, min_lr=0.05, warmup=10, cooldown_end=30, constant_end=80, total=100)


@pytest.mark.parametrize(
    "shape, timescale, mid",
    [("cosine", 10.0, 0.75), ("linear", 10.0, 0.75), ("inverse-sqrt", 3.0, 1 / math.sqrt(2.5))],
)
def test_infinite_phases(shape, timescale, mid):
    s = Infinite(**INF, cooldown_shape=shape, timescale=timescale)
    expected = {
        0: 0.0, 5: 0.5, 10: 1.0, 20: mid, 30: 0.5, 31: 0.5, 55: 0.5, 80: 0.5,
        90: 0.5 * 0.1**0.5, 100: 0.05, 101: 0.05, 10**6: 0.05,
    }  # fmt: skip
    assert_values(s, expected)


@pytest.mark.parametrize("shape", ["cosine", "inverse-sqrt", "linear"])
def test_infinite_is_continuous_at_every_phase_boundary(shape):
    s = Infinite(
        peak=1.0, constant=0.3, min_lr=0.01, warmup=1000, cooldown_end=3000, constant_end=8000, total=10000,
        cooldown_shape=shape, timescale=10.0,
    )  # fmt: skip
    assert s.cooldown(0.0) == pytest.approx(1.0) and s.cooldown(1.0) == pytest.approx(0.3)
    assert anneal(8000, 8000, 10000, 0.3, 0.01) == 0.3 and anneal(10000, 8000, 10000, 0.3, 0.01) == 0.01
    # no jump at a boundary is larger than the largest change between neighbouring steps inside a phase
    lrs = [s.lr(t) for t in range(10002)]
    jumps = [abs(b - a) for a, b in zip(lrs, lrs[1:], strict=False)]
    edges = {b + d for b in (1000, 3000, 8000, 10000) for d in (-1, 0)}
    inside = max(j for t, j in enumerate(jumps) if t not in edges)
    assert inside < 3e-3
    for t in edges:
        assert jumps[t] <= inside * 1.01, t


def test_inverse_sqrt_cooldown_tends_to_linear():
    a = Infinite(**INF, cooldown_shape="inverse-sqrt", timescale=1e-9)
    b = Infinite(**INF, cooldown_shape="linear")
    assert [a.lr(t) for t in range(40)] == pytest.approx([b.lr(t) for t in range(40)], abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 11, 500])
@pytest.mark.parametrize("smoothing, power", [(0.0, 2.0), (0.1, 2.0), (0.3, 1.0)])
def test_refined_with_constant_norms_equals_linear_decay(n, smoothing, power):
    s = Refined(peak=0.7, grad_norms=(2.5,) * n, smoothing=smoothing, power=power)
    lin = Linear(peak=0.7, total=n - 1)
    assert [s.lr(t) for t in range(n + 5)] == pytest.approx([lin.lr(t) for t in range(n + 5)], abs=1e-12)
    assert s.lr(0) == 0.7 and s.lr(n - 1) == 0.0


def test_refined_hand_computed_and_scale_invariant():
    s = Refined(peak=1.0, grad_norms=(1.0, 2.0, 1.0), smoothing=0.0)
    # inv = [1, 1/4, 1]; tails (exclusive) = [5/4, 1, 0]; w = [5/4, 1/4, 0]; / max
    assert [s.lr(t) for t in range(4)] == pytest.approx([1.0, 0.2, 0.0, 0.0])
    norms = [3.0, 2.5, 2.0, 2.2, 1.5, 1.2, 1.4, 1.0, 0.9, 0.8]
    a = Refined(peak=1.0, grad_norms=norms, smoothing=0.2)
    b = Refined(peak=1.0, grad_norms=[17 * g for g in norms], smoothing=0.2)
    assert [a.lr(t) for t in range(10)] == pytest.approx([b.lr(t) for t in range(10)])
    assert max(a.lr(t) for t in range(10)) == pytest.approx(1.0)
    warm = Refined(peak=1.0, grad_norms=norms, smoothing=0.2, warmup=4)
    assert warm.lr(0) == 0.0 and warm.lr(2) == pytest.approx(0.5 * a.lr(2)) and warm.lr(5) == a.lr(5)


def test_refined_reads_norms_from_a_file(tmp_path):
    (tmp_path / "n.json").write_text('{"grad_norms": [1, 1, 1, 1, 1]}')
    (tmp_path / "n.txt").write_text("1\n1\n1\n1\n1\n")
    for path in ("n.json", "n.txt"):
        s = make_schedule("refined", peak=1.0, grad_norms=str(tmp_path / path), smoothing=0)
        assert [s.lr(t) for t in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert make_schedule("refined", grad_norms="1,1,1").grad_norms == (1.0, 1.0, 1.0)


def test_schedules_are_pure_and_hashable():
    s = WSD(**WSD_KW)
    first = [s.lr(t) for t in range(40)]
    assert [s.lr(t) for t in reversed(range(40))][::-1] == first
    assert s == WSD(**WSD_KW) and hash(s) == hash(WSD(**WSD_KW))
    assert values(s, [3]) == {3: 0.3}
