"""`lifelong report` of a `lifelong tune` results directory, on a tiny real study (split-digits, 3 trials)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from lifelong.cli import main
from lifelong.errors import LifelongError
from lifelong.report.html import report_target, target_kind, write_report
from lifelong.report.tuning import write_tuning_report
from lifelong.training.config import RunConfig

optuna = pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    from lifelong.tuning.cli import tune

    root = tmp_path_factory.mktemp("tuned")
    space = root / "space.yaml"
    space.write_text("epochs: 1\nbatch_size: 64\n", encoding="utf-8")
    base = RunConfig.from_dict({"hidden": "16", "device": "cpu", "threads": 1, "scenario": "split-digits"}).to_dict()
    tune(base, "split-digits", ["er"], [0], 3, 1, str(root / "store"), space_file=str(space), quiet=True)
    return root / "store" / "tune-split-digits"


def rows_of(text: str, cls: str) -> list[str]:
    body = re.search(rf'<table class="{cls}">.*?<tbody>(.*?)</tbody>', text, re.S)
    assert body, f"no table {cls}"
    return re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)


def test_report_shows_best_value_every_trial_importances_and_plot(tuned, tmp_path) -> None:
    """Figures checked against the study read back from its SQLite storage, not against tune.json."""
    study = optuna.load_study(study_name="split-digits:er",
                              storage=f"sqlite:///{(tuned.parent / 'tune.db').resolve()}")
    out = tmp_path / "copy"
    shutil.copytree(tuned, out)
    notes: list[str] = []
    page = write_report(out, notes=notes)
    assert page == out / "report.html" and target_kind(out) == "tuning"
    text = page.read_text()
    assert "<script" not in text and "https://" not in text  # self-contained like the other reports
    assert f"{100 * study.best_value:.1f}%" in text
    best = rows_of(text, "tune-best")
    assert len(best) == 1 and f"{100 * study.best_value:.1f}%" in best[0] and "&quot;epochs&quot;: 1" in best[0]
    rows = rows_of(text, "tune-trials")
    assert len(rows) == len(study.trials) == 3
    for row, t in zip(rows, sorted(study.trials, key=lambda t: t.number), strict=True):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[0] == str(t.number) and cells[1] == t.state.name
        assert cells[2] == f"{100 * t.value:.1f}%"
        assert float(cells[3]) == pytest.approx(t.user_attrs["seconds"], abs=0.05)
        assert f"{t.params['lr']:.4g}" in cells  # the sampled learning rate, in its column
    imp = rows_of(text, "tune-importance")
    assert {re.search(r'<td class="k">(.*?)</td>', r).group(1) for r in imp} == set(study.best_params)
    assert text.count('src="data:image/png;base64,') == 1  # the plot results.py wrote, embedded
    assert (out / "plots" / "tune-er.png").is_file()


def test_report_elsewhere_copies_the_plot_and_redraws_a_missing_one(tuned, tmp_path) -> None:
    out = tmp_path / "elsewhere" / "r.html"
    text = write_tuning_report(tuned, out).read_text()
    assert text.count("data:image/png") == 1 and (out.parent / "plots" / "tune-er.png").is_file()
    bare = tmp_path / "bare"
    shutil.copytree(tuned, bare)
    shutil.rmtree(bare / "plots")
    assert write_tuning_report(bare).read_text().count("data:image/png") == 1
    assert (bare / "plots" / "tune-er.png").stat().st_size > 0


def test_cli_report_by_directory_and_by_id_and_store_root_hint(tuned, tmp_path, capsys) -> None:
    store = tmp_path / "store"
    shutil.copytree(tuned, store / tuned.name)
    assert main(["report", str(store / tuned.name), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["kind"] == "tuning" and Path(answer["report"]).is_file()
    assert report_target("tune-split", [store]) == (store / tuned.name).resolve()
    assert main(["report", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tuning results under it" in err and tuned.name in err


@pytest.mark.parametrize("content", ["{not json", json.dumps({"studies": [], "details": "x"}),
                                     json.dumps({"studies": [{"strategy": "er", "n_trials": 1}],
                                                 "details": [{"strategy": "er", "trials": [{"number": 0}]}]}),
                                     json.dumps([1, 2])])
def test_damaged_tune_json_is_one_line(tmp_path, capsys, content) -> None:
    d = tmp_path / "tune-x"
    d.mkdir()
    (d / "tune.json").write_text(content, encoding="utf-8")
    with pytest.raises(LifelongError, match="tune.json is damaged"):
        write_report(d)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "damaged" in err


def test_tuning_plot_passes_over_trials_without_a_value(tmp_path):
    """A hand-edited tune.json may hold a COMPLETE trial whose value is null or text: the plot leaves it out."""
    from lifelong.tuning.results import plot_study

    trials = [{"number": 0, "state": "COMPLETE", "value": 0.5, "params": {}},
              {"number": 1, "state": "COMPLETE", "value": None, "params": {}},
              {"number": 2, "state": "PRUNED", "value": "x", "params": {}}]
    plot_study({"strategy": "er", "trials": trials, "importances": {}}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
