"""RunConfig validates itself when built, from the Python API as from flags or YAML."""

import pytest
import torch

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


def test_model_params_reach_the_backbone_typed_and_bad_ones_are_one_line():
    from lifelong.training.engine import Engine

    engine = Engine(RunConfig(scenario="split-digits", model="mlp", model_params="hidden=16,8"))
    assert [m.out_features for m in engine.model if isinstance(m, torch.nn.Linear)] == [16, 8, 10]
    with pytest.raises(LifelongError, match="unknown parameter of model mlp 'depth'"):
        RunConfig(scenario="split-digits", model="mlp", model_params="depth=3")


def test_auto_model_is_the_datasets_default_and_augment_off_drops_the_augmentation():
    import dataclasses

    from lifelong.data import load_dataset
    from lifelong.models.backbones import ReducedResNet18
    from lifelong.training.engine import Engine

    digits = load_dataset("digits")
    images = dataclasses.replace(digits, name="digit-images", default_model="resnet18",
                                 augment=lambda x, g: x)
    engine = Engine(RunConfig(scenario="split-digits"), dataset=images)
    assert isinstance(engine.model, ReducedResNet18)
    assert engine.stream[0].data.augment is not None
    plain = Engine(RunConfig(scenario="split-digits", augment=False), dataset=images)
    assert all(e.data.augment is None for e in plain.stream) and images.augment is not None
    assert type(Engine(RunConfig(scenario="split-digits"), dataset=digits).model).__name__ == "MLP"
