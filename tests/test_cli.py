"""The command line: results, JSON, and one clear line (exit code 2) for each user mistake."""

import json
import os
import stat

import pytest

from lifelong.cli import main
from lifelong.errors import LifelongError

TINY = ["--scenario", "split-digits", "--hidden", "32", "--lr", "0.05", "-q"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_json_and_store(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", *TINY, "--strategy", "er", "--seed", "1", "--run-dir",
                           str(tmp_path / "r"), "--json", str(tmp_path / "out.json"))
    assert code == 0 and "final accuracy" in out
    payload = json.loads((tmp_path / "out.json").read_text())
    r = payload["results"][0]
    assert payload["scenario"] == "split-digits"
    for key in ("strategy", "seed", "final_accuracy", "average_incremental_accuracy", "bwt", "forgetting",
                "accuracy_matrix", "train_seconds", "peak_rss_mb"):
        assert key in r
    assert len(r["accuracy_matrix"]) == 5 and r["seed"] == 1
    code, out, _ = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0 and "finished" in out and "er" in out


def test_compare_runs_strategies_and_seeds_in_workers(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "compare", *TINY, "--strategies", "naive,er", "--seeds", "0,1",
                           "--out", str(tmp_path / "c"), "--json", str(tmp_path / "c.json"))
    assert code == 0
    payload = json.loads((tmp_path / "c.json").read_text())
    assert sorted((r["strategy"], r["seed"]) for r in payload["results"]) == [
        ("er", 0), ("er", 1), ("naive", 0), ("naive", 1)]
    summary = {s["strategy"]: s for s in payload["summary"]}
    assert summary["er"]["final_accuracy_mean"] > summary["naive"]["final_accuracy_mean"]
    assert "±" in out


def test_interrupted_compare_says_how_to_finish(tmp_path, capsys, monkeypatch):
    from lifelong.training import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "compare", interrupted)
    code, _, err = run_cli(capsys, "compare", *TINY, "--strategies", "naive", "--out", str(tmp_path / "c"))
    assert code == 2
    assert f"interrupted; finished runs are kept in {tmp_path / 'c'}" in err and "resumes the others" in err
    assert "Traceback" not in err


def test_yaml_config_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scenario: split-digits\nhidden: '16'\nepochs: 1\nhparams:\n  buffer_size: 20\n")
    code, _, _ = run_cli(capsys, "run", "--config", str(cfg), "--strategy", "er", "--run-dir", str(tmp_path / "r"),
                         "--json", str(tmp_path / "o.json"), "-q")
    assert code == 0
    r = json.loads((tmp_path / "o.json").read_text())["results"][0]
    assert r["hparams"]["buffer_size"] == 20


