"""The run store: one SQLite database per run directory (`run.sqlite`) plus its artifact files.

Every write is one transaction (WAL journal), so a crash at any moment leaves the database consistent.
A run directory is self-contained: copy it elsewhere and `lifelong resume` / `lifelong report` still work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lifelong.errors import LifelongError
from lifelong.tracking.files import lock_file

DB_NAME = "run.sqlite"
LOCK_NAME = ".lock"  # held (flock) by the process writing the run, for its lifetime

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
        """A new run store holding `meta` from its first moment: the database is built under a temporary name
        and linked into place (no-clobber), so a kill or a full disk never leaves a store without its config,
        and two runs given the same directory cannot both claim it."""
        run_dir = Path(run_dir)
        db = run_dir / DB_NAME
        if db.exists() or db.is_symlink():
            raise LifelongError(f"{run_dir} already holds a run: resume it with 'lifelong resume {run_dir}' "
                                "or choose another --run-dir")
        tmp = run_dir / f".{DB_NAME}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if run_dir.is_symlink():
                raise LifelongError(f"run directory {run_dir} is a symbolic link; give a real directory")
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise LifelongError(f"run directory {run_dir} is not writable: "
                                    f"{describe_os_error(err)}") from None
            conn = sqlite3.connect(tmp)
            try:
                conn.executescript(SCHEMA)
                with conn:
                    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                     [(k, json.dumps(v)) for k, v in
                                      {**meta, "status": "running", "created": time.time()}.items()])
            finally:
                conn.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.link(tmp, db)  # atomic and no-clobber: the store appears complete or not at all
        except FileExistsError:
            raise LifelongError(f"{run_dir} already holds a run: resume it with 'lifelong resume {run_dir}' "
                                "or choose another --run-dir") from None
        except (OSError, sqlite3.Error) as err:
            raise LifelongError(f"cannot create the run store in {run_dir} (not writable: "
                                f"{describe_os_error(err)})") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls(run_dir, cls.connect(db))

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> RunStore:
        """An existing run's store; an empty, foreign or incomplete database is refused with one line (and left
        unchanged: opening never writes a schema into it)."""
        run_dir = Path(run_dir)
        db = run_dir / DB_NAME
        if not db.is_file():
            raise LifelongError(f"no run found at {run_dir} (expected {db}); 'lifelong runs' lists stored runs")
        if db.stat().st_size == 0:
            raise LifelongError(f"{db} is empty: the run directory is incomplete (interrupted while being "
                                "created, or copied without its data); delete it and start the run again")
        conn = cls.connect(db, create=False)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            conn.close()
            raise LifelongError(f"run database {db} is unreadable: {err}") from None
        if "meta" not in tables:
            conn.close()
            raise LifelongError(f"{db} is not a run database of lifelong (no meta table): the run directory is "
                                "incomplete or damaged")
        try:  # a damaged page may lie where opening never reads it; find it now, not at the first write
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
        except sqlite3.DatabaseError as err:
            problems = [str(err)]
        if problems != ["ok"]:
            conn.close()
            raise LifelongError(f"run database {db} is damaged ({problems[0]}): restore the "
                                "directory from a copy, or delete it and start the run again")
        return cls(run_dir, conn)

    @staticmethod
    def connect(path: Path, create: bool = True) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                conn.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise LifelongError(f"run database {path} is unreadable: {err}") from None
        return conn

    def close(self) -> None:
        self.conn.close()

    def discard(self) -> None:
        """Close and delete this store, which nothing was recorded in yet (a run that failed to start), so its
        directory can take the run again."""
        self.conn.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            (self.dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)

    # --- metadata ------------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        """Every metadata value; a damaged database or value is one clear error."""
        try:
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError as err:
            raise LifelongError(f"run database {self.dir / DB_NAME} is unreadable: {err}") from None
        out = {}
        for k, v in rows:
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError):
                raise LifelongError(f"run database {self.dir / DB_NAME} is damaged: its meta value {k!r} is not "
                                    "valid JSON") from None
        return out

    def checked_meta(self) -> dict[str, Any]:
        """`meta()` of a complete run: a config mapping and a status string, else one line explaining why not."""
        meta = self.meta()
        if "config" not in meta:
            raise LifelongError(f"{self.dir} is an incomplete run directory (no config was recorded: it was "
                                "interrupted while being created, or run.sqlite was copied without run.sqlite-wal); "
                                "delete it and start the run again")
        if not isinstance(meta["config"], dict) or not isinstance(meta.get("status", ""), str):
            raise LifelongError(f"run database {self.dir / DB_NAME} is damaged: its config or status has the "
                                "wrong type")
        return meta

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
        """Rows of the accuracy matrix; an experience without test samples reads NaN, as it was recorded
        (SQLite stores a NaN as NULL)."""
        rows: dict[int, list[float]] = {}
        for r, _, v in self.conn.execute("SELECT row, experience, value FROM accuracy ORDER BY row, experience"):
            rows.setdefault(r, []).append(float("nan") if v is None else v)
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
        """Every event as {"time" (seconds since the epoch), "kind", **payload}; a payload's own "time" or "kind"
        (an unlearning record's ISO time, say) is kept as "payload_time" / "payload_kind"."""
        q = "SELECT time, kind, payload FROM events" + (" WHERE kind=?" if kind else "") + " ORDER BY id"
        out = []
        for t, k, p in self.conn.execute(q, (kind,) if kind else ()):
            payload = json.loads(p)
            payload = {f"payload_{key}" if key in ("time", "kind") else key: v for key, v in payload.items()}
            out.append({"time": t, "kind": k, **payload})
        return out


def scenario_of(meta: dict[str, Any]) -> str:
    """What a stored run trained on, for listings and titles: its scenario, or the name of the user's own data
    (the config's scenario is then only its default, not what was trained)."""
    data = meta.get("data") or {}
    if data.get("source", "scenario") != "scenario":
        return f"{data.get('name', '?')} (own data)"
    config = meta.get("config") or {}
    return str(config.get("scenario", "?")) if isinstance(config, dict) else "?"


def hold_run_dir(run_dir: str | os.PathLike, program: str = "lifelong") -> Any:
    """An exclusive lock on `run_dir` held while the returned file stays open (released by `close()` or by the
    process's death, kill -9 included), so a run still going is never resumed by a second process, and a run
    whose process died can be told from one still going (`run_dir_held`). None where there is no flock."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return lock_file(run_dir / LOCK_NAME, wait=False)
    except BlockingIOError:
        raise LifelongError(f"{run_dir} is in use by another {program} process (a run still going): wait for it "
                            "to end or stop it first") from None
    except OSError as err:
        raise LifelongError(f"run directory {run_dir} is not writable: {describe_os_error(err)}") from None


def run_dir_held(run_dir: str | os.PathLike) -> bool | None:
    """Whether a process holds `run_dir`'s lock now; None when that cannot be told (no lock file: a run written
    before runs were locked, or a platform without flock)."""
    try:
        import fcntl

        f = open(Path(run_dir) / LOCK_NAME, "rb")  # noqa: SIM115
    except (ImportError, OSError):
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def describe_os_error(err: BaseException) -> str:
    """A short reason for a failed write, naming a full disk plainly."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "full" in str(err).lower():
        return "no space left on the disk (free some space and try again)"
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (f" ({err.filename})" if err.filename else "")
    return str(err)


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
