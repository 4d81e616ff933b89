"""The analytic learners as strategies on the engine: closed-form results against independent computations,
resume, unlearning a run directory through the CLI, and the strategies in `list` and `compare`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lifelong.analytic import store
from lifelong.analytic.acil import ACIL
from lifelong.cli import main
from lifelong.data.datasets import load_dataset
from lifelong.models.backbones import make_model
from lifelong.strategies.analytic import AnalyticStrategy
from lifelong.training import runner
from lifelong.training.engine import Engine

BUFFER, GAMMA = 128, 1.0


@pytest.fixture
def analytic_cfg(digits_cfg):
    def make(strategy="acil", **changes):
        hp = {"buffer_size": BUFFER, "gamma": GAMMA} if strategy in ("acil", "g-acil", "ds-al") else {}
        return digits_cfg(strategy=strategy, **{"hparams": hp, **changes})
    return make


def frozen_features(cfg, x):
    """Features of prepared inputs under the run's initial MLP minus its last layer (base_experiences=0)."""
    torch.manual_seed(cfg.seed)
    model = make_model("mlp", 64, 10, hidden=cfg.hidden_sizes())
    with torch.no_grad():
        return torch.nn.Sequential(*list(model)[:-1])(x).double()


def digits_train():
    ds = load_dataset("digits")
    return ds.prepare(ds.train_x), ds.train_y


def ridge_reference(feats, y, in_features, classes=10):
    """W = (X^T X + gamma I)^-1 X^T Y on X = ReLU(F B^T), B drawn as ACIL's buffer (seed 0, uniform init)."""
    g = torch.Generator().manual_seed(0)
    B = (torch.rand(BUFFER, in_features, generator=g, dtype=torch.float64) * 2 - 1) / math.sqrt(in_features)
    X = torch.relu(feats @ B.T)
    Y = torch.nn.functional.one_hot(y, classes).double()
    return torch.linalg.solve(X.T @ X + GAMMA * torch.eye(BUFFER, dtype=torch.float64), X.T @ Y)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_acil_on_the_engine_is_the_joint_ridge_solution(tmp_path, analytic_cfg):
    cfg = analytic_cfg()
    result = runner.run(cfg, tmp_path / "run")
    model, version, payload = store.load_model_version(tmp_path / "run")
    assert version == 1 and isinstance(model, ACIL) and result["final_accuracy"] > 0.85
    x, y = digits_train()
    assert rel(model.W, ridge_reference(frozen_features(cfg, x), y, 32)) < 1e-8
    assert len(model.ledger) == len(y) and sorted(model.ledger.entries) == list(range(len(y)))  # dataset indices
    torch.manual_seed(cfg.seed)
    init = make_model("mlp", 64, 10, hidden=[32]).state_dict()
    assert all(torch.equal(init[k], v) for k, v in payload["backbone"].items())  # the backbone stayed frozen


def test_nmc_means_are_the_class_means_of_the_features(tmp_path, analytic_cfg):
    cfg = analytic_cfg("nmc")
    runner.run(cfg, tmp_path / "run")
    model, _, _ = store.load_model_version(tmp_path / "run")
    x, y = digits_train()
    f = torch.nn.functional.normalize(frozen_features(cfg, x), dim=1)
    means = torch.stack([f[y == c].mean(0) for c in range(10)])
    assert rel(model.means, means) < 1e-12


def test_base_phase_then_frozen_backbone_absorbs_the_base_data(tmp_path, analytic_cfg):
    """base_experiences=2: SGD on experiences 0-1, then the classifier holds every training sample."""
    cfg = analytic_cfg(hparams={"buffer_size": BUFFER, "gamma": GAMMA, "base_experiences": 2})
    engine = Engine(cfg)
    assert engine.experience_steps()[2:] == [0, 0, 0] and min(engine.experience_steps()[:2]) > 0
    result = engine.run()
    learner = engine.strategy.learner
    x, y = digits_train()
    with torch.no_grad():
        feats = torch.nn.Sequential(*list(engine.model)[:-1])(x).double()
    assert len(learner.ledger) == len(y) and rel(learner.W, ridge_reference(feats, y, 32)) < 1e-8
    assert result["final_accuracy"] > 0.5  # features trained on 4 classes only: weaker than random ones


def test_task_aware_stream_scores_every_class_column(analytic_cfg):
    engine = Engine(analytic_cfg(scenario="task-split-digits"))
    result = engine.run()
    assert result["final_accuracy"] > 0.95
    x = engine.learner.prepare(engine.stream[0].data.test_x[:4])
    assert engine.strategy.predict(engine.model, x).shape == (4, 10)


class Crash(Exception):
    pass