@pytest.mark.parametrize("argv,message", [
    (["run", "--strategy", "ewcc"], "unknown strategy 'ewcc'. Did you mean 'ewc'?"),
    (["run", "--scenario", "split-fashon-mnist"], "Did you mean 'split-fashion-mnist'?"),
    (["run", "--lr", "-1"], "lr=-1.0 is out of range: allowed (0, inf)"),
    (["run", "--batch-size", "many"], "batch_size='many' is not a valid int"),
    (["run", "--strategy", "er", "-p", "bufer_size=3"], "Did you mean 'buffer_size'?"),
    (["run", "--strategy", "er", "-p", "buffer=fifo"], "expected one of reservoir|class-balanced"),
    (["run", "--class-order", "0,1,2"], "class order must list each class"),
    (["run", "--optimizer", "sgdd"], "unknown optimizer 'sgdd'. Did you mean 'sgd'?"),
    (["resume", "/nonexistent/run"], "no run found"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv, *([] if argv[0] == "resume" else ["--scenario", "split-digits"]
                                             if "--scenario" not in argv else []))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unwritable_run_dir(tmp_path, capsys):
    if os.geteuid() == 0:
        target = "/proc/lifelong-cannot-write-here"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = str(locked / "run")
    code, _, err = run_cli(capsys, "run", *TINY, "--run-dir", target)
    assert code == 2 and "not writable" in err


def test_nan_loss_stops_with_message_and_keeps_results(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", *TINY[:-3], "--lr", "1e30", "--epochs", "1", "--checkpoint-every", "5",
                           "--run-dir", str(tmp_path / "r"), "-q")
    assert code == 2 and "loss became" in err
    from lifelong.tracking.store import RunStore
    store = RunStore.open(tmp_path / "r")
    assert store.status == "failed" and store.accuracy_rows()[-1]  # the initial evaluation was kept


def test_list_shows_everything(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("fashion-mnist", "digits", "mnist1d", "split-*", "naive", "ewc", "online-ewc", "l2", "lwf", "er",
                 "derpp", "joint", "cumulative", "buffer_size=500", "mlp"):
        assert name in out


def test_hyperparameters_given_once_go_to_each_compared_strategy_that_declares_them():
    from lifelong.strategies.base import hparams_per_strategy

    shares = hparams_per_strategy(["er", "ewc", "er+lwf", "naive"],
                                  {"buffer_size": "50", "lwf.alpha": "0.5", "ewc.ewc_lambda": "3"})
    assert shares == {"er": {"buffer_size": "50"}, "ewc": {"ewc_lambda": "3"},
                      "er+lwf": {"buffer_size": "50", "lwf.alpha": "0.5"}, "naive": {}}
    with pytest.raises(LifelongError, match="unknown hyperparameter of er, ewc 'alpha'"):
        hparams_per_strategy(["er", "ewc"], {"alpha": "1"})


def test_compare_and_tune_take_shared_hyperparameters(tmp_path, capsys, monkeypatch):
    from lifelong.training import runner
    from lifelong.tuning import cli as tuning_cli

    seen = {}
    monkeypatch.setattr(runner, "compare", lambda cfg, strategies, seeds, out, **kw: seen.update(
        compare=(cfg.hparams, kw["strategy_hparams"])) or {"results": [], "summary": []})
    monkeypatch.setattr(tuning_cli, "tune", lambda base, *a, **kw: seen.update(
        tune=(base["hparams"], kw["strategy_hparams"]), fixed=kw["fixed"]) or {"studies": [], "storage": "x"})
    run_cli(capsys, "compare", *TINY, "--strategies", "er,ewc", "-p", "buffer_size=50", "-p", "ewc_lambda=3",
            "--out", str(tmp_path / "c"), "--no-report")
    run_cli(capsys, "tune", *TINY, "--strategies", "er,ewc", "-p", "er.buffer_size=60", "--epochs", "1")
    assert seen["compare"] == ({}, {"er": {"buffer_size": "50"}, "ewc": {"ewc_lambda": "3"}})
    assert seen["tune"] == ({}, {"er": {"buffer_size": "60"}, "ewc": {}})
    # what the command line gives is fixed in the search space: --lr and --epochs are not searched
    assert seen["fixed"] == {"lr": 0.05, "epochs": 1, "er": {"buffer_size": "60"}}
    from lifelong.tuning.space import build_space

    space = build_space("er", seen["fixed"])
    assert {k: (d.kind, d.value) for k, d in space.items() if k in ("lr", "epochs", "buffer_size")} == {
        "lr": ("fixed", 0.05), "epochs": ("fixed", 1), "buffer_size": ("fixed", 60)}
    assert space["batch_size"].kind == "categorical"  # not given: still searched


def test_an_unwritable_json_path_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "run", *TINY, "--run-dir", str(tmp_path / "r"), "--json", str(blocker / "x.json"))
    assert code == 2 and "--json" in err and "cannot be written" in err
    assert not (tmp_path / "r").exists()  # nothing trained, nothing stored
    code, _, err = run_cli(capsys, "compare", *TINY, "--strategies", "naive", "--out", str(tmp_path / "c"),
                           "--json", str(tmp_path))
    assert code == 2 and "is a directory" in err and not (tmp_path / "c").exists()


def test_report_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    from lifelong.report import cli as report_cli

    code, _, _ = run_cli(capsys, "run", *TINY, "--epochs", "1", "--run-dir", str(tmp_path / "r"))
    assert code == 0

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "plots"))

    monkeypatch.setattr(report_cli, "write_report", full_disk)
    code, _, err = run_cli(capsys, "report", str(tmp_path / "r"))
    assert code == 2 and "cannot write the report: No space left on device" in err and "Traceback" not in err


