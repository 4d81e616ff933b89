"""The run store: one SQLite database per run directory (`run.sqlite`) plus its artifact files.

Every write is one transaction (WAL journal), so a crash at any moment leaves the database consistent.
A run directory is self-contained: copy it elsewhere and `lifelong resume` / `lifelong report` still work.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError

DB_NAME = "run.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accuracy (row INTEGER, experience INTEGER, value REAL, PRIMARY KEY (row, experience));
CREATE TABLE IF NOT EXISTS scalars (step INTEGER, name TEXT, value REAL, PRIMARY KEY (step, name));
CREATE TABLE IF NOT EXISTS curve (step INTEGER, experience INTEGER, value REAL, PRIMARY KEY (step, experience));
CREATE TABLE IF NOT EXISTS artifacts (name TEXT PRIMARY KEY, path TEXT, kind TEXT, created REAL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, kind TEXT, payload TEXT);
"""


class RunStore:
    """Read and write one run's records. Use `RunStore.create` for a new run, `RunStore.open` for an old one."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection) -> None:
        self.dir = run_dir
        self.conn = conn

    @classmethod
    def create(cls, run_dir: str | os.PathLike, meta: dict[str, Any]) -> RunStore:
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise LifelongError(f"run directory {run_dir} is not writable: {err.strerror}") from None
        if (run_dir / DB_NAME).exists():
            raise LifelongError(f"{run_dir} already holds a run: resume it with 'lifelong resume {run_dir}' "
                                "or choose another --run-dir")
        store = cls(run_dir, cls.connect(run_dir / DB_NAME))
        store.set_meta(**meta, status="running", created=time.time())
        return store

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> RunStore:
        run_dir = Path(run_dir)
        if not (run_dir / DB_NAME).is_file():
            raise LifelongError(f"no run found at {run_dir} (expected {run_dir / DB_NAME}); "
                                "'lifelong runs' lists stored runs")
        return cls(run_dir, cls.connect(run_dir / DB_NAME))

    @staticmethod
    def connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise LifelongError(f"run database {path} is unreadable: {err}") from None
        return conn

    def close(self) -> None:
        self.conn.close()

    # --- metadata ------------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    @property
    def status(self) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key='status'").fetchone()
        return json.loads(row[0]) if row else "unknown"

    # --- metrics -------------------------------------------------------------------------------------
    def write_accuracy_row(self, row: int, accuracies: Iterable[float]) -> None:
        """Row `row` of the accuracy matrix (-1: before training); rewriting a row replaces it."""
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO accuracy VALUES (?, ?, ?)",
                                  [(row, j, float(a)) for j, a in enumerate(accuracies)])

    def accuracy_rows(self) -> dict[int, list[float]]:
        rows: dict[int, list[float]] = {}
        for r, _, v in self.conn.execute("SELECT row, experience, value FROM accuracy ORDER BY row, experience"):
            rows.setdefault(r, []).append(v)
        return rows

    def log_scalars(self, rows: Iterable[tuple[int, str, float]]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO scalars VALUES (?, ?, ?)", rows)

    def scalars(self, name: str) -> tuple[list[int], list[float]]:
        pairs = self.conn.execute("SELECT step, value FROM scalars WHERE name=? ORDER BY step", (name,)).fetchall()
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def log_curve(self, step: int, accuracies: dict[int, float]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO curve VALUES (?, ?, ?)",
                                  [(step, j, float(a)) for j, a in accuracies.items()])

    def curve(self) -> list[tuple[int, int, float]]:
        return self.conn.execute("SELECT step, experience, value FROM curve ORDER BY step, experience").fetchall()

    # --- artifacts and events ------------------------------------------------------------------------
    def add_artifact(self, name: str, path: str | os.PathLike, kind: str) -> None:
        rel = os.path.relpath(path, self.dir)
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO artifacts VALUES (?, ?, ?, ?)", (name, rel, kind, time.time()))

    def artifacts(self) -> dict[str, tuple[Path, str]]:
        return {n: (self.dir / p, k) for n, p, k in self.conn.execute("SELECT name, path, kind FROM artifacts")}

    def add_event(self, kind: str, payload: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute("INSERT INTO events (time, kind, payload) VALUES (?, ?, ?)",
                              (time.time(), kind, json.dumps(payload)))

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT time, kind, payload FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY id"
        return [{"time": t, "kind": k, **json.loads(p)} for t, k, p in self.conn.execute(q, (kind,) if kind else ())]


def find_runs(roots: Iterable[str | os.PathLike], depth: int = 3) -> list[Path]:
    """Run directories (holding run.sqlite) under the given roots, at most `depth` levels down."""
    found: list[Path] = []
    for root in map(Path, roots):
        if (root / DB_NAME).is_file():
            found.append(root)
        if not root.is_dir():
            continue
        for level in range(1, depth + 1):
            found += sorted(p.parent for p in root.glob("/".join(["*"] * level) + "/" + DB_NAME))
    return found
