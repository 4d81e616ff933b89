"""Checkpoints: written atomically and fsync'ed (see lifelong.tracking.files), so a crash or a power cut
leaves either the previous checkpoint or the new one, never a torn file.

Each checkpoint's SHA-256 is recorded in the run store (`meta.checkpoint_sha256`): as `pending` before the
file is renamed into place and as `current` after, so a kill at any moment leaves a digest that matches the
file on disk. Loading verifies it, so a damaged checkpoint is refused instead of resuming with other weights;
checkpoints load with `weights_only=True`, so a planted pickle cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import LifelongError
from lifelong.tracking.files import write_bytes_atomic
from lifelong.tracking.store import DB_NAME, describe_os_error

DIGEST_KEY = "checkpoint_sha256"
REQUIRED = ("model", "optimizer", "strategy", "generator", "position", "rows", "initial", "train_seconds",
            "boundaries", "curve_steps", "curve")


def _digests(path: Path) -> dict[str, str] | None:
    db = path.parent / DB_NAME
    if not db.is_file():
        return None
    try:
        conn = sqlite3.connect(db, timeout=30)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (DIGEST_KEY,)).fetchone()
        finally:
            conn.close()
        value = json.loads(row[0]) if row else None
    except (sqlite3.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _record(path: Path, digests: dict[str, str]) -> None:
    db = path.parent / DB_NAME
    if not db.is_file():
        return
    conn = sqlite3.connect(db, timeout=30)
    try:
        with conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (DIGEST_KEY, json.dumps(digests)))
    finally:
        conn.close()


VERIFIED: set[str] = set()  # checkpoint paths whose first write was read back with weights_only
PLAIN = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


def unloadable_part(obj: Any, where: str = "") -> str | None:
    """The first entry of `obj` that torch.load(weights_only=True) refuses, as 'key.key: type' (None if none is
    found among plain containers; a type torch accepts beyond these is not named)."""
    if isinstance(obj, PLAIN):
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = unloadable_part(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = unloadable_part(v, f"{where}[{i}]")
            if found:
                return found
        return None
    return f"{where}: {type(obj).__module__}.{type(obj).__qualname__}"


def save_checkpoint(obj: Any, path: str | os.PathLike, resume_command: str = "lifelong resume") -> None:
    """Write `obj` to `path` atomically and record its SHA-256; a full disk is one clear LifelongError (which
    names `resume_command` followed by the run directory). The first write to a path is read back as a resume
    reads it (weights_only): a state holding other objects (a numpy array in a strategy's state) is refused
    now, naming it, rather than found unreadable when the run is resumed."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    if str(path) not in VERIFIED:
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - whatever the unpickler refuses
            part = unloadable_part(obj) or str(err).splitlines()[0][:200]
            raise LifelongError(f"the checkpoint would not load when resumed: {part} is not a tensor, number, "
                                "string, list or dict (a strategy's state_dict must hold only these: convert "
                                "numpy arrays with torch.as_tensor, generators with get_state())") from None
        VERIFIED.add(str(path))
    digest = hashlib.sha256(data).hexdigest()
    try:
        old = (_digests(path) or {}).get("current", "")
        _record(path, {"current": old, "pending": digest})
        write_bytes_atomic(data, path, fsync=True)
        _record(path, {"current": digest, "pending": digest})
        for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a writer killed mid-write (a run directory
            stale.unlink(missing_ok=True)                      # has one writer: none of them is live)
    except (OSError, sqlite3.Error) as err:
        raise LifelongError(f"cannot write checkpoint {path}: {describe_os_error(err)}; the run stays resumable "
                            f"from its previous checkpoint ({resume_command} {path.parent})") from None


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = REQUIRED,
                    restart: str = "delete it to restart the run from the beginning",
                    kind: str = "") -> dict[str, Any] | None:
    """The checkpoint at `path` (None if there is none), verified against the digest in the run store and
    holding the `required` keys (else one line: it is incomplete, or not a `kind` checkpoint when given)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LifelongError(f"checkpoint {path} cannot be read ({err.strerror}); {restart}") from None
    digests = _digests(path)
    if digests is not None and hashlib.sha256(data).hexdigest() not in (digests.get("current"),
                                                                         digests.get("pending")):
        raise LifelongError(f"checkpoint {path} is damaged (its SHA-256 differs from the one recorded when it was "
                            f"written); {restart}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        detail = next((line.strip()[:200] for line in str(err).splitlines()
                       if "GLOBAL" in line or "Unsupported" in line), "")
        what = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
        raise LifelongError(f"checkpoint {path} cannot be read ({what}); {restart}") from None
    missing = [k for k in required if k not in state] if isinstance(state, dict) else ["everything"]
    if missing:
        what = f"is not a {kind} checkpoint" if kind else "is incomplete"
        raise LifelongError(f"checkpoint {path} {what} (missing {', '.join(missing)}); {restart}")
    return state
