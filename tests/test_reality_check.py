"""The reality-check protocol: the evaluation data is not read while tuning; A = B is conventional reporting."""

from __future__ import annotations

import pytest

from lifelong.errors import LifelongError
from lifelong.training import runner
from lifelong.training.config import RunConfig
from lifelong.tuning import protocol

pytest.importorskip("optuna")

BASE = {"hidden": "16", "device": "cpu", "threads": 1}


def space(tmp_path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text("epochs: 1\nbatch_size: 64\n", encoding="utf-8")
    return str(path)


def test_evaluation_dataset_is_not_loaded_while_tuning(tmp_path, monkeypatch) -> None:
    """A loader spy: every dataset load is logged with the phase it happened in; B's only in phase 2."""
    import lifelong.data.datasets as datasets
    import lifelong.data.scenarios as scenarios
    from lifelong.tuning import study

    loads: list[tuple[str, str]] = []
    phase = ["tuning"]
    real_load = datasets.load_dataset

    def spy(name, root=None):
        loads.append((name, phase[0]))
        return real_load(name, root=root)

    real_compare = runner.compare

    def compare(*args, **kwargs):
        phase[0] = "evaluation"
        return real_compare(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    monkeypatch.setattr(scenarios, "load_dataset", spy)
    monkeypatch.setattr(runner, "compare", compare)
    monkeypatch.setattr(study, "_VALIDATION_CACHE", {})
    # phase 2 trains in worker processes (they load B themselves); phase 1 (1 worker) runs in this process
    base = RunConfig.from_dict({**BASE, "scenario": "split-digits"}).to_dict()
    out = protocol.reality_check(base, "split-digits", "split-digits", ["er"], [0], 2,
                                 1, str(tmp_path), space_file=space(tmp_path), quiet=True)
    assert ("digits", "tuning") in loads
    assert out["rows"][0]["evaluation_accuracy"] is not None
    # with another evaluation scenario, the tuning phase never loads it
    loads.clear()
    phase[0] = "tuning"
    base_b = {**base}
    try:
        protocol.reality_check(base_b, "split-digits", "split-fashion-mnist", ["er"], [0], 1, 1,
                               str(tmp_path / "b"), space_file=space(tmp_path), quiet=True)
    except LifelongError:
        pass  # Fashion-MNIST absent on this machine: phase 2 fails, but only after phase 1 ended
    assert not [n for n, p in loads if n == "fashion-mnist" and p == "tuning"]
    assert all(n == "digits" for n, p in loads if p == "tuning")


def test_same_scenario_reduces_to_conventional_reporting(tmp_path) -> None:
    """A = B: phase 2 equals `compare` with the tuned settings on that scenario's test split."""
    base = RunConfig.from_dict({**BASE, "scenario": "split-digits"}).to_dict()
    out = protocol.reality_check(base, "split-digits", "split-digits", ["er", "naive"], [0], 2, 1,
                                 str(tmp_path / "rc"), space_file=space(tmp_path), quiet=True)
    for row in out["rows"]:
        settings = dict(row["best_params"])
        cfg = RunConfig.from_dict({**base, **settings, "strategy": row["strategy"]})
        plain = runner.compare(cfg, [row["strategy"]], [0], tmp_path / f"plain-{row['strategy']}", workers=1)
        assert row["evaluation_accuracy"] == pytest.approx(plain["results"][0]["final_accuracy"], abs=1e-9)
        assert row["gap"] == pytest.approx(row["tuning_accuracy"] - row["evaluation_accuracy"])
    ranks = sorted(r["evaluation_rank"] for r in out["rows"])
    assert ranks == [1, 2]


def test_ranking_and_structure_check() -> None:
    assert protocol.ranking({"a": 0.5, "b": 0.7, "c": None}) == {"b": 1, "a": 2, "c": 3}
    with pytest.raises(LifelongError, match="keeps the scenario structure"):
        protocol.check_same_structure("split-digits", "permuted-digits")


def test_a_rerun_whose_tuning_chose_another_setting_evaluates_it_beside_the_old_one(tmp_path, monkeypatch) -> None:
    """More trials can change the best setting: phase 2 then failed with 'holds a run with other settings'."""
    base = RunConfig.from_dict({**BASE, "scenario": "split-digits"}).to_dict()
    args = (base, "split-digits", "split-digits", ["er"], [0], 1, 1, str(tmp_path / "rc"))
    first = protocol.reality_check(*args, space_file=space(tmp_path), quiet=True)
    from lifelong.tuning import cli as tune_cli

    real_tune = tune_cli.tune

    def tune_with_another_best(*a, **kw):
        out = real_tune(*a, **kw)
        for s in out["studies"]:
            s["best_params"] = {**s["best_params"], "lr": s["best_params"]["lr"] / 2}
        return out

    monkeypatch.setattr(tune_cli, "tune", tune_with_another_best)
    second = protocol.reality_check(*args, space_file=space(tmp_path), quiet=True)
    assert second["rows"][0]["best_params"] != first["rows"][0]["best_params"]
    evaluations = [d for d in tmp_path.rglob("evaluation") if d.is_dir()]
    assert len(evaluations) == 1 and len(list(evaluations[0].iterdir())) == 2  # one per chosen setting
