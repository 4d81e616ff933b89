"""RunConfig validates itself when built, from the Python API as from flags or YAML."""

import pytest

from lifelong.errors import LifelongError
from lifelong.training.config import RunConfig


@pytest.mark.parametrize("changes,message", [
    ({"batch_size": 0}, r"batch_size=0 is out of range"),
    ({"lr": -1.0}, r"lr=-1.0 is out of range"),
    ({"lr": 0.0}, r"lr=0.0 is out of range"),
    ({"epochs": 0}, r"epochs=0 is out of range"),
    ({"optimizer": "rmsprup"}, r"unknown optimizer 'rmsprup'. Did you mean 'rmsprop'"),
    ({"optimizer": "adam", "optimizer_params": "momentum=0.9"}, r"unknown argument of Adam 'momentum'"),
    ({"hidden": "32,x"}, r"hidden='32,x' must be comma-separated integers"),
    ({"hparams": [1, 2]}, r"hparams=\[1, 2\] must be a mapping"),
    ({"optimizer": "sgd-schedulefree", "schedule": "cosine"}, r"replaces the schedule"),
    ({"infinite_continue": "later"}, r"infinite_continue='later' is not allowed"),
])
def test_python_api_refuses_bad_settings_at_construction(changes, message):
    with pytest.raises(LifelongError, match=message):
        RunConfig(**changes)


def test_optimizer_names_are_lower_case_with_a_suggestion():
    with pytest.raises(LifelongError, match="Did you mean 'rmsprop'"):
        RunConfig(optimizer="RMSprop")


def test_strings_are_converted_like_flags():
    cfg = RunConfig(shuffle_classes="no", batch_size="16", lr="0.5")
    assert cfg.shuffle_classes is False and cfg.batch_size == 16 and cfg.lr == 0.5


def test_unknown_setting_in_the_python_api_is_one_line_with_a_suggestion():
    with pytest.raises(LifelongError, match="unknown setting 'bach_size'. Did you mean 'batch_size'"):
        RunConfig(bach_size=4)
