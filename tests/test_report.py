"""HTML reports, their plots, `report_target` and the `report` subcommand, on runs built with RunStore."""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import pytest

from lifelong.errors import LifelongError
from lifelong.report import plots
from lifelong.report.cli import add_report_parser, run_report_command
from lifelong.report.html import NO_CURVE, report_target, write_comparison_report, write_report, write_run_report
from tests.report_helpers import BOUNDS, CURVE, MATRIX, make_comparison, make_run


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plots_write_pngs(tmp_path):
    paths = [
        plots.plot_accuracy_matrix(MATRIX, tmp_path / "m.png"),
        plots.plot_accuracy_curves(CURVE["steps"], CURVE["accuracy"], BOUNDS, tmp_path / "c.png"),
        plots.plot_loss({"naive": ([1, 2, 3], [2.0, 1.0, 0.5])}, tmp_path / "sub" / "l.png", BOUNDS),
        plots.plot_comparison([{"strategy": "a", "final_accuracy_mean": 0.5, "final_accuracy_std": 0.1},
                               {"strategy": "b", "final_accuracy_mean": 0.7, "final_accuracy_std": None}],
                              tmp_path / "cmp.png"),
        plots.plot_mean_accuracy_curves({"a": ([1, 2], [0.5, None])}, tmp_path / "mc.png", None),
        plots.plot_loss({}, tmp_path / "empty.png"),  # nothing to draw still gives a valid figure
    ]
    for p in paths:
        w, h = png_size(p)
        assert w > 200 and h > 150


def test_run_report_has_tables_and_embedded_plots(tmp_path):
    run = make_run(tmp_path / "run")
    notes: list[str] = []
    page = write_run_report(run, notes=notes)
    assert page == run / "report.html" and notes == []
    text = page.read_text()
    assert text.count('src="data:image/png;base64,') == 3  # matrix heatmap, accuracy curves, loss
    assert "<script" not in text and "http://" not in text and "https://" not in text  # offline, self-contained
    assert "min-ACC" in text and "37.5%" in text and "58.3%" in text  # min-ACC and WC-ACC of the hand curve
    assert "Stability gap per task switch" in text and "150.0%" in text  # recovery of the second switch
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["accuracy_curves.png", "accuracy_matrix.png",
                                                                  "loss.png"]


def test_run_without_curve_says_so_and_renders_the_rest(tmp_path):
    run = make_run(tmp_path / "run", curve=False, loss=False, rows=1, status="failed")
    notes: list[str] = []
    text = write_run_report(run, tmp_path / "out" / "r.html", notes=notes).read_text()
    assert NO_CURVE in notes and "--eval-every K" in text
    assert "No training loss recorded." in text and "status is &#x27;failed&#x27;" in text
    assert text.count("data:image/png") == 1  # the accuracy matrix is still drawn


def test_empty_run_renders(tmp_path):
    make_run(tmp_path / "run", curve=False, loss=False, rows=0, status="running")
    notes: list[str] = []
    text = write_run_report(tmp_path / "run", notes=notes).read_text()
    assert "data:image" not in text and len(notes) >= 3
    assert "No accuracy matrix recorded" in text


def test_comparison_report(tmp_path):
    cmp_dir = make_comparison(tmp_path / "cmp")
    text = write_comparison_report(cmp_dir).read_text()
    assert "naive" in text and "er" in text and "80.5% ± 0.5%" in text  # naive final accuracy mean ± std, in percent
    # comparison bars, mean-accuracy curves, loss curves, one accuracy matrix per strategy
    assert text.count("data:image/png") == 5
    nocurve = make_comparison(tmp_path / "cmp2", with_curves=False)
    notes: list[str] = []
    text = write_comparison_report(nocurve, notes=notes).read_text()
    assert NO_CURVE in notes and "--eval-every K" in text


def test_report_target_resolution_and_errors(tmp_path, monkeypatch):
    run = make_run(tmp_path / "runs" / "2026-ewc-s0")
    make_run(tmp_path / "runs" / "2026-ewc-s1")
    cmp_dir = make_comparison(tmp_path / "runs" / "cmp-1")
    assert report_target(run) == run
    assert report_target(run / "run.sqlite") == run
    assert report_target(cmp_dir / "compare.json") == cmp_dir
    roots = [tmp_path / "runs"]
    assert report_target("2026-ewc-s0", roots) == run.resolve()
    assert report_target("cmp-1", roots) == cmp_dir.resolve()
    with pytest.raises(LifelongError, match="unknown run 'nope'.*'lifelong runs'"):
        report_target("nope", roots)
    with pytest.raises(LifelongError, match="ambiguous"):
        report_target("2026-ewc", roots)
    with pytest.raises(LifelongError, match="neither a run"):
        report_target(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "compare.json").write_text("{oops")
    with pytest.raises(LifelongError, match="not valid JSON"):
        write_report(tmp_path / "bad")


def test_report_command(tmp_path, capsys):
    run = make_run(tmp_path / "runs" / "r1", curve=False)
    parser = argparse.ArgumentParser(prog="lifelong")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "r1", "--runs-root", str(tmp_path / "runs"), "--json"])
    assert args.func is run_report_command and run_report_command(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "run" and Path(out["report"]) == run.resolve() / "report.html" and NO_CURVE in out["notes"]
    args = parser.parse_args(["report", str(run), "-o", str(tmp_path / "x.html")])
    assert run_report_command(args) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "--eval-every" in captured.err and (tmp_path / "x.html").is_file()
    with pytest.raises(LifelongError, match="unknown run"):
        run_report_command(parser.parse_args(["report", "missing-id", "--runs-root", str(tmp_path)]))


def test_an_unfinished_run_is_scored_on_the_experiences_trained_so_far_and_says_why_it_stopped(tmp_path):
    """Two rows of three: the metrics of a 2-experience run (they averaged over the untrained third before:
    final and average incremental accuracy 20 % for a run at 100 % on what it had learned)."""
    from lifelong.report.html import read_run
    from lifelong.tracking.store import RunStore

    run = make_run(tmp_path / "run", curve=False, loss=False, rows=2, status="failed")
    store = RunStore.open(run)
    store.set_meta(error="loss became inf at step 23 (experience 1)")
    store.close()
    m = read_run(run)["metrics"]
    assert m["final_accuracy"] == pytest.approx((0.375 + 0.875) / 2)
    assert m["average_incremental_accuracy"] == pytest.approx((1.0 + (0.375 + 0.875) / 2) / 2)
    assert m["bwt"] == pytest.approx(0.375 - 1.0) and m["forgetting"] == pytest.approx(1.0 - 0.375)
    html = write_run_report(run, tmp_path / "r.html").read_text()
    assert "loss became inf at step 23" in html and "experiences trained so far" in html


def test_report_of_a_comparison_that_did_not_finish_says_how_to_finish_it(tmp_path):
    make_run(tmp_path / "cmp" / "naive-s0")  # a comparison interrupted before its compare.json
    with pytest.raises(LifelongError, match="of a comparison that did not finish: run the same compare command "
                                            "with --out"):
        report_target(tmp_path / "cmp")