@pytest.mark.parametrize("strategy,base", [("acil", 0), ("ds-al", 1), ("nmc", 2)])
def test_resume_after_a_crash_mid_stream_equals_uninterrupted(tmp_path, analytic_cfg, monkeypatch, strategy, base):
    hp = {**analytic_cfg(strategy).hparams, "base_experiences": base}
    cfg = analytic_cfg(strategy, hparams=hp)
    clean = runner.run(cfg, tmp_path / "clean")
    original = AnalyticStrategy.fit_experience

    def crash(self, exp):
        if exp.index == 3:
            raise Crash
        original(self, exp)

    monkeypatch.setattr(AnalyticStrategy, "fit_experience", crash)
    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed")
    monkeypatch.setattr(AnalyticStrategy, "fit_experience", original)
    resumed = runner.resume(tmp_path / "crashed")
    for key in ("final_accuracy", "accuracy_matrix", "initial_accuracy"):
        assert resumed[key] == clean[key], key
    a, _, _ = store.load_model_version(tmp_path / "clean")
    b, _, _ = store.load_model_version(tmp_path / "crashed")
    x, _ = digits_train()
    f = frozen_features(cfg, x[:50]) if base == 0 else None
    if f is not None:
        assert torch.equal(a.decision_function(f), b.decision_function(f))


def test_slca_resume_after_crash_mid_experience(tmp_path, analytic_cfg):
    cfg = analytic_cfg("slca", hparams={"ca_epochs": 2, "ca_samples": 16})
    clean = runner.run(cfg, tmp_path / "clean")

    def crash(g, total, loss, acc):
        if g == 120:
            raise Crash

    with pytest.raises(Crash):
        runner.run(cfg, tmp_path / "crashed", on_step=crash)
    resumed = runner.resume(tmp_path / "crashed")
    assert resumed["accuracy_matrix"] == clean["accuracy_matrix"]


def test_slca_zero_backbone_rate_keeps_the_backbone_bit_identical(analytic_cfg):
    cfg = analytic_cfg("slca", hparams={"bcb_lrscale": 0.0, "ca_epochs": 1, "ca_samples": 8})
    engine = Engine(cfg)
    init = {k: v.clone() for k, v in engine.model.state_dict().items()}
    engine.run()
    after = engine.model.state_dict()
    assert all(torch.equal(init[k], after[k]) for k in init if not k.startswith("2."))  # layer 2: the head
    assert not torch.equal(init["2.weight"], after["2.weight"])
    moving = Engine(analytic_cfg("slca", hparams={"bcb_lrscale": 0.1, "ca_epochs": 0}))
    moving.run()
    assert not torch.equal(init["0.weight"], moving.model.state_dict()["0.weight"])


def test_unlearn_a_class_from_a_run_directory_equals_retraining_without_it(tmp_path, analytic_cfg, capsys):
    cfg = analytic_cfg()
    run = tmp_path / "run"
    runner.run(cfg, run)
    assert main(["unlearn", str(run), "--classes", "3"]) == 0
    model, version, payload = store.load_model_version(run)
    x, y = digits_train()
    keep = y != 3
    ref = ridge_reference(frozen_features(cfg, x[keep]), y[keep], 32)
    assert version == 2 and 3 not in model.classes_ and "backbone" in payload
    assert rel(model.W, ref) < 1e-8
    # samples named by their dataset index; features recomputed from the run
    ids = (keep.nonzero().flatten()[:5]).tolist()
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    assert main(["unlearn", str(run), "--samples", str(tmp_path / "ids.json")]) == 0
    keep[ids] = False
    model, version, _ = store.load_model_version(run)
    assert version == 3 and rel(model.W, ridge_reference(frozen_features(cfg, x[keep]), y[keep], 32)) < 1e-8
    capsys.readouterr()
    assert main(["unlearn", str(run), "--classes", "3"]) == 2  # already forgotten: one line, nothing written
    assert capsys.readouterr().err.count("\n") == 1 and store.model_versions(run) == [1, 2, 3]
    assert [r["status"] for r in store.read_requests(run)] == ["done", "done", "refused"]


