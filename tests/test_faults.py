"""Faults: kill -9 at random moments (the first milliseconds included), a killed compare worker, a full disk,
parallel runs with default names. Nothing is lost: every run can be finished with the numbers of an
uninterrupted one. (The registry-wide resume test is tests/test_contract.py.)"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from lifelong.errors import LifelongError
from lifelong.tracking.store import RunStore
from lifelong.training import runner
from lifelong.training.config import RunConfig

COMPARED = ("final_accuracy", "accuracy_matrix", "bwt", "forgetting", "initial_accuracy")
SETTINGS = {"scenario": "split-digits", "strategy": "er", "hidden": "32", "epochs": 3, "batch_size": 16,
            "checkpoint_every": 7, "threads": 1, "seed": 1}


def finish(run_dir) -> dict:
    """What a user does after a crash: resume the run, or start it again if it never got a store."""
    if (run_dir / "run.sqlite").exists():
        store = RunStore.open(run_dir)
        try:
            meta = store.checked_meta()
        finally:
            store.close()
        if meta["status"] == "finished":
            return meta["result"]
        return runner.resume(run_dir)
    return runner.run(RunConfig(**SETTINGS), run_dir)


def test_kill_9_at_random_moments_then_resume(tmp_path):
    seed = int(os.environ.get("LIFELONG_FAULT_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    clean = runner.run(RunConfig(**SETTINGS), tmp_path / "clean")
    code = ("import sys; from lifelong.training import runner; from lifelong.training.config import RunConfig; "
            f"runner.run(RunConfig(**{SETTINGS!r}), sys.argv[1])")
    delays = [rng.uniform(0, 0.02), rng.uniform(0, 0.2), rng.uniform(0.2, 2.0)]
    for k, delay in enumerate(delays):
        run_dir = tmp_path / f"killed{k}"
        proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.time() + 120
        while not run_dir.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        result = finish(run_dir)
        for key in COMPARED:
            assert result[key] == clean[key], f"LIFELONG_FAULT_SEED={seed}, kill {delay:.3f} s after start: {key}"


def test_compare_survives_a_killed_worker_and_resumes(tmp_path):
    """Item 2: a worker killed mid-run marks its run failed, the other run finishes, the table and JSON are
    written with the failure shown; running compare again on the same directory resumes the killed run."""
    base = RunConfig(**{**SETTINGS, "epochs": 6})
    out = tmp_path / "cmp"
    killed: list[int] = []

    def progress(state: dict) -> None:
        if not killed and len(state) == 2 and all(step > 0 for step, _ in state.values()):  # both runs stored
            child = multiprocessing.active_children()[0]
            killed.append(child.pid)
            os.kill(child.pid, signal.SIGKILL)

    output = runner.compare(base, ["naive", "er"], [0], out, workers=2, progress=progress)
    assert killed
    errors = [r for r in output["results"] if "error" in r]
    assert len(errors) == 1 and "died" in errors[0]["error"]
    assert len(output["summary"]) == 1
    saved = json.loads((out / "compare.json").read_text())
    assert [("error" in r) for r in saved["results"]] == [("error" in r) for r in output["results"]]
    dead = errors[0]["run_dir"]
    store = RunStore.open(dead)
    try:
        assert store.meta()["status"] == "failed"
    finally:
        store.close()
    again = runner.compare(base, ["naive", "er"], [0], out, workers=2)
    assert not [r for r in again["results"] if "error" in r]
    assert len(again["summary"]) == 2
    fresh = runner.run(base.with_overrides(strategy=errors[0]["strategy"], seed=0), tmp_path / "fresh")
    (resumed,) = [r for r in again["results"] if r["strategy"] == errors[0]["strategy"]]
    for key in COMPARED:
        assert resumed[key] == fresh[key], key


def test_compare_interrupted_in_the_parent_marks_its_runs_interrupted(tmp_path):
    """Ctrl-C reaching only the compare process (kill -INT to its pid): the workers it stops leave no run
    marked "running" (they said so before), and compare run again finishes them."""
    base = RunConfig(**{**SETTINGS, "epochs": 12})
    out = tmp_path / "cmp"

    def progress(state: dict) -> None:
        if len(state) == 2 and all(step > 0 for step, _ in state.values()):  # both runs stored and training
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.compare(base, ["naive", "er"], [0], out, workers=2, progress=progress)
    statuses = []
    for db in out.rglob("run.sqlite"):
        store = RunStore.open(db.parent)
        try:
            statuses.append(store.meta()["status"])
        finally:
            store.close()
    assert len(statuses) == 2 and "interrupted" in statuses and "running" not in statuses, statuses
    again = runner.compare(base, ["naive", "er"], [0], out, workers=2)
    assert not [r for r in again["results"] if "error" in r] and len(again["summary"]) == 2


def test_disk_full_while_checkpointing(tmp_path, monkeypatch):
    """Item 7: ENOSPC while writing a checkpoint is one line naming the disk, the run is marked failed, and
    it resumes to the uninterrupted numbers once space is freed."""
    cfg = RunConfig(**SETTINGS)
    clean = runner.run(cfg, tmp_path / "clean")
    real_fsync, calls = os.fsync, [0]

    def full(fd: int) -> None:
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(LifelongError, match="no space left on the disk"):
        runner.run(cfg, tmp_path / "full")
    monkeypatch.setattr(os, "fsync", real_fsync)
    store = RunStore.open(tmp_path / "full")
    try:
        assert store.meta()["status"] == "failed"
    finally:
        store.close()
    resumed = runner.resume(tmp_path / "full")
    for key in COMPARED:
        assert resumed[key] == clean[key], key


def test_default_run_names_unique_and_reserved_atomically(tmp_path):
    """Item 8: default names differ within one second, and of several runs given one directory at once,
    exactly one gets it; the others are told it already holds a run."""
    cfg = RunConfig(**SETTINGS)
    assert len({runner.default_run_dir(cfg, tmp_path) for _ in range(50)}) == 50
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        try:
            RunStore.create(tmp_path / "same", {"config": {"x": 1}}).close()
            outcomes.append("ok")
        except LifelongError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    assert all("already holds a run" in o for o in outcomes if o != "ok")


def test_a_run_stopped_by_an_unexpected_error_is_marked_failed_and_resumes(tmp_path, digits_cfg):
    import json
    import sqlite3

    from lifelong.training import runner

    def broken(g, total, loss, acc):
        if g == 20:
            raise ZeroDivisionError("a bug in the user's callback")

    cfg = digits_cfg(strategy="naive", epochs=1)
    with pytest.raises(ZeroDivisionError):
        runner.run(cfg, tmp_path / "r", on_step=broken)
    meta = dict(sqlite3.connect(tmp_path / "r" / "run.sqlite").execute("SELECT key, value FROM meta"))
    assert json.loads(meta["status"]) == "failed"
    assert json.loads(meta["error"]) == "ZeroDivisionError: a bug in the user's callback"
    assert runner.resume(tmp_path / "r")["final_accuracy"] == runner.run(cfg, tmp_path / "clean")["final_accuracy"]


def test_sigterm_stops_a_cli_run_as_ctrl_c_does(tmp_path):
    """timeout, kill and batch schedulers send SIGTERM: the run is recorded as interrupted and resumable."""
    import json
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "lifelong", "run", "--scenario", "split-digits", "--epochs", "200",
                             "--hidden", "16", "-q", "--run-dir", str(run_dir)], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 2  # as for Ctrl-C: one line, a non-zero status
    assert f"interrupted; resume with: lifelong resume {run_dir}" in err and "Traceback" not in err
    meta = dict(sqlite3.connect(run_dir / "run.sqlite").execute("SELECT key, value FROM meta"))
    assert json.loads(meta["status"]) == "interrupted"


def test_a_checkpoint_write_removes_temporary_files_left_by_a_killed_writer(tmp_path, digits_cfg):
    from lifelong.training import runner

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    stale = run_dir / ".checkpoint.pt.tmp99999"  # what atomic_path leaves when kill -9 lands mid-write
    stale.write_bytes(b"x" * 1000)
    runner.run(digits_cfg(strategy="naive", epochs=1), run_dir)
    assert not stale.exists()


def test_a_killed_run_is_listed_as_stopped_and_a_live_one_is_not_resumed_twice(tmp_path, capsys):
    """kill -9 leaves the status 'running': `runs` tells it from a live run by the run directory's lock, which
    dies with its process; while the process lives, a resume in another process is refused."""
    import signal
    import subprocess
    import sys
    import time

    from lifelong.cli import main

    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "lifelong", "run", "--scenario", "split-digits", "--epochs", "200",
                             "--hidden", "16", "-q", "--run-dir", str(run_dir)], stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert main(["runs", str(tmp_path)]) == 0
        assert " running " in capsys.readouterr().out
        assert main(["resume", str(run_dir), "-q"]) == 2
        assert "in use by another lifelong process" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert " stopped " in out and f"lifelong resume {run_dir} continues it" in out


def test_a_strategy_state_a_resume_could_not_load_is_refused_at_the_first_checkpoint(tmp_path, digits_cfg):
    """A numpy array in a strategy's state_dict trained and checkpointed fine, and only the resume said the
    checkpoint 'cannot be read (UnpicklingError); delete it' (which did not help)."""
    import numpy as np

    from lifelong.errors import LifelongError
    from lifelong.strategies import Strategy
    from lifelong.training import runner

    class NumpyState(Strategy):
        name = "numpy-state-test"

        def state_dict(self):
            return {"counts": np.zeros(3)}

        def load_state_dict(self, state):
            pass

    from lifelong.strategies import STRATEGIES
    STRATEGIES._items["numpy-state-test"] = NumpyState
    try:
        with pytest.raises(LifelongError, match=r"strategy\.counts: numpy\.ndarray is not a tensor"):
            runner.run(digits_cfg(strategy="numpy-state-test", epochs=1), tmp_path / "r")
    finally:
        del STRATEGIES._items["numpy-state-test"]
