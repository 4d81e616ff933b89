"""Property tests: for any valid parameters a rate is finite, never negative and never above the peak."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lifelong.schedules import SHAPES, Infinite, Refined, StreamSchedule, decay_branch, make_schedule

rates = st.floats(0.0, 10.0, allow_nan=False)
fractions = st.floats(0.0, 1.0)
positive_fractions = st.floats(1e-6, 1.0)
steps = st.integers(0, 60)


@st.composite
def schedules(draw):
    """(schedule, run length, peak) with parameters valid by construction."""
    name = draw(st.sampled_from(["constant", "linear", "cosine", "repeated-cosine", "wsd", "wsd-s", "wsdc",
                                 "infinite", "refined"]))  # fmt: skip
    peak = draw(rates)
    warmup = draw(steps)
    total = warmup + draw(st.integers(1, 200))
    shape = draw(st.sampled_from(SHAPES))
    floor = peak * draw(fractions)
    if shape in ("exp", "inverse") and floor == 0:
        floor = peak
    p: dict = {"peak": peak, "warmup": warmup}
    if name in ("linear", "cosine"):
        p.update(min_lr=floor)
    elif name == "repeated-cosine":
        period = warmup + draw(st.integers(1, 50))
        p.update(min_lr=floor, period=period)
        total = period * draw(st.integers(1, 4))  # whole cycles: the last decay finishes
    elif name == "wsd":
        decay_start, decay_steps = warmup + draw(steps), draw(steps)
        p.update(decay_start=decay_start, decay_steps=decay_steps, min_lr=floor, shape=shape)
        total = decay_start + max(decay_steps, 1) + draw(steps)
    elif name == "wsdc":
        p.update(decay_steps=draw(steps), tail_steps=draw(steps), min_lr=floor, shape=shape)
        total = warmup + p["decay_steps"] + p["tail_steps"] + draw(st.integers(1, 60))
    elif name == "wsd-s":
        stops = sorted(draw(st.sets(st.integers(warmup + 1, warmup + 300), min_size=1, max_size=5)))
        p.update(pit_stops=stops, decay_fraction=draw(positive_fractions), min_lr=floor, shape=shape)
        total = stops[-1] + draw(steps)
    elif name == "infinite":
        peak = max(peak, 1e-9)
        constant = peak * draw(positive_fractions)
        cooldown_end = warmup + draw(steps)
        constant_end = cooldown_end + draw(steps)
        total = max(total, constant_end)
        cooldown_shape = draw(st.sampled_from(["cosine", "inverse-sqrt", "linear"]))
        min_lr = max(constant * draw(positive_fractions), 1e-300)
        p.update(
            peak=peak, constant=constant, min_lr=min_lr, cooldown_end=cooldown_end, constant_end=constant_end
        )
        p.update(cooldown_shape=cooldown_shape, timescale=draw(st.floats(1e-6, 1e4)))
    elif name == "refined":
        norms = draw(st.lists(st.floats(1e-3, 1e3), min_size=max(2, warmup), max_size=max(2, warmup) + 50))
        p.update(grad_norms=norms, smoothing=draw(fractions), power=draw(st.sampled_from([1.0, 2.0])))
        total = len(norms)  # one recorded norm per step of the run
    return make_schedule(name, total_steps=total, **p), total, p["peak"]


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_rate_is_never_negative_nan_or_above_peak(case):
    schedule, total, peak = case
    for t in range(0, total + 400, 3):
        lr = schedule.lr(t)
        assert math.isfinite(lr) and 0.0 <= lr <= peak * (1 + 1e-12) + 1e-300, (t, lr)


@settings(max_examples=100, deadline=None)
@given(schedules(), steps, st.integers(1, 40), st.sampled_from(SHAPES), fractions)
def test_decay_branch_is_never_negative_or_nan(case, start, length, shape, fraction):
    schedule, _, peak = case
    floor = schedule.lr(start) * fraction
    if shape in ("exp", "inverse") and floor == 0 and schedule.lr(start) > 0:
        floor = schedule.lr(start)
    for lr in decay_branch(schedule, start, length, shape=shape, min_lr=floor):
        assert math.isfinite(lr) and 0.0 <= lr <= peak * (1 + 1e-12) + 1e-300


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["cosine", "inverse-sqrt", "linear"]),
    st.lists(st.integers(1, 300), min_size=1, max_size=5),
    st.one_of(st.none(), fractions),
)
def test_infinite_stream_never_rewarms(shape, later, anneal_fraction):
    first = Infinite(peak=1.0, constant=0.4, min_lr=0.01, warmup=5, cooldown_end=20, constant_end=80,
                     cooldown_shape=shape)  # fmt: skip
    stream = StreamSchedule(first, [100, *later], mode="infinite", anneal_fraction=anneal_fraction)
    for g in range(100, 100 + sum(later)):
        assert 0.01 - 1e-12 <= stream.lr(g) <= 0.4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-300, 1e300), min_size=2, max_size=40), fractions)
def test_refined_survives_extreme_norms(norms, smoothing):
    s = Refined(peak=1.0, grad_norms=norms, smoothing=smoothing)
    assert all(math.isfinite(s.lr(t)) and 0 <= s.lr(t) <= 1.0 for t in range(len(norms) + 2))