def test_analytic_strategies_in_list_and_compare(tmp_path, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ("nmc", "acil", "g-acil", "ds-al", "slca", "base_experiences=0"):
        assert name in listed
    out = tmp_path / "cmp"
    code = main(["compare", "--scenario", "split-digits", "--strategies", "acil,nmc,er", "--hidden", "32",
                 "--workers", "1", "--out", str(out), "--json", str(tmp_path / "o.json"), "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "o.json").read_text())["summary"]
    assert [r["strategy"] for r in summary] == ["acil", "nmc", "er"]
    assert all(name in printed for name in ("acil", "nmc", "er")) and "report:" in printed
    assert store.model_versions(out / "acil-s0") == [1]


def test_slca_recalls_the_head_before_alignment_and_freezes_old_class_rows(analytic_cfg):
    """The authors' fc.backup() / fc.recall() and freeze_old: the aligned head serves the evaluation after its
    experience; the next experience trains on from the pre-alignment head, old classes' rows held fixed."""
    engine = Engine(analytic_cfg("slca", experiences=5, weight_decay=1e-3, hparams={"ca_epochs": 2,
                                                                                    "ca_samples": 16}))
    s, head = engine.strategy, engine.model[-1]
    seen = {}
    begin, end = s.begin_experience, s.end_experience

    def on_begin(exp):
        begin(exp)
        seen[("begin", exp.index)] = (head.weight.detach().clone(), head.bias.detach().clone())

    def on_end(exp):
        seen[("trained", exp.index)] = (head.weight.detach().clone(), head.bias.detach().clone())
        end(exp)
        seen[("aligned", exp.index)] = (head.weight.detach().clone(), head.bias.detach().clone())

    s.begin_experience, s.end_experience = on_begin, on_end
    engine.run()
    for k in (1,):  # experience 1 is the first aligned one; experience 2 starts from its slow-learner head
        assert not torch.equal(seen[("aligned", k)][0], seen[("trained", k)][0])
        assert all(torch.equal(a, b) for a, b in zip(seen[("begin", k + 1)], seen[("trained", k)], strict=True))
    old = sorted(set(engine.stream[0].classes) | set(engine.stream[1].classes))
    for a, b in zip(seen[("begin", 2)], seen[("trained", 2)], strict=True):
        assert torch.equal(a[old], b[old])  # momentum and weight decay did not move them
    new = engine.stream[2].classes
    assert not torch.equal(seen[("begin", 2)][0][new], seen[("trained", 2)][0][new])


def test_unlearn_from_the_cli_on_a_run_of_the_users_own_data_is_one_line(tmp_path, analytic_cfg, capsys):
    """The CLI rebuilds the training samples from the stored config, which for the user's own data would be the
    default scenario (it said 'experiences=... does not divide the 10 classes', or a load_state_dict traceback
    for the user's own model)."""
    from lifelong.data.datasets import from_tensors

    g = torch.Generator().manual_seed(0)
    toy = from_tensors("toy", (torch.randn(120, 6, generator=g), torch.arange(120) % 4),
                       (torch.randn(40, 6, generator=g), torch.arange(40) % 4))
    run = tmp_path / "run"
    runner.run(analytic_cfg(scenario="split-digits", experiences=2), run, dataset=toy)
    capsys.readouterr()
    assert main(["unlearn", str(run), "--classes", "1"]) == 2
    err = capsys.readouterr().err
    assert "trained on your own data 'split-toy'" in err and "--features FILE" in err and "Traceback" not in err
    assert store.read_requests(run)[-1]["status"] == "refused"


def test_runs_and_report_name_the_users_own_data_not_the_configs_default_scenario(tmp_path, analytic_cfg, capsys):
    from lifelong.data.datasets import from_tensors
    from lifelong.report.html import read_run

    g = torch.Generator().manual_seed(0)
    toy = from_tensors("toy", (torch.randn(80, 6, generator=g), torch.arange(80) % 4),
                       (torch.randn(40, 6, generator=g), torch.arange(40) % 4))
    runner.run(analytic_cfg(strategy="nmc", scenario="split-fashion-mnist", experiences=2), tmp_path / "r",
               dataset=toy)
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split-toy (own data)" in out and "fashion" not in out
    assert read_run(tmp_path / "r")["scenario"] == "split-toy (own data)"


def test_a_closed_form_strategy_without_a_base_phase_refuses_a_partner_that_would_do_nothing():
    from lifelong.errors import LifelongError
    from lifelong.strategies import make_strategy

    for name in ("acil+er", "er+nmc", "nmc+ewc"):  # every experience closed-form: er / ewc never took a step
        with pytest.raises(LifelongError, match="no SGD step runs and (er|ewc) would do nothing"):
            make_strategy(name, {})
    make_strategy("acil+lwf", {"acil.base_experiences": 1})  # an SGD base phase: lwf acts in it


def test_unlearn_on_a_run_without_an_analytic_model_names_the_strategy(tmp_path, analytic_cfg, capsys):
    run = tmp_path / "run"
    runner.run(analytic_cfg(strategy="naive", epochs=1), run)
    capsys.readouterr()
    assert main(["unlearn", str(run), "--classes", "1"]) == 2
    assert "a run of naive, which stores none; exact unlearning needs a run of acil" in capsys.readouterr().err
