"""`lifelong lm-experiment`: the run grid it trains, and its modules' import order (no cli <-> experiment circle)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifelong.lm.cli import main


@pytest.mark.parametrize("module", ["lifelong.lm.experiment", "lifelong.lm.cli"])
def test_modules_import_alone_and_experiment_does_not_need_the_cli(module):
    code = f"import sys, {module}; print('lifelong.lm.cli' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # this checkout's package
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    out = out.stdout.strip()
    assert out == ("True" if module == "lifelong.lm.cli" else "False")


def test_quick_experiment_trains_the_grid(tmp_path, capsys):
    for name, word in (("a.txt", "alpha beta gamma "), ("b.txt", "uno dos tres ")):
        (tmp_path / name).write_text("\n\n".join(f"{i} " + word * (i % 5 + 3) for i in range(300)))
    out = tmp_path / "exp"
    argv = ["lm-experiment", "--quick", "--corpora", f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}",
            "--replays", "0,0.25", "--batch-size", "2", "--seq-len", "16", "--eval-windows", "2", "--threads", "1",
            "--device", "cpu", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-checkpoints",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "| run |" in capsys.readouterr().out
    rows = json.loads((out / "experiment.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["cosine, replay 0", "cosine, replay 0.25", "infinite, replay 0.25",
                                        "wsd, replay 0.25", "union (re-train)"]  # fmt: skip
    cfgs = {p.parent.name: json.loads(p.read_text())["config"] for p in out.glob("*/result.json")}
    assert cfgs["union-re-train"]["corpora"] == [f"{tmp_path / 'a.txt'}+{tmp_path / 'b.txt'}"]
    assert cfgs["union-re-train"]["steps_per_phase"] == 2 * 20  # --quick: 20 per phase, union = both phases
    assert cfgs["wsd-replay-0.25"]["schedule"] == "wsd" and cfgs["wsd-replay-0.25"]["replay"] == 0.25
    assert all(c["probes"] == 0 and c["json_path"] is None and c["eval_every"] == 10 for c in cfgs.values())
