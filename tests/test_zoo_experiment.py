"""`lifelong reproduce zoo`: one command, a table, JSON and a plot for every method asked for."""

import json

import pytest

from lifelong import cli
from lifelong.experiments import zoo
from lifelong.experiments.zoo import summarize


def test_reproduce_zoo_quick_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "zoo"
    code = cli.main(["reproduce", "zoo", "--quick", "--strategies", "er,naive,ewc", "--text-strategies", "",
                     "--workers", "1", "-q", "--out", str(out)])
    assert code == 0  # ewc at lambda 1000 diverged in the quick preset (exit 1)
    data = json.loads((out / "zoo.json").read_text())
    assert [(r["scenario"], r["strategy"]) for r in data["summary"]] == [
        ("split-digits", "er"), ("split-digits", "naive"), ("split-digits", "ewc"), ("task-split-digits", "er"),
        ("task-split-digits", "naive"), ("task-split-digits", "ewc")]
    assert data["hparams"]["split-digits/ewc"] == {"ewc_lambda": 100.0}
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


def test_text_table_feeds_the_pretrained_features_to_the_frozen_feature_methods():
    assert zoo.text_hparams("nmc") == {"features": "input"} and zoo.text_hparams("ranpac") == {"features": "input"}
    assert zoo.text_hparams("er") == {} and zoo.text_hparams("slca") == {}


def test_text_table_gives_slca_a_linear_head_on_the_embeddings(monkeypatch):
    from lifelong.data import datasets

    monkeypatch.setitem(datasets.DATASETS._items, "fortunes-minilm", lambda *_a, **_k: None)
    plan = {s["strategy"]: s["settings"] for s in zoo.text_plan(["er", "slca", "nmc"], zoo.TEXT)}
    assert plan["slca"]["hidden"] == "" and "hidden" not in plan["er"] and plan["nmc"]["hparams"] == {
        "features": "input"}
    assert plan["er"]["lr"] == 0.1 and plan["er"]["epochs"] == 20


def test_text_table_is_skipped_with_one_line_when_the_topics_are_missing(monkeypatch, capsys):
    from lifelong.data import datasets
    from lifelong.errors import LifelongError

    def missing(*_a, **_k):
        raise LifelongError("fortune files not found in /nowhere")

    monkeypatch.setitem(datasets.DATASETS._items, "fortunes-minilm", missing)
    assert zoo.text_plan(["nmc"], zoo.QUICK_TEXT) == []
    assert capsys.readouterr().err.strip() == "text topics table skipped: fortune files not found in /nowhere"


def test_reproduce_zoo_text_table_has_its_own_settings_and_time_reference(tmp_path):
    try:
        from lifelong.data.datasets import DATASETS

        DATASETS.get("fortunes-minilm")()
    except Exception as e:  # noqa: BLE001 - fortunes package or MiniLM missing on this machine
        pytest.skip(f"text topics unavailable: {e}")
    out = tmp_path / "zoo"
    code = cli.main(["reproduce", "zoo", "--scenarios", "", "--seeds", "0", "--text-strategies", "er,nmc",
                     "--workers", "1", "-q", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "zoo.json").read_text())
    assert [(r["scenario"], r["strategy"]) for r in data["summary"]] == [
        ("split-fortunes-minilm", "er"), ("split-fortunes-minilm", "nmc")]
    assert data["settings"]["split-fortunes-minilm"]["epochs"] == 20
    assert data["hparams"] == {"split-fortunes-minilm/nmc": {"features": "input"}}
    er, nmc = data["summary"]
    assert er["time_vs_er"] == 1.0 and nmc["final_accuracy"][0] > 0.6
    assert "SGD lr 0.1, batch 32, 20 epochs per experience." in (out / "zoo.md").read_text()
