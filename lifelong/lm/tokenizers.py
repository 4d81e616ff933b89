"""Tokenizers for continual LM pre-training: byte-level (no files), a BPE trained locally, or a local
directory.

Every tokenizer here exposes the same three things: ``vocab_size``, ``eos_id`` and ``encode_batch(texts)``
(a list of token-id lists), plus ``decode(ids)`` for reading probes. ``fingerprint`` identifies the vocabulary
so that cached token arrays are never reused with a different tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from lifelong.errors import LifelongError
from lifelong.tracking.files import atomic_path


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and an end-of-document token 256. Needs no files and no training."""

    vocab_size = 257
    eos_id = 256
    fingerprint = "byte-v1"
    name = "byte"

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8", errors="replace")) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face ``tokenizers``/``transformers`` tokenizer (trained BPE or a local tokenizer
    directory)."""

    def __init__(self, tok, name: str, fingerprint: str) -> None:
        self._tok = tok  # a tokenizers.Tokenizer
        self.name = name
        self.fingerprint = fingerprint
        self.vocab_size = tok.get_vocab_size()
        eos = None
        for cand in ("<|endoftext|>", "</s>", "<eos>", "[SEP]", "<|end_of_text|>"):
            eos = tok.token_to_id(cand)
            if eos is not None:
                break
        if eos is None:
            raise LifelongError(
                f"tokenizer '{name}' has no end-of-document token (<|endoftext|>, </s> or <eos>)"
            )
        self.eos_id = int(eos)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids))


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike) -> HFTokenizer:
    """Train a byte-level BPE on `texts` with the `tokenizers` library and save it as
    ``out_dir/tokenizer.json``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise LifelongError(
            f"BPE vocabulary size {vocab_size} is too small: use at least 300 (256 bytes + merges)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    return _from_tokenizer_json(out / "tokenizer.json", f"bpe{vocab_size}")


def _from_tokenizer_json(path: Path, name: str) -> HFTokenizer:
    from tokenizers import Tokenizer

    raw = path.read_bytes()
    return HFTokenizer(
        Tokenizer.from_str(raw.decode("utf-8")), name, "json-" + hashlib.sha1(raw).hexdigest()[:16]
    )


def load_tokenizer_dir(path: str | os.PathLike) -> HFTokenizer:
    """A local tokenizer directory (``tokenizer.json``, as saved by tokenizers or transformers). Never
    downloads."""
    p = Path(path)
    if p.is_file() and p.name.endswith(".json"):
        return _from_tokenizer_json(p, p.stem)
    if not (p / "tokenizer.json").is_file():
        raise LifelongError(f"tokenizer directory '{path}' has no tokenizer.json")
    try:
        return _from_tokenizer_json(p / "tokenizer.json", p.name)
    except (ValueError, json.JSONDecodeError, Exception) as e:  # tokenizers raises plain Exception
        if isinstance(e, LifelongError):
            raise
        raise LifelongError(f"cannot read tokenizer '{path}': {str(e).splitlines()[0]}") from None
