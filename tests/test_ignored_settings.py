"""Settings that another setting makes meaningless are refused in one line instead of being silently ignored
(each of these trained exactly as without the setting before)."""

from __future__ import annotations

import pytest

from lifelong.cli import main
from lifelong.errors import LifelongError
from lifelong.lm.train import LMConfig, validate
from lifelong.training.config import RunConfig, parse_key_values


@pytest.mark.parametrize("settings,message", [
    ({"class_order": "1,0,2", "shuffle_classes": True}, "give one"),
    ({"optimizer": "adam", "momentum": 0.5}, "momentum=0.5 applies to sgd only"),
    ({"optimizer": "rmsprop", "momentum": 0.0}, "optimizer rmsprop takes its own"),
    ({"schedule_mode": "restart"}, "schedule_mode=restart has no effect without a schedule"),
    ({"schedule": "cosine", "infinite_continue": "annealed"}, "applies to schedule_mode=infinite only"),
    ({"branch_steps": 5}, "branch_steps=5 applies to the decay branches only"),
    ({"branch_shape": "cosine"}, "branch_shape=cosine applies"),
    ({"branch_min_lr": 0.001}, "branch_min_lr=0.001 applies"),
    ({"schedule": "cosine", "schedule_params": "warmup=2,warmup=5"}, "gives warmup twice"),
])
def test_a_setting_made_meaningless_by_another_is_refused(settings, message):
    with pytest.raises(LifelongError, match=message):
        RunConfig(scenario="split-digits", **settings)


@pytest.mark.parametrize("settings", [
    {"class_order": "1,0,2"}, {"shuffle_classes": True}, {"optimizer": "sgd", "momentum": 0.5},
    {"optimizer": "sgd-schedulefree", "momentum": 0.5}, {"optimizer": "adam"},
    {"schedule": "cosine", "schedule_mode": "restart"}, {"schedule": "constant", "schedule_mode": "restart"},
    {"branch_every_experience": True, "branch_steps": 5, "branch_shape": "cosine", "branch_min_lr": 0.001},
    {"schedule": "infinite", "schedule_mode": "infinite", "infinite_continue": "annealed"},
])
def test_the_same_settings_where_they_apply_are_accepted(settings):
    if settings.get("optimizer") == "sgd-schedulefree":
        pytest.importorskip("schedulefree")
    RunConfig(scenario="split-digits", **settings)


def test_key_values_continue_a_value_but_never_repeat_a_key():
    assert parse_key_values("schedule_params", "pit_stops=1,2,3,warmup=2") == {"pit_stops": "1,2,3", "warmup": "2"}
    with pytest.raises(LifelongError, match="gives decay_steps twice"):
        parse_key_values("schedule_params", "decay-steps=1,decay_steps=2")


def test_the_cli_refuses_in_one_line(tmp_path, capsys):
    code = main(["run", "--scenario", "split-digits", "--schedule-mode", "restart", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "no effect without a schedule" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("schedule,field,value", [
    ("cosine", "decay_shape", "exp"), ("linear", "decay_shape", "cosine"), ("wsd", "const_lr_ratio", 0.3),
    ("cosine", "cooldown_frac", 0.3), ("constant", "branch_frac", 0.2),
])
def test_lm_refuses_a_schedule_field_its_schedule_ignores(schedule, field, value):
    with pytest.raises(LifelongError, match=f"--{field.replace('_', '-')} {value} applies to --schedule"):
        validate(LMConfig(schedule=schedule, **{field: value}))


@pytest.mark.parametrize("schedule,field,value", [
    ("wsd", "decay_shape", "exp"), ("infinite", "const_lr_ratio", 0.3), ("infinite", "branch_frac", 0.2),
    ("wsd", "branch_frac", 0.2),
])
def test_lm_accepts_a_schedule_field_its_schedule_reads(schedule, field, value):
    assert getattr(validate(LMConfig(schedule=schedule, **{field: value})), field) == value
