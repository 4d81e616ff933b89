"""Atomic checkpoints: written to a temporary file, flushed, then renamed, so a crash (even kill -9)
leaves either the previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import LifelongError


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise LifelongError(f"checkpoint {path} cannot be read ({type(err).__name__}); "
                            "delete it to restart the run from the beginning") from None
