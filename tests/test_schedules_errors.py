"""Bad input raises one clear LifelongError line that names the parameter."""

import pytest

from lifelong.errors import LifelongError
from lifelong.schedules import WSD, WSDS, Infinite, Refined, StreamSchedule, decay_branch, make_schedule


@pytest.mark.parametrize(
    "name, total, params, names",
    [
        ("cosine", 10, {"warmup": 20}, "warmup=20"),
        ("linear", 5, {"warmup": 6}, "warmup=6"),
        ("wsd", 10, {"warmup": 11, "decay_start": 20}, "warmup=11"),
        ("infinite", 40, {}, "warmup=50"),
        ("repeated-cosine", 100, {"warmup": 30, "period": 20}, "warmup=30"),
        ("wsd", None, {"warmup": 10, "decay_start": 5}, "decay_start=5"),
        ("wsd", None, {"peak": -0.1}, "peak=-0.1"),
        ("cosine", None, {"min_lr": -1e-4}, "min_lr=-0.0001"),
        ("infinite", None, {"constant": -1}, "constant=-1"),
        ("wsd", None, {"peak": 0.1, "min_lr": 0.2}, "min_lr=0.2"),
        ("cosine", None, {"peak": 0.1, "min_lr": 0.2}, "min_lr=0.2"),
        ("infinite", None, {"peak": 0.1, "constant": 0.2}, "constant=0.2"),
        ("infinite", None, {"constant": 1e-4, "min_lr": 2e-4}, "min_lr=0.0002"),
        ("wsd", None, {"shape": "square"}, "shape='square'"),
        ("wsd-s", None, {"shape": "sqrt"}, "shape='sqrt'"),
        ("infinite", None, {"cooldown_shape": "exp"}, "cooldown_shape='exp'"),
        ("wsd", None, {"shape": "exp", "min_lr": 0}, "min_lr=0"),
        ("wsd", None, {"shape": "inverse", "min_lr": 0}, "min_lr=0"),
        ("infinite", None, {"min_lr": 0}, "min_lr=0"),
        ("infinite", None, {"warmup": 50, "cooldown_end": 40}, "cooldown_end=40"),
        ("infinite", None, {"cooldown_end": 300, "constant_end": 200}, "constant_end=200"),
        ("infinite", 500, {"constant_end": 800}, "constant_end=800"),
        ("infinite", None, {"timescale": 0}, "timescale=0"),
        ("wsd-s", None, {"pit_stops": "100,50"}, "pit_stops"),
        ("wsd-s", None, {"pit_stops": "5,100", "warmup": 10}, "pit_stops=5"),
        ("wsd-s", None, {"pit_stops": "a,b"}, "pit_stops"),
        ("wsd-s", None, {"decay_fraction": 0}, "decay_fraction=0"),
        ("wsd", None, {"decay_steps": 2.5}, "decay_steps=2.5"),
        ("wsd", None, {"warmup": "ten"}, "warmup='ten'"),
        ("refined", None, {"grad_norms": "1,0,2"}, "grad_norms"),
        ("refined", None, {"grad_norms": "1"}, "grad_norms"),
        (
            "refined",
            None,
            {"grad_norms": "missing/norms.json"},
            "grad_norms='missing/norms.json': no such file",
        ),
        ("cosine", None, {"decay_start": 3}, "decay_start"),
        ("wsd", 0, {}, "steps=0"),
    ],
)
def test_bad_input_names_the_parameter(name, total, params, names):
    with pytest.raises(LifelongError) as err:
        make_schedule(name, total_steps=total, **params)
    message = str(err.value)
    assert names in message and "\n" not in message


def test_unknown_schedule_suggests_a_name():
    with pytest.raises(LifelongError, match="unknown schedule 'wsdd'. Did you mean 'wsd'"):
        make_schedule("wsdd")


def test_direct_construction_is_validated_too():
    with pytest.raises(LifelongError, match="decay_start=1 is before the end of warmup"):
        WSD(warmup=5, decay_start=1)
    with pytest.raises(LifelongError, match="min_lr=0.5 is above peak=0.1"):
        WSD(peak=0.1, min_lr=0.5)
    with pytest.raises(LifelongError, match="pit_stops"):
        WSDS(pit_stops=())
    with pytest.raises(LifelongError, match="constant=0.5 is above peak=0.1"):
        Infinite(peak=0.1, constant=0.5)
    with pytest.raises(LifelongError, match="warmup=9 is longer than the record"):
        Refined(grad_norms=(1.0, 2.0), warmup=9)


def test_branch_and_stream_errors():
    main = WSD()
    with pytest.raises(LifelongError, match="steps=0"):
        decay_branch(main, 100, 0)
    with pytest.raises(LifelongError, match="shape='cube'"):
        decay_branch(main, 100, 10, shape="cube")
    with pytest.raises(LifelongError, match="min_lr=0"):
        decay_branch(main, 100, 10, shape="exp", min_lr=0.0)
    with pytest.raises(LifelongError, match="min_lr=0.5 is above the main branch's rate at step 0"):
        decay_branch(main, 0, 10, min_lr=0.5)
    with pytest.raises(LifelongError, match="mode='sometimes'"):
        StreamSchedule(WSD(), [100], mode="sometimes")
    with pytest.raises(LifelongError, match="needs the infinite schedule"):
        StreamSchedule(WSD(), [100], mode="infinite")
    with pytest.raises(LifelongError, match="lengths"):
        StreamSchedule(WSD(), [100, 0])
