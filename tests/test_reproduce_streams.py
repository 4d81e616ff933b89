"""`lifelong reproduce scole` and `lifelong reproduce si-blurry`: one command each, a table, JSON and a plot whose
numbers agree with each other and with the runs' own results (tiny settings: the --quick paths, made smaller)."""

import json

import pytest

from lifelong import cli
from lifelong.experiments import scole, si_blurry
from lifelong.experiments.schedules import pct


def table_rows(md: str, first_header: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header starts with `first_header`, by their first cell."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_reproduce_scole_quick_table_equals_json_and_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scole, "QUICK", {**scole.QUICK, "scenario": "scole-digits", "hidden": "16",
                                         "scenario_params": "samples=40"})
    monkeypatch.setattr(scole, "QUICK_TASKS", 10)
    out = tmp_path / "scole"
    code = cli.main(["reproduce", "scole", "--quick", "--out", str(out), "--workers", "2", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("scole.md", "scole.json", "scole.png"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "scole.json").read_text())
    assert data["points"] == {"first": 1, "10%": 1, "50%": 5, "100%": 10}
    rows = table_rows(data["table"], "variant")
    assert list(rows) == ["naive", "naive+mask"]
    assert data["table"] in printed and (out / "scole.md").read_text() == data["table"] + "\n"
    for summary in data["summary"]:
        run = next(r for r in data["runs"] if r["variant"] == summary["variant"])
        stored = json.loads((tmp_path / "scole" / "runs" / f"{summary['variant'].replace('+', '_')}-s0" /
                             "result.json").read_text())
        matrix = stored["accuracy_matrix"]
        assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)  # one column per class
        for k, (name, task) in enumerate(data["points"].items()):
            expected = sum(matrix[task - 1]) / 10  # accuracy on all classes: every class weighs the same
            assert summary["accuracy"][name][0] == pytest.approx(expected)
            assert rows[summary["variant"]][k] == pct(summary["accuracy"][name])
        assert run["timing"]["window_tasks"] == 1 and run["timing"]["step_ms_last"] >= 0
    assert data["variants"]["naive+mask"] == {"strategy": "naive", "output_mask": "experience"}


def test_scole_task_timing_from_a_hand_written_log(tmp_path):
    # three tasks of 3 steps; step times 1 ms apart in task 1, 2 ms in task 2, 4 ms in task 3; task ends at
    # 0.010, 0.030, 0.070 (task seconds 0.020 and 0.040)
    lines = []
    for t0, dt, end in ((0.0, 0.001, 0.010), (0.020, 0.002, 0.030), (0.050, 0.004, 0.070)):
        lines += [{"step": 0, "time": t0 + i * dt, "loss": 1.0} for i in range(3)]
        lines.append({"step": 0, "time": end, "accuracy/average": 0.5})
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    t = scole.task_timing(path)
    assert t["window_tasks"] == 1
    assert t["step_ms_first"] == pytest.approx(1.0) and t["step_ms_last"] == pytest.approx(4.0)
    assert t["task_seconds_first"] == pytest.approx(0.020) and t["task_seconds_last"] == pytest.approx(0.040)


def test_reproduce_si_blurry_quick_table_equals_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(si_blurry, "QUICK", {**si_blurry.QUICK, "hidden": "16", "eval_every_samples": 200})
    out = tmp_path / "sib"
    code = cli.main(["reproduce", "si-blurry", "--quick", "--out", str(out), "--workers", "2", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    for name in ("si-blurry.md", "si-blurry.json", "si-blurry.png"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "si-blurry.json").read_text())
    assert data["table"] in printed
    rows = table_rows(data["table"], "strategy")
    assert list(rows) == ["naive", "er"]
    assert data["hparams"] == {"naive": {}, "er": {"buffer_size": 500, "replay_batch_size": 10}}
    for summary in data["summary"]:
        stored = json.loads((out / "runs" / f"{summary['strategy']}-s0" / "result.json").read_text())
        for k, key in enumerate(("a_auc", "a_last", "online_accuracy")):
            assert summary[key][0] == pytest.approx(stored[key])
            assert rows[summary["strategy"]][k] == pct(summary[key])
        # A_auc is the mean of the anytime curve
        acc = [a for a in stored["anytime"]["accuracy"] if a is not None]
        assert stored["a_auc"] == pytest.approx(sum(acc) / len(acc))


def test_reproduce_streams_bad_input_is_one_line(tmp_path, capsys):
    assert cli.main(["reproduce", "scole", "--variants", "naive,bogus", "--out", str(tmp_path / "a")]) == 2
    assert "unknown bogus" in capsys.readouterr().err
    assert cli.main(["reproduce", "scole", "--tasks", "1", "--out", str(tmp_path / "b")]) == 2
    assert "--tasks 1 is out of range" in capsys.readouterr().err
    assert cli.main(["reproduce", "si-blurry", "--strategies", "ewc", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ewc needs task boundaries" in err
    assert not (tmp_path / "c").exists()
