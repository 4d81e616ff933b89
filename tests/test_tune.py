"""`lifelong tune`: search spaces from declared parameters, the validation split, resumable studies, workers."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from lifelong.errors import LifelongError
from lifelong.params import Param
from lifelong.training.config import RunConfig
from lifelong.tuning import space as sp
from lifelong.tuning import study as st

optuna = pytest.importorskip("optuna")

TINY = {"hidden": "16", "device": "cpu", "threads": 1}
ONE_EPOCH = "epochs: 1\nbatch_size: 64\n"


def base(scenario: str = "split-digits") -> dict:
    return RunConfig.from_dict({**TINY, "scenario": scenario}).to_dict()


def test_log_rule_explicit_flag_else_two_decades() -> None:
    assert Param(1.0, "x", low=0.0).log_scale(0.1, 10.0) is True
    assert Param(1.0, "x", low=0.0).log_scale(0.5, 5.0) is False
    assert Param(1.0, "x", low=0.0).log_scale(0.0, 1000.0) is False
    assert Param(1.0, "x", low=0.0, log=False).log_scale(0.01, 10.0) is False
    assert Param(1.0, "x", low=0.0, log=True).log_scale(0.5, 1.0) is True


def test_default_space_from_declared_params() -> None:
    ewc = sp.build_space("ewc")
    assert ewc["lr"] == sp.Dim("float", 1e-3, 0.1, True)
    assert ewc["ewc_lambda"] == sp.Dim("float", 10.0, 3000.0, True)  # EWC's declared search range, log
    mas = sp.build_space("mas")
    assert mas["mas_lambda"] == sp.Dim("float", 0.01, 1.0, True)  # no search range: two decades around 0.1
    assert "fisher_samples" not in ewc  # integers (sample counts, budgets) stay at their defaults
    assert ewc["batch_size"].choices == (16, 32, 64)
    er = sp.build_space("er")
    assert set(er) == {"lr", "epochs", "batch_size"}  # buffer size is a budget, not searched by default
    assert set(sp.build_space("er+lwf")) >= {"lwf.alpha", "lwf.temperature"}


def test_space_yaml_overrides(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 0.001, high: 0.05}\newc_lambda: [10, 100, 1000]\nepochs: 1\n"
                    "ewc:\n  fisher_samples: {low: 100, high: 500}\n", encoding="utf-8")
    overrides = sp.load_space_file(str(path))
    sp.validate_overrides(["er", "ewc"], overrides)
    ewc = sp.build_space("ewc", overrides)
    assert ewc["lr"] == sp.Dim("float", 0.001, 0.05, True)
    assert ewc["ewc_lambda"] == sp.Dim("categorical", choices=(10.0, 100.0, 1000.0))
    assert ewc["epochs"] == sp.Dim("fixed", value=1)
    assert ewc["fisher_samples"] == sp.Dim("int", 100, 500, False)
    assert "ewc_lambda" not in sp.build_space("er", overrides)


def test_space_errors_are_one_line() -> None:
    with pytest.raises(LifelongError, match="buffer_size has no default search range.*--space"):
        sp.build_space("er", {"buffer_size": {}})
    with pytest.raises(LifelongError, match="out of range"):
        sp.build_space("ewc", {"ewc_lambda": {"low": -1, "high": 10}})
    with pytest.raises(LifelongError, match="below high"):
        sp.build_space("ewc", {"lr": {"low": 0.1, "high": 0.01}})
    with pytest.raises(LifelongError, match="log-scale range needs low > 0"):
        sp.build_space("ewc", {"ewc_lambda": {"low": 0, "high": 10, "log": True}})
    with pytest.raises(LifelongError, match="ewc_lamda"):
        sp.validate_overrides(["ewc"], {"ewc_lamda": [1, 2]})
    # a float whose default is 0 and whose range is unbounded has no scale: refused, naming it
    with pytest.raises(LifelongError, match="feat_kd has no default search range"):
        sp.default_dim("feat_kd", Param(0.0, "weight", low=0.0))


def test_validation_split_holds_no_test_sample() -> None:
    from lifelong.data.datasets import load_dataset

    data = load_dataset("digits")
    val = st.validation_dataset("split-digits")
    assert len(val.train_y) + len(val.test_y) == len(data.train_y)
    assert len(val.test_y) == pytest.approx(st.HOLDOUT * len(data.train_y), rel=0.05)
    rows = {tuple(r.tolist()) for r in data.test_x}
    held = {tuple(r.tolist()) for r in val.test_x}
    train = {tuple(r.tolist()) for r in data.train_x}
    assert held <= train  # held-out rows come from the training split
    assert set(val.test_y.tolist()) == set(data.train_y.tolist())  # every class held out
    assert len(held & {tuple(r.tolist()) for r in val.train_x}) <= len(held & rows)  # disjoint up to duplicates


def tune(tmp_path, strategies, trials, workers, **kw):
    from lifelong.tuning.cli import tune as run_tune

    space = tmp_path / "space.yaml"
    space.write_text(ONE_EPOCH, encoding="utf-8")
    return run_tune(base(), "split-digits", strategies, [0], trials, workers, str(tmp_path / "store"),
                    space_file=str(space), quiet=True, **kw)


def test_tune_in_process_writes_results_and_resumes(tmp_path) -> None:
    first = tune(tmp_path, ["er"], 3, 1)
    assert first["studies"][0]["n_trials"] == 3
    assert first["storage"] == f"sqlite:///{(tmp_path / 'store' / 'tune.db').resolve()}"
    best = first["studies"][0]
    assert 0 < best["best_value"] <= 1 and best["best_params"]["epochs"] == 1
    out = tmp_path / "store" / "tune-split-digits"
    stored = json.loads((out / "tune.json").read_text())
    assert stored["studies"] == first["studies"]
    assert (out / "trials.csv").read_text().count("\ner,") == 3
    assert (out / "plots" / "tune-er.png").stat().st_size > 0
    again = tune(tmp_path, ["er"], 2, 1)
    assert again["studies"][0]["n_trials"] == 5  # the same study, two more trials
    values = [t["value"] for t in again["details"][0]["trials"] if t["state"] == "COMPLETE"]
    assert max(values) == pytest.approx(again["studies"][0]["best_value"])


def test_best_value_is_the_mean_final_accuracy_of_its_setting(tmp_path) -> None:
    """The objective recomputed independently: a plain run of the best setting on the validation dataset."""
    from lifelong.training import runner

    out = tune(tmp_path, ["er"], 2, 1)
    s = out["studies"][0]
    cfg = RunConfig.from_dict({**base(), **s["best_params"], "strategy": "er", "seed": 0})
    result = runner.execute(runner.build_engine(cfg, None, dataset=st.validation_dataset("split-digits")))
    assert result["final_accuracy"] == pytest.approx(s["best_value"], abs=1e-9)


def test_other_settings_on_the_same_study_are_refused(tmp_path) -> None:
    tune(tmp_path, ["er"], 1, 1)
    from lifelong.tuning.cli import tune as run_tune

    with pytest.raises(LifelongError, match=r"set up with other settings \(seeds: \[0\] -> \[0, 1\]\)"):
        run_tune(base(), "split-digits", ["er"], [0, 1], 1, 1, str(tmp_path / "store"), quiet=True)


def test_stale_running_trial_is_failed_requeued_and_rerun(tmp_path) -> None:
    """A trial left RUNNING by a killed process: marked failed, re-queued with its parameters, re-run once."""
    tune(tmp_path, ["er"], 1, 1)
    url = f"sqlite:///{(tmp_path / 'store' / 'tune.db').resolve()}"
    study = optuna.load_study(study_name="split-digits:er", storage=st.open_storage(url))
    ghost = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 0.1, log=True),
                       "batch_size": optuna.distributions.CategoricalDistribution([16, 32, 64])})
    ghost.set_user_attr("host", __import__("socket").gethostname())
    ghost.set_user_attr("pid", 2**22 + 12345)  # no such process: the worker was killed
    lr = ghost.params["lr"]
    out = tune(tmp_path, ["er"], 2, 1)
    trials = out["details"][0]["trials"]
    states = [t["state"] for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states
    rerun = [t for t in trials if t["retry_of"] == ghost.number]
    assert len(rerun) == 1 and rerun[0]["params"]["lr"] == lr and rerun[0]["state"] in ("COMPLETE", "PRUNED")
    assert out["studies"][0]["n_trials"] == 3  # 1 + 2; the killed trial is not counted, its re-run is


def test_heartbeat_expired_trial_of_another_host_is_recovered(tmp_path) -> None:
    url = f"sqlite:///{(tmp_path / 'hb.db').resolve()}"
    study = optuna.create_study(study_name="s", storage=st.open_storage(url, (1, 1)))
    trial = study.ask()
    trial.set_user_attr("host", "elsewhere")
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.2)
    study = optuna.load_study(study_name="s", storage=st.open_storage(url, (1, 1)))
    assert st.recover(study) == 1
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"]


def test_two_workers_share_the_study(tmp_path) -> None:
    import signal

    def too_long(*_: object) -> None:
        raise TimeoutError("two-worker tune took over 240 s")

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(240)
    try:
        out = tune(tmp_path, ["er"], 4, 2, timeout=200)
    finally:
        signal.alarm(0)
    trials = out["details"][0]["trials"]
    assert out["studies"][0]["n_trials"] == 4 and len(trials) == 4
    assert len({t["number"] for t in trials}) == 4


def test_timeout_stops_new_trials(tmp_path, monkeypatch) -> None:
    """On a clock where every trial takes 0.4 s, a 1.0 s timeout starts trials at 0, 0.4 and 0.8 s: the third is in
    flight at the deadline and finishes; no fourth starts."""
    from types import SimpleNamespace

    from lifelong.tuning import study

    clock = [1000.0]

    def trial_of_0_4_seconds(trial, spec):
        clock[0] += 0.4
        return 0.5

    monkeypatch.setattr(study, "time", SimpleNamespace(time=lambda: clock[0], perf_counter=lambda: clock[0]))
    monkeypatch.setattr(study, "run_trial", trial_of_0_4_seconds)
    out = tune(tmp_path, ["er"], 50, 1, timeout=1.0)
    assert out["studies"][0]["n_trials"] == 3


def test_pruned_trials_report_at_experience_ends(tmp_path) -> None:
    from lifelong.tuning.cli import tune as run_tune

    space = tmp_path / "space.yaml"
    space.write_text("epochs: 1\nlr: {low: 0.0001, high: 0.3}\n", encoding="utf-8")
    out = run_tune(base(), "split-digits", ["er"], [0], 8, 1, str(tmp_path / "store"), space_file=str(space),
                   quiet=True, pruner="median")
    trials = out["details"][0]["trials"]
    assert all(t["steps"] == 5 for t in trials if t["state"] == "COMPLETE")  # one report per experience
    assert all(1 <= t["steps"] < 5 for t in trials if t["state"] == "PRUNED")


def test_cli_json_and_tune_not_imported_by_run(tmp_path) -> None:
    import subprocess
    import sys

    space = tmp_path / "space.yaml"
    space.write_text(ONE_EPOCH, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lifelong", "tune", "--scenario", "split-digits", "--strategies", "er",
           "--trials", "1", "--workers", "1", "--hidden", "16", "--device", "cpu", "--space", str(space),
           "--store", str(tmp_path / "s"), "--json", str(tmp_path / "o.json"), "-q"]
    subprocess.run(cmd, check=True, env=env, timeout=120, capture_output=True)
    got = json.loads((tmp_path / "o.json").read_text())
    assert set(got) == {"studies", "storage"}
    assert set(got["studies"][0]) == {"strategy", "n_trials", "best_value", "best_params"}
    bad = subprocess.run([*cmd[:-1], "--pruner", "median", "--trials", "0"], env=env, timeout=60,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--trials" in bad.stderr
    probe = ("import sys; from lifelong.cli import build_parser; build_parser('run'); "
             "import lifelong.training.runner; print('optuna' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "False"
    assert not math.isnan(got["studies"][0]["best_value"])


def test_tuning_lines_for_lifelong_runs(tmp_path) -> None:
    from lifelong.tuning.results import TUNE_NAME, find_tunings, tuning_lines

    good, bad = tmp_path / "tune-a", tmp_path / "x" / "tune-b"
    good.mkdir()
    bad.mkdir(parents=True)
    (good / TUNE_NAME).write_text(json.dumps({"scenario": "split-digits", "studies": [
        {"strategy": "er", "n_trials": 16, "best_value": 0.796, "best_params": {}},
        {"strategy": "ewc", "n_trials": 3, "best_value": None, "best_params": None}]}), encoding="utf-8")
    (bad / TUNE_NAME).write_text("{", encoding="utf-8")
    (tmp_path / "tune.db").write_bytes(b"")  # the default storage beside them is not a results directory
    assert find_tunings([tmp_path]) == [good, bad]
    lines = tuning_lines([tmp_path])
    assert lines[0] == f"tune   split-digits: er 16 trials, best 79.6%; ewc 3 trials, best -  {good}"
    assert lines[1].startswith("tune   damaged") and str(bad) in lines[1] and "\n" not in lines[1]
    assert tuning_lines([tmp_path / "missing"]) == []


def test_a_trial_refused_before_any_run_records_why(monkeypatch, capsys) -> None:
    """A trial whose settings are refused before it trains (e.g. a strategy its worker cannot resolve) failed
    with no recorded reason and nothing printed (Optuna's log is silenced)."""
    from lifelong.tuning import study

    class Trial:
        number, attrs = 3, {}

        def set_user_attr(self, key, value):
            self.attrs[key] = value

    def refuse(*args, **kwargs):
        raise LifelongError("unknown strategy 'mine'")

    monkeypatch.setattr(study, "split_values", refuse)
    monkeypatch.setattr(study, "sample", lambda trial, space: {})
    trial = Trial()
    value = study.run_trial(trial, {"space_dims": {}, "strategy": "mine"})
    assert value != value and trial.attrs["error"] == "unknown strategy 'mine'"
    assert "trial 3 failed: unknown strategy 'mine'" in capsys.readouterr().err


def test_a_trials_last_report_is_its_objective_so_the_median_pruner_compares_like_with_like(tmp_path) -> None:
    """Trials report the accuracy on every validation set (unseen ones count 0): its last report equals the
    final accuracy. The mean over the seen sets started near 100 % and fell, so the median pruner (which takes
    a trial's best report) never pruned a split scenario's trial."""
    import optuna

    out = tune(tmp_path, ["er"], 2, 1)
    name = optuna.get_all_study_summaries(out["storage"])[0].study_name
    for trial in optuna.load_study(study_name=name, storage=out["storage"]).trials:
        reports = [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]
        assert reports[-1] == pytest.approx(trial.value, abs=1e-9)
        assert reports[0] <= 0.25  # after experience 0 of 5: at most its 2 classes of 10 right


def test_p_fixes_a_hyperparameter_of_a_composition_and_section_typos_are_refused(tmp_path) -> None:
    """`tune --strategies er+lwf -p lwf.alpha=0.5` searched lwf.alpha anyway (the best came back 0.868); a typo
    inside a strategy's --space section was ignored."""
    from types import SimpleNamespace

    from lifelong.tuning.cli import given_values
    from lifelong.tuning.space import build_space, validate_overrides

    shares = {"er+lwf": {"alpha": 0.5}, "lwf": {"alpha": 0.5}}
    fixed = given_values(SimpleNamespace(), RunConfig(), shares)
    assert fixed == {"er+lwf": {"lwf.alpha": 0.5}, "lwf": {"alpha": 0.5}}
    validate_overrides(["er+lwf", "lwf"], fixed)
    space = build_space("er+lwf", fixed)
    assert space["lwf.alpha"].kind == "fixed" and space["lwf.alpha"].value == 0.5
    with pytest.raises(LifelongError, match="buffer_sise"):
        build_space("er", {"er": {"buffer_sise": {"low": 100, "high": 200}}})


def test_tuning_an_online_scenario_does_not_search_epochs(tmp_path) -> None:
    """An online stream is seen once: with epochs searched in [1, 3] most trials were refused."""
    from lifelong.tuning.cli import tune as run_tune

    out = run_tune(base(), "online-split-digits", ["er"], [0], 2, 1, str(tmp_path / "store"), quiet=True)
    assert out["studies"][0]["best_params"]["epochs"] == 1
    assert all(t["state"] == "COMPLETE" for t in out["details"][0]["trials"])
