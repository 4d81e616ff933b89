"""Damaged and untrusted run directories: a planted pickle never runs, a damaged checkpoint or store is refused
with one line (never a traceback, never another number), an incomplete directory is explained, and no
symbolic link planted in a run directory is written through."""

from __future__ import annotations

import os
import random
import sqlite3

import fuzz_cases as fc
import pytest

from lifelong.cli import main
from lifelong.errors import LifelongError
from lifelong.tracking.store import RunStore
from lifelong.training import runner

COMPARED = ("final_accuracy", "accuracy_matrix", "bwt", "forgetting", "initial_accuracy")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return fc.build_fixtures(tmp_path_factory.mktemp("fixtures"))


@pytest.fixture(scope="module")
def uninterrupted(fixtures):
    store = RunStore.open(fixtures / "fin")
    try:
        return store.meta()["result"]
    finally:
        store.close()


# --- item 1: no code from a run directory ------------------------------------------------------------------


@pytest.mark.parametrize("name", [c.name for c in fc.pickle_cases(fc.Path("/nonexistent"))])
def test_planted_pickle_never_runs(fixtures, tmp_path, name):
    (case,) = [c for c in fc.pickle_cases(fixtures) if c.name == name]
    out = fc.run_case(case, tmp_path / "w")
    assert not (tmp_path / "w" / "PWNED").exists(), "code planted in a run directory was executed"
    assert out.kind in ("clean", "wrong") and "touched" not in out.detail, out
    if name.startswith(("resume", "unlearn")):
        assert out.kind == "clean", out


# --- item 4: a damaged checkpoint is refused --------------------------------------------------------------


def test_damaged_checkpoint_refused(fixtures, tmp_path, uninterrupted):
    """Overwriting bytes inside the tensor data changes no structure, only numbers: the checksum catches it."""
    rng = random.Random(0)
    run = fc.copy_fixture(fixtures, "int", tmp_path, "r")
    data = bytearray((run / "checkpoint.pt").read_bytes())
    start = rng.randrange(len(data) // 4, len(data) // 2)
    data[start:start + 256] = bytes(rng.randrange(256) for _ in range(256))
    (run / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(LifelongError, match="damaged"):
        runner.resume(run)


def test_checkpoint_without_model_refused(fixtures, tmp_path):
    import torch

    run = fc.copy_fixture(fixtures, "int", tmp_path, "r")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["model"]
    torch.save(state, run / "checkpoint.pt")
    with pytest.raises(LifelongError, match="damaged|missing model"):
        runner.resume(run)


CORRUPTIONS = ["truncate", "overwrite", "zero", "delete"]
TARGETS = ["checkpoint.pt", "run.sqlite", "run.sqlite-wal", "result.json"]


@pytest.mark.parametrize("target", TARGETS)
def test_corruption_is_clear_or_harmless(fixtures, tmp_path, uninterrupted, target):
    """Truncate, overwrite, zero or delete a run's files, then resume / report / runs: each either refuses with
    one line or (resume) reaches exactly the uninterrupted numbers; never a traceback or another number."""
    seed = int(os.environ.get("LIFELONG_FUZZ_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    for k, how in enumerate(CORRUPTIONS):
        src = "fin" if target == "result.json" else "int"
        run = fc.copy_fixture(fixtures, src, tmp_path, f"r{k}")
        if target == "run.sqlite-wal":  # an interrupted run's WAL: keep it by copying while a reader holds it
            if not (run / target).exists():
                continue
        path = run / target
        if not path.exists():
            continue
        data = path.read_bytes()
        if how == "truncate":
            path.write_bytes(data[:rng.randrange(len(data))])
        elif how == "overwrite":
            i = rng.randrange(len(data))
            n = rng.choice([64, 512, 4096])
            path.write_bytes(data[:i] + os.urandom(min(n, len(data) - i)) + data[i + n:])
        elif how == "zero":
            path.write_bytes(b"")
        else:
            path.unlink()
        for argv in (["resume", str(run), "-q"], ["runs", str(run)], ["report", str(run)]):
            if argv[0] == "resume" and src == "fin":
                continue
            case = fc.Case(f"{argv[0]} after {how} {target}", argv)
            out = fc.run_case(case, tmp_path / "w")
            assert out.kind != "traceback", f"seed {seed}: {case.name}: {out.detail}"
            if argv[0] == "resume" and out.kind == "wrong":  # resumed: the numbers must be exact
                store = RunStore.open(run)
                try:
                    result = store.meta().get("result")
                finally:
                    store.close()
                for key in COMPARED:
                    assert result[key] == uninterrupted[key], f"seed {seed}: {case.name}: silently other {key}"


def test_damaged_page_that_opening_does_not_read_is_refused_at_open(tmp_path):
    """Garbage in a page of the events table (found by the fuzz case above, seed 311536): opening reads only the
    schema, so without a check the first write of a resumed run failed with a sqlite traceback."""
    store = RunStore.create(tmp_path / "r", {"config": {}})
    for i in range(400):
        store.add_event("progress", {"i": i, "pad": "x" * 50})
    root = store.conn.execute("SELECT rootpage FROM sqlite_master WHERE name='events'").fetchone()[0]
    page = store.conn.execute("PRAGMA page_size").fetchone()[0]
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = tmp_path / "r" / "run.sqlite"
    data = bytearray(db.read_bytes())
    data[(root - 1) * page:(root - 1) * page + 64] = b"\xff" * 64  # the events b-tree's root page header
    db.write_bytes(bytes(data))
    with pytest.raises(LifelongError, match="is damaged"):
        RunStore.open(tmp_path / "r")


# --- item 3: zombie and incomplete run directories --------------------------------------------------------


def test_store_creation_is_atomic(tmp_path):
    """A store is never left without its config: a failure while writing the first metadata leaves nothing."""
    with pytest.raises(TypeError):
        RunStore.create(tmp_path / "r", {"config": {"a": object()}})
    assert not (tmp_path / "r" / "run.sqlite").exists()
    assert [p.name for p in (tmp_path / "r").iterdir()] == []


@pytest.mark.parametrize("argv,match", [(["resume", "{r}", "-q"], "incomplete"), (["runs", "{r}"], "damaged"),
                                        (["run", "--scenario", "split-digits", "--run-dir", "{r}", "-q"],
                                         "already holds")])
def test_incomplete_run_dir_explained(fixtures, tmp_path, capsys, argv, match):
    run = tmp_path / "r"
    run.mkdir()
    conn = sqlite3.connect(run / "run.sqlite")
    conn.executescript(__import__("lifelong.tracking.store", fromlist=["SCHEMA"]).SCHEMA)
    conn.close()
    code = main([a.format(r=run) for a in argv])
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert match in text and "Traceback" not in text
    if argv[0] != "runs":
        assert code == 2


@pytest.mark.parametrize("command", ["runs", "report", "resume"])
def test_zero_byte_store_left_untouched(tmp_path, capsys, command):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.sqlite").write_bytes(b"")
    main([command, str(run)] + (["-q"] if command == "resume" else []))
    captured = capsys.readouterr()
    assert "empty" in captured.out + captured.err
    assert (run / "run.sqlite").stat().st_size == 0


# --- item 11: symlinks in a run directory ------------------------------------------------------------------


@pytest.mark.parametrize("name", [c.name for c in fc.symlink_cases(fc.Path("/nonexistent"))])
def test_symlinks_in_run_dir_not_followed(fixtures, tmp_path, name):
    (case,) = [c for c in fc.symlink_cases(fixtures) if c.name == name]
    out = fc.run_case(case, tmp_path / "w")
    assert "touched" not in out.detail and out.kind != "traceback", out
