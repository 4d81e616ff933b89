"""Continual evaluation inside the engine: what is recorded, and that it never changes training."""

import pytest
import torch

from lifelong.errors import LifelongError
from lifelong.training.config import RunConfig
from lifelong.training.engine import Engine


def test_curve_shape_values_and_boundaries(digits_cfg):
    engine = Engine(digits_cfg(strategy="er", eval_every=4, eval_subsample=30))
    result = engine.run()
    curve = result["curve"]
    assert curve["steps"] == list(range(4, engine.position["global_step"] + 1, 4))
    for step, row in zip(curve["steps"], curve["accuracy"], strict=True):
        seen = sum(1 for b in [0, *engine.boundaries[:-1]] if step > b)  # experiences started by this step
        assert [a is not None for a in row] == [j < seen for j in range(5)]
        assert all(a is None or (a * 30).is_integer() for a in row)  # exact fractions of the 30-sample probe
    assert len(engine.boundaries) == 5 and engine.boundaries[-1] == engine.position["global_step"]


def test_background_and_inline_evaluation_agree_and_do_not_touch_training(digits_cfg):
    runs = [Engine(digits_cfg(strategy="er", eval_every=3, eval_subsample=25, eval_background=bg))
            for bg in (True, False)]
    plain = Engine(digits_cfg(strategy="er"))
    results = [e.run() for e in (*runs, plain)]
    assert results[0]["curve"] == results[1]["curve"]
    for e in runs:
        for p, q in zip(e.model.parameters(), plain.model.parameters(), strict=True):
            assert torch.equal(p, q)  # training is bit-identical with or without continual evaluation
    assert results[0]["accuracy_matrix"] == results[2]["accuracy_matrix"]


def test_batchnorm_statistics_untouched_by_evaluation():
    cfg = dict(scenario="split-digits", model="resnet18", epochs=1, batch_size=64, eval_subsample=20)
    a, b = Engine(RunConfig.from_dict({**cfg, "eval_every": 2})), Engine(RunConfig.from_dict(cfg))
    a.run(), b.run()
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_bad_continual_evaluation_settings(digits_cfg):
    with pytest.raises(LifelongError, match="larger than the data"):
        Engine(digits_cfg(eval_every=5, eval_subsample=10_000))
    with pytest.raises(LifelongError, match="eval_every=-1 is out of range"):
        digits_cfg(eval_every=-1)


def test_continual_evaluation_that_would_record_nothing_is_refused(digits_cfg):
    with pytest.raises(LifelongError, match=r"eval_every=1000 is longer than the whole run \(\d+ steps\)"):
        Engine(digits_cfg(eval_every=1000))
    with pytest.raises(LifelongError, match="takes no SGD step"):
        Engine(digits_cfg(strategy="nmc", eval_every=5))
