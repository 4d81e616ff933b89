"""`lifelong reproduce zoo`: one command, a table, JSON and a plot for every method asked for."""

import json

from lifelong import cli
from lifelong.experiments.zoo import summarize


def test_reproduce_zoo_quick_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "zoo"
    code = cli.main(["reproduce", "zoo", "--quick", "--strategies", "er,naive", "--workers", "1", "-q",
                     "--out", str(out)])
    assert code == 0
    data = json.loads((out / "zoo.json").read_text())
    assert [(r["scenario"], r["strategy"]) for r in data["summary"]] == [
        ("split-digits", "er"), ("split-digits", "naive"), ("task-split-digits", "er"), ("task-split-digits", "naive")]
    assert all(r["time_vs_er"] == 1.0 for r in data["summary"] if r["strategy"] == "er")
    assert (out / "zoo.png").stat().st_size > 0 and "| er | replay |" in (out / "zoo.md").read_text()


def test_time_is_relative_to_er_and_failures_are_shown():
    runs = [{"scenario": "s", "strategy": "er", "train_seconds": 2.0, "final_accuracy": 0.5, "forgetting": 0.1,
             "peak_rss_mb": 100.0},
            {"scenario": "s", "strategy": "naive", "train_seconds": 3.0, "final_accuracy": 0.2, "forgetting": 0.9,
             "peak_rss_mb": 90.0},
            {"scenario": "s", "strategy": "ewc", "error": "loss became inf"}]
    rows = summarize(runs, ["s"], ["er", "naive", "ewc"])
    assert rows[1]["time_vs_er"] == 1.5 and rows[2]["error"] == "loss became inf"
