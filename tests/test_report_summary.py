"""A comparison file without a summary: the report summarises it as `lifelong compare` does (runner.mean_std)."""

from __future__ import annotations

import json

import pytest

from lifelong.report.html import _summarise, write_comparison_report
from lifelong.training.runner import SUMMARY_METRICS, summarize_results
from tests.report_helpers import make_comparison


def test_summary_of_a_comparison_without_one(tmp_path):
    d = make_comparison(tmp_path / "cmp")
    data = json.loads((d / "compare.json").read_text())
    del data["summary"]
    (d / "compare.json").write_text(json.dumps(data))
    rows = {r["strategy"]: r for r in _summarise(data["results"])}
    # naive: final accuracy 0.80 and 0.81 over the two seeds -> mean 0.805, population std 0.005
    assert rows["naive"]["final_accuracy_mean"] == pytest.approx(0.805)
    assert rows["naive"]["final_accuracy_std"] == pytest.approx(0.005)
    assert rows["er"]["fwt_mean"] is None and rows["er"]["fwt_std"] is None  # never recorded
    assert rows["er"]["wf10_mean"] == pytest.approx(0.25) and rows["er"]["wf10_std"] == 0.0  # beyond SUMMARY_METRICS
    for ref in summarize_results(data["results"]):  # the runner's own summary agrees on its metrics
        assert {k: rows[ref["strategy"]][f"{k}_{s}"] for k in SUMMARY_METRICS for s in ("mean", "std")} == {
            k: ref[f"{k}_{s}"] for k in SUMMARY_METRICS for s in ("mean", "std")}
    html = write_comparison_report(d).read_text()
    assert "80.5% ± 0.5%" in html
