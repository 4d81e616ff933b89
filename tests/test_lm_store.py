"""`lifelong lm` in the run store: --config and --log, listed by `lifelong runs`, rendered by `lifelong report`
with loss-per-domain curves, plain progress lines off a terminal, Hugging Face names with a clear line offline."""

from __future__ import annotations

import csv

import pytest

from lifelong.cli import main
from lifelong.tracking.store import DB_NAME, RunStore

FLAGS = ["--threads", "1", "--no-checkpoints"]
CONFIG = """steps-per-phase: 4
batch-size: 2
seq-len: 16
eval-every: 2
eval-windows: 2
corpora: [fortunes-en, fortunes-de]
"""


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "lm.yaml").write_text(CONFIG)
    capture = pytest.MonkeyPatch()
    capture.setenv("HF_HUB_OFFLINE", "1")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["lm", "--config", str(root / "lm.yaml"), "--log", "csv", "--out", str(root / "runs" / "lm1"),
                     *FLAGS])
    capture.undo()
    assert code == 0, err.getvalue()
    return root, err.getvalue()


def test_lm_run_is_stored_with_config_status_and_loss_per_domain(lm_run):
    root, _ = lm_run
    store = RunStore.open(root / "runs" / "lm1")
    try:
        meta = store.checked_meta()
        en = store.scalars("eval_loss/fortunes-en")
        de = store.scalars("eval_loss/fortunes-de")
        loss = store.scalars("loss")
    finally:
        store.close()
    assert meta["kind"] == "lm" and meta["status"] == "finished"
    assert meta["config"]["steps_per_phase"] == 4 and meta["config"]["corpora"] == ["fortunes-en", "fortunes-de"]
    assert en[0] == de[0] == [0, 2, 4, 6, 8]  # the initial evaluation and every eval_every updates
    assert meta["boundaries"] == [4, 8] and loss[0]
    assert meta["result"]["final_loss"]["fortunes-de"] == pytest.approx(de[1][-1], rel=0.05)
    with (root / "runs" / "lm1" / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert {"eval_loss/fortunes-en", "eval_loss/fortunes-de", "loss", "lr"} <= set(header)


def test_lm_progress_is_plain_lines_off_a_terminal(lm_run):
    _, err = lm_run
    assert "\r" not in err and "lm: step 8/8" in err


def test_runs_lists_lm_runs_with_a_kind_column_and_report_renders_domain_curves(lm_run, capsys):
    root, _ = lm_run
    assert main(["runs", str(root / "runs")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[0] == "kind" and out[1].split()[:2] == ["lm", "finished"]
    assert "fortunes-en,fortunes-de" in out[1]
    assert main(["report", str(root / "runs" / "lm1")]) == 0
    html = (root / "runs" / "lm1" / "report.html").read_text()
    assert "Held-out loss per domain" in html and "fortunes-de" in html and html.count("data:image/png") == 2
    assert (root / "runs" / "lm1" / "plots" / "eval_loss.png").is_file()


def test_hugging_face_name_offline_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["lm", "--model", "gpt2", "--corpora", "fortunes-en", "--steps-per-phase", "2", "--batch-size", "2",
                 "--seq-len", "16", "--eval-windows", "2", "--out", str(tmp_path / "o"), *FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model 'gpt2'" in err[0] and "local cache" in err[0]
    assert main(["lm", "--model", "tiny-lama", "--out", str(tmp_path / "p"), *FLAGS]) == 2
    assert "Did you mean 'tiny-llama'" in capsys.readouterr().err


def test_lm_config_file_rejects_unknown_settings(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("steps-per-phse: 4\n")
    assert main(["lm", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o"), *FLAGS]) == 2
    assert "unknown setting 'steps_per_phse'" in capsys.readouterr().err


def test_lm_run_refuses_an_out_dir_holding_a_classification_run(tmp_path, capsys):
    RunStore.create(tmp_path / "cl", {"config": {"strategy": "er"}}).close()
    code = main(["lm", "--corpora", "fortunes-en", "--steps-per-phase", "2", "--batch-size", "2", "--seq-len", "16",
                 "--eval-windows", "2", "--out", str(tmp_path / "cl"), *FLAGS])
    assert code == 2 and "holds a classification run" in capsys.readouterr().err


def test_lm_run_refuses_an_out_dir_holding_an_lm_run_and_clears_a_failed_start(lm_run, tmp_path, capsys):
    import json
    import shutil
    import sqlite3

    root, _ = lm_run
    done = tmp_path / "done"
    shutil.copytree(root / "runs" / "lm1", done)
    before = (done / DB_NAME).read_bytes()
    code = main(["lm", "--config", str(root / "lm.yaml"), "--out", str(done), *FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a language-model run (finished): choose another --out" in err
    assert (done / DB_NAME).read_bytes() == before  # nothing of it was touched
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root / "runs" / "lm1", unfinished)
    with sqlite3.connect(unfinished / DB_NAME) as con:
        con.execute("UPDATE meta SET value=? WHERE key='status'", (json.dumps("interrupted"),))
    (unfinished / "resume.pt").write_bytes(b"a checkpoint")
    code = main(["lm", "--config", str(root / "lm.yaml"), "--out", str(unfinished), *FLAGS])
    assert code == 2 and f"resume it with 'lifelong lm --resume {unfinished}'" in capsys.readouterr().err
    (unfinished / "resume.pt").unlink()  # stopped before its first checkpoint: nothing to keep
    assert main(["lm", "--config", str(root / "lm.yaml"), "--out", str(unfinished), *FLAGS]) == 0


@pytest.mark.parametrize("line,message", [
    ("replay: 5%", "replay fraction '5%' is not a number"),
    ("replay: [0.1]", "'replay' must be a single value"),
    ("corpora: {a: 1}", "'corpora' must be text or a list"),
    ("out: [a]", "'out' must be a single value"),
])
def test_lm_config_file_values_of_the_wrong_kind_are_one_line(tmp_path, capsys, line, message):
    (tmp_path / "f.yaml").write_text(line + "\n")
    code = main(["lm", "--config", str(tmp_path / "f.yaml"), "--steps-per-phase", "1", "--out", str(tmp_path / "o"),
                 *FLAGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
