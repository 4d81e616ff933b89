"""Atomic file writes: write a temporary file beside the target, then rename it over the target, so neither a
reader nor a crash (even kill -9) ever sees a half-written file: there is the old version or the new one."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)  # never write through a file (or a planted symlink) left at this name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def lock_file(path: str | os.PathLike, wait: bool = True) -> IO[str] | None:
    """`path` opened and locked exclusively (flock) for as long as the returned file stays open: closing it, or
    the process's death (kill -9 included), releases it. `wait=False` raises BlockingIOError at once when another
    process holds it. None where there is no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(path, "a+")  # noqa: SIM115 - held open by the caller
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        f.close()
        raise
    return f


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float as None: JSON has no NaN (Python writes a bare NaN that other
    readers, JavaScript's JSON.parse among them, refuse); an experience without test samples has NaN accuracy."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int = 2) -> Path:
    """`obj` as strict JSON (non-finite floats as null) to `path`, atomically."""
    return write_text_atomic(json.dumps(finite_json(obj), indent=indent, allow_nan=False), path)


def write_bytes_atomic(data: bytes, path: str | os.PathLike, fsync: bool = False) -> Path:
    """`data` to `path` atomically (a new file, never through a symlink); `fsync` also survives a power cut."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with open(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return Path(path)


def save_torch_atomic(obj: Any, path: str | os.PathLike, fsync: bool = False) -> Path:
    """torch.save atomically; `fsync` also survives a power cut. Serialised in memory first, so a full disk is
    a plain OSError (ENOSPC) rather than an error from torch's zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes_atomic(buffer.getvalue(), path, fsync)


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """matplotlib's savefig, atomically (the format comes from the target's suffix, default PNG)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **savefig)
    return Path(path)
