"""One fortune-file reader for the LM corpora and the analytic topic corpus (lifelong.data.fortunes)."""

from __future__ import annotations

import pytest

from lifelong.analytic.text import load_fortunes
from lifelong.data.fortunes import parse_fortunes, read_fortunes, strip_overstrike
from lifelong.errors import LifelongError
from lifelong.lm import corpora as C

# A hand-made fortune file: underline and bold by overstrike (per character, and as a run of underscores then
# backspaces then the word, the form of Debian's `computers`), an empty and a blank-only entry, a Latin-1 line
# in an otherwise UTF-8 file, CRLF separators, a separator with trailing spaces, a text line starting with '%',
# and no final separator.
RAW = (
    b"An _\bu_\bn_\bd_\be_\br_\bl_\bi_\bn_\be_\bd word\n\t\t-- Someone\n%\n"
    b"%\n"
    b"   \n\n%\n"
    b"B\bBo\bol\bld\bd and *____\b\b\b\bonly*\n%   \n"
    b"\n  Gr\xfc\xdfe aus K\xf6ln   \n\n%\n"
    b"caf\xc3\xa9 in UTF-8\r\n%\r\n"
    b"%DCL-MEM-BAD, not a separator\nlast one"
)
EXPECTED = [
    "An underlined word\n\t\t-- Someone",
    "Bold and *only*",
    "  Grüße aus Köln",
    "café in UTF-8",
    "%DCL-MEM-BAD, not a separator\nlast one",
]


@pytest.fixture
def fortune_dir(tmp_path):
    (tmp_path / "topic").write_bytes(RAW)
    (tmp_path / "topic.dat").write_bytes(b"\0")  # strfile's index: the analytic corpus takes indexed files only
    return tmp_path


def test_overstrike_is_replayed_like_a_terminal():
    assert strip_overstrike("_\bX X\bX X\b_ ____\b\b\b\bword") == "X X X word"
    assert strip_overstrike("\bab\b\bcd\n_\bx") == "cd\nx"  # backspace at column 0 stays there; per line
    assert strip_overstrike("no backspace") == "no backspace"


def test_parse_hand_made_file(fortune_dir):
    assert read_fortunes(fortune_dir / "topic") == EXPECTED
    assert parse_fortunes("") == [] and parse_fortunes("%\n%\n") == []
    assert not any("\b" in s or "\ufffd" in s for s in EXPECTED)


def test_lm_corpora_and_analytic_corpus_read_the_same_entries(fortune_dir, monkeypatch):
    monkeypatch.setattr(C, "FORTUNES_DIR", fortune_dir)
    assert C.resolve_corpus("fortunes-en").read() == EXPECTED  # built-in corpus
    assert C.local_corpus(fortune_dir / "topic").read() == EXPECTED  # a local fortune-style file
    texts, labels, names = load_fortunes(["topic"], fortune_dir, max_per_class=None, min_chars=1)
    assert texts == EXPECTED and names == ["topic"] and labels.tolist() == [0] * len(EXPECTED)


def test_unreadable_fortune_file_is_one_line(tmp_path):
    with pytest.raises(LifelongError, match="cannot read fortune file"):
        read_fortunes(tmp_path / "missing")
