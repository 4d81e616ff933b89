"""Checkpoints: written atomically and fsync'ed (see lifelong.tracking.files), so a crash or a power cut
leaves either the previous checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import LifelongError
from lifelong.tracking.files import save_torch_atomic


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    save_torch_atomic(obj, path, fsync=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise LifelongError(f"checkpoint {path} cannot be read ({type(err).__name__}); "
                            "delete it to restart the run from the beginning") from None
