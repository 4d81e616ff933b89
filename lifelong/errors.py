"""User-facing errors: the CLI prints them as one line and exits non-zero, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LifelongError(Exception):
    """A mistake the user can fix (bad name, bad value, missing file). Printed as one line by the CLI."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> LifelongError:
    """An error for an unknown `name` of `kind`, suggesting the closest valid name."""
    valid = sorted(valid)
    same = [v for v in valid if v.lower() == str(name).lower()]  # the name in another case comes first
    close = same or difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return LifelongError(f"unknown {kind} '{name}'.{hint} Valid: {', '.join(valid)}")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is an allocation the machine (or the GPU) could not make."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()
