"""Fortune files (the `fortune` program's databases) as text: one reader for every corpus built on them.

A fortune file holds entries separated by lines holding a single '%' (trailing spaces or a carriage return
allowed, as `strfile` writes them; a line that merely starts with '%' is text). Old files embolden and underline
with terminal overstrike: ``X BACKSPACE X`` (bold), ``_ BACKSPACE X`` (underline), or a run of underscores
followed by as many backspaces and then the word. The parser replays the backspaces on each line and keeps the
printed character (a letter wins over an underscore), so ``*____\\b\\b\\b\\bonly*`` reads ``*only*``.
Files are read as UTF-8; a line that is not valid UTF-8 is read as Latin-1 (older fortune files are
ISO-8859-1), so no byte is replaced. The Debian packages `fortunes`, `fortunes-de`, `fortunes-es`,
`fortunes-it` install them under /usr/share/games/fortunes (override with $LIFELONG_FORTUNES_DIR).
"""

from __future__ import annotations

import os
from pathlib import Path

from lifelong.errors import LifelongError

FORTUNES_DIR = Path(os.environ.get("LIFELONG_FORTUNES_DIR", "/usr/share/games/fortunes"))


def decode_text(raw: bytes) -> str:
    """UTF-8 text; only the lines that are not valid UTF-8 are decoded as Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for line in raw.split(b"\n"):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
    return "\n".join(lines)


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The decoded text of `path` (see `decode_text`); an unreadable file is one LifelongError line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise LifelongError(f"cannot read {what} '{path}': {e.strerror or e}") from None
    return decode_text(raw)


def _overstrike_line(line: str) -> str:
    cells: list[str] = []
    col = 0
    for ch in line:
        if ch == "\b":
            col = max(col - 1, 0)
            continue
        if col == len(cells):
            cells.append(ch)
        elif ch != "_" or cells[col] in " _":
            cells[col] = ch
        col += 1
    return "".join(cells)


def strip_overstrike(text: str) -> str:
    """Text as a terminal would print it: every backspace moves back one column and the next character
    overstrikes the one there (an underscore does not hide a character)."""
    if "\b" not in text:
        return text
    return "\n".join(_overstrike_line(line) for line in text.split("\n"))


def parse_fortunes(text: str) -> list[str]:
    """The entries of a fortune file's text, overstrike removed, trailing spaces of each line and blank lines
    around each entry dropped (indentation kept); entries holding only whitespace are left out."""
    entries: list[list[str]] = [[]]
    for line in strip_overstrike(text).split("\n"):
        line = line.rstrip()
        if line == "%":
            entries.append([])
        else:
            entries[-1].append(line)
    return [body for lines in entries if (body := "\n".join(lines).strip("\n")).strip()]


def read_fortunes(path: str | os.PathLike) -> list[str]:
    """The entries of the fortune file `path` (see `parse_fortunes`)."""
    return parse_fortunes(read_text(path, "fortune file"))