def test_output_cut_short_by_the_reader_is_no_traceback():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lifelong", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    proc.stdout.readline()
    proc.stdout.close()  # as `lifelong list | head -1` does
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_report_of_a_run_with_an_unlearning_event_lists_it(tmp_path, capsys):
    """Unlearning records carry an ISO "time" of their own; it must not replace the event's timestamp."""
    from lifelong.tracking.store import RunStore

    code, _, _ = run_cli(capsys, "run", *TINY, "--epochs", "1", "--run-dir", str(tmp_path / "r"))
    assert code == 0
    store = RunStore.open(tmp_path / "r")
    store.add_event("unlearn", {"time": "2026-12-02T14:00:00+00:00", "classes": [3], "version": 2})
    (event,) = store.events("unlearn")
    store.close()
    assert isinstance(event["time"], float) and event["payload_time"] == "2026-12-02T14:00:00+00:00"
    code, out, err = run_cli(capsys, "report", str(tmp_path / "r"))
    assert code == 0, err
    html = (tmp_path / "r" / "report.html").read_text()
    assert "unlearn" in html and "2026-12-02T14:00:00" in html


@pytest.mark.parametrize("argv,hint", [
    (["run", "--outt", "x"], "--outt (did you mean --out?)"),
    (["run", "--output", "experience"], "--output (did you mean --output-mask?)"),  # no abbreviations
    (["compare", "--stratgies", "er"], "--stratgies (did you mean --strategies?)"),
    (["lm", "--steps", "3"], "--steps (did you mean --steps-per-phase?)"),
])
def test_an_unknown_or_abbreviated_flag_is_refused_with_the_flags_it_may_mean(capsys, argv, hint):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"unrecognized arguments: {hint}" in err


def test_run_takes_out_as_its_run_directory_like_compare_and_lm(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"))
    assert code == 0 and (tmp_path / "r" / "result.json").exists()


def test_a_refused_comparison_prints_only_its_error(tmp_path, capsys):
    code, out, err = run_cli(capsys, "compare", *TINY, "--strategies", "naive", "--seeds", "0,0", "--store",
                             str(tmp_path))
    assert code == 2 and err.strip() == "error: seeds repeat 0: give each once"  # no 'comparing ... -> DIR'
    assert not list(tmp_path.iterdir())


def test_warnings_print_as_one_line_like_the_other_messages(capsys, monkeypatch):
    import warnings

    from lifelong.cli import one_line_warning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    assert main(["list"]) == 0
    capsys.readouterr()
    assert warnings.formatwarning is one_line_warning
    shown = warnings.formatwarning(RuntimeWarning("gamma=1e-12 is small"), RuntimeWarning, "/x/acil.py", 161,
                                   "self._W = self.solve(self.B)")
    assert shown == "warning: gamma=1e-12 is small\n"


def test_compare_refuses_a_single_runs_directory_as_its_out(tmp_path, capsys):
    assert run_cli(capsys, "run", *TINY, "--run-dir", str(tmp_path / "r"))[0] == 0
    code, _, err = run_cli(capsys, "compare", *TINY, "--strategies", "naive", "--out", str(tmp_path / "r"))
    assert code == 2 and "is the directory of a single run, not of a comparison" in err


def test_run_prints_forward_transfer_where_it_means_something_and_the_continual_metrics(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", *TINY, "--scenario", "permuted-digits", "--eval-every", "5",
                           "--run-dir", str(tmp_path / "p"))
    assert code == 0 and "forward transfer " in out
    assert "continual evaluation (" in out and "min-ACC " in out and "mean stability gap " in out
    code, out, _ = run_cli(capsys, "run", *TINY, "--run-dir", str(tmp_path / "s"))  # class-incremental
    assert code == 0 and "forward transfer" not in out and "continual evaluation" not in out
