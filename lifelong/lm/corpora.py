"""Corpora for continual LM pre-training: built-in offline text, local files, Hugging Face datasets.

A corpus is read as a list of documents, split once into train / held-out / probe documents by a hash of each
document's text (so the split does not depend on file order, and duplicated documents never leak across the
split), tokenized once, and cached on disk as flat token arrays (documents joined by the tokenizer's
end-of-document token) that are opened as ``np.memmap``.

Built-in corpora (no download: Debian packages and the Python installation):
``fortunes-en`` (package fortunes), ``fortunes-de``, ``fortunes-es``, ``fortunes-it`` (a language shift
within one genre, as English -> German in Ibrahim et al. 2024; read by :mod:`lifelong.data.fortunes`), and
``python-stdlib`` (source code of the standard library).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lifelong.data.download import derived_cache_dir
from lifelong.data.fortunes import FORTUNES_DIR, parse_fortunes, read_text
from lifelong.errors import LifelongError
from lifelong.registry import Registry

CACHE_VERSION = "2"  # 2: fortunes parsed by lifelong.data.fortunes (overstrike runs, Latin-1 lines)
SPLITS = ("train", "val", "probe")


@dataclass(frozen=True)
class CorpusSource:
    """Where a corpus comes from: a name (the key in results), a reader of its documents, a data
    fingerprint."""

    name: str
    read: Callable[[], list[str]]
    fingerprint: str


@dataclass
class TokenizedCorpus:
    """Token arrays of one corpus: ``train``, ``val`` (held out, for loss curves), ``probe`` (held out, for
    probes)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    probe: np.ndarray
    path: Path | None = None

    @property
    def n_train(self) -> int:
        return int(self.train.shape[0])


BUILTIN_CORPORA: Registry[Callable[[], CorpusSource]] = Registry("corpus")


def _read_text(path: Path) -> str:
    return read_text(path, "corpus file")


def _files_fingerprint(files: list[Path]) -> str:
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def _fortune_files(sub: str, keep: Callable[[Path], bool] = lambda p: True) -> list[Path]:
    d = FORTUNES_DIR / sub if sub else FORTUNES_DIR
    if not d.is_dir():
        return []
    # regular files only: the top level also holds symlinks to the Italian files, and 'off/' holds ROT13 files
    return sorted(
        p
        for p in d.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8") and keep(p)
    )


def _fortunes_corpus(name: str, sub: str, package: str, keep: Callable[[Path], bool] = lambda p: True):
    def make() -> CorpusSource:
        files = _fortune_files(sub, keep)
        if not files:
            raise LifelongError(
                f"corpus '{name}' is empty: no fortune files in {FORTUNES_DIR / sub} "
                f"(install the Debian package {package})"
            )

        def read() -> list[str]:
            return [doc for f in files for doc in parse_fortunes(_read_text(f))]

        return CorpusSource(name, read, _files_fingerprint(files))

    BUILTIN_CORPORA.add(name, make)


_ART = {"art", "ascii-art", "asciiart", "banner"}
_fortunes_corpus("fortunes-en", "", "fortunes", lambda p: p.name not in _ART)
_fortunes_corpus("fortunes-de", "de", "fortunes-de", lambda p: p.name not in _ART)
_fortunes_corpus("fortunes-es", "es", "fortunes-es", lambda p: p.name.endswith(".fortunes"))
_fortunes_corpus("fortunes-it", "it", "fortunes-it", lambda p: p.name not in _ART)


@BUILTIN_CORPORA.register("python-stdlib")
def _python_stdlib() -> CorpusSource:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {
        "test",
        "tests",
        "site-packages",
        "dist-packages",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "__pycache__",
    }
    files = sorted(p for p in root.rglob("*.py") if not (set(p.relative_to(root).parts) & skip))
    if not files:
        raise LifelongError(f"corpus 'python-stdlib' is empty: no .py files under {root}")

    def read() -> list[str]:
        return [t for f in files if (t := _read_text(f)).strip()]

    return CorpusSource("python-stdlib", read, _files_fingerprint(files))


TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".tex", ".html", ""}


def local_corpus(path: str | os.PathLike) -> CorpusSource:
    """A local text file or a directory of text files; documents are separated by blank lines
    (or by '%' lines in a fortune-style file)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
    elif p.exists():
        files = [p]
    else:
        raise LifelongError(f"corpus file '{path}' does not exist")
    if not files:
        raise LifelongError(f"corpus '{path}' is empty: no text files in it")

    def read() -> list[str]:
        docs: list[str] = []
        for f in files:
            text = _read_text(f)
            if re.search(r"^%\s*$", text, flags=re.MULTILINE):
                docs.extend(parse_fortunes(text))
            else:
                docs.extend(d.strip("\n") for d in re.split(r"\n\s*\n", text) if d.strip())
        return docs

    return CorpusSource(p.name or str(p), read, _files_fingerprint(files))


def check_hub_reachable(name: str, timeout: float = 3.0) -> None:
    """A Hub dataset is streamed from the Hub (HF_ENDPOINT, else huggingface.co): without a network, say so at
    once instead of after the datasets library's retries (about 40 s)."""
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        raise LifelongError(f"cannot reach {host} to stream dataset '{name}' (no network?): save it with "
                            "datasets' save_to_disk where there is one and give hf:<that directory>") from None


def hf_corpus(spec: str, text_field: str = "text", max_docs: int = 100_000) -> CorpusSource:
    """``hf:NAME[:CONFIG][@SPLIT]``: a dataset saved with ``save_to_disk`` (a local directory), or a
    Hugging Face
    Hub dataset streamed (only the first `max_docs` documents are read; needs the network or the HF cache)."""
    body = spec[3:]
    split = "train"
    if "@" in body:
        body, split = body.rsplit("@", 1)
    name, _, config = body.partition(":")

    def read() -> list[str]:
        try:
            import datasets
        except ImportError:
            raise LifelongError(
                "Hugging Face corpora need the 'datasets' package: pip install 'lifelong[lm]'"
            ) from None
        try:
            if Path(name).is_dir():
                ds = datasets.load_from_disk(name)
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[split]
            else:
                check_hub_reachable(name)
                ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
            docs = []
            for i, row in enumerate(ds):
                if i >= max_docs:
                    break
                if text_field not in row:
                    raise LifelongError(
                        f"dataset '{name}' has no '{text_field}' column (columns: {', '.join(row)})"
                    )
                if str(row[text_field]).strip():
                    docs.append(str(row[text_field]))
            return docs
        except LifelongError:
            raise
        except Exception as e:  # network, missing dataset, bad config: one line
            raise LifelongError(
                f"cannot load dataset '{name}': {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None

    label = Path(name).name if Path(name).is_dir() else name.replace("/", "_")
    fp = hashlib.sha1(f"{spec}:{text_field}:{max_docs}".encode()).hexdigest()[:16]
    if Path(name).is_dir():
        fp = _files_fingerprint(sorted(f for f in Path(name).rglob("*") if f.is_file()))
    return CorpusSource(label, read, fp)


def resolve_corpus(spec: str, **hf_options) -> CorpusSource:
    """A built-in name, ``hf:<dataset>``, or a local file/directory."""
    spec = spec.strip()
    if spec in BUILTIN_CORPORA:
        return BUILTIN_CORPORA.get(spec)()
    if spec.startswith("hf:"):
        return hf_corpus(spec, **hf_options)
    if os.sep in spec or Path(spec).exists():
        return local_corpus(spec)
    try:
        BUILTIN_CORPORA.get(spec)
    except LifelongError as e:
        raise LifelongError(f"{e}; or a local file/directory, or hf:<dataset>") from None
    raise AssertionError("unreachable")


def doc_hash(doc: str) -> int:
    return int.from_bytes(hashlib.md5(doc.encode("utf-8", errors="replace")).digest()[:8], "little")


def split_documents(
    docs: list[str], val_fraction: float = 0.05, probe_fraction: float = 0.01
) -> dict[str, list[str]]:
    """Deterministic held-out split by a hash of each document; each split is ordered by that hash (a fixed
    shuffle). Small corpora always get at least one held-out document."""
    scale = float(2**64)
    keyed = sorted((doc_hash(d), d) for d in docs)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for h, d in keyed:
        u = h / scale
        out["val" if u < val_fraction else "probe" if u < val_fraction + probe_fraction else "train"].append(
            d
        )
    if val_fraction > 0 and not out["val"] and len(out["train"]) > 1:
        out["val"].append(out["train"].pop())
    return out


def _encode(docs: list[str], tokenizer, dtype) -> np.ndarray:
    parts = []
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    for i in range(0, len(docs), 1024):
        for ids in tokenizer.encode_batch(docs[i : i + 1024]):
            parts.append(np.asarray(ids, dtype=dtype))
            parts.append(eos)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def default_cache_dir() -> Path:
    return derived_cache_dir("lm-tokens")


def cache_key(source: CorpusSource, tokenizer, val_fraction: float, probe_fraction: float) -> str:
    parts = (CACHE_VERSION, source.name, source.fingerprint, tokenizer.fingerprint)
    parts += (val_fraction, probe_fraction)
    key = "|".join(map(str, parts))
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _open(path: Path, dtype, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,))


def load_cached(dir_: Path, name: str) -> TokenizedCorpus:
    meta = json.loads((dir_ / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    arrays = {s: _open(dir_ / f"{s}.bin", dtype, meta["tokens"][s]) for s in SPLITS}
    return TokenizedCorpus(name, arrays["train"], arrays["val"], arrays["probe"], dir_)


def tokenize_corpus(
    source: CorpusSource,
    tokenizer,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.05,
    probe_fraction: float = 0.01,
    docs: list[str] | None = None,
) -> TokenizedCorpus:
    """Tokenize `source` once and cache its splits as flat token files; later calls memory-map the cache."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source.name)[:60]
    final = root / f"{safe}-{cache_key(source, tokenizer, val_fraction, probe_fraction)}"
    if (final / "meta.json").is_file():
        return load_cached(final, source.name)
    if docs is None:
        docs = source.read()
    if not docs:
        raise LifelongError(f"corpus '{source.name}' is empty: it has no non-blank documents")
    split = split_documents(docs, val_fraction, probe_fraction)
    dtype = token_dtype(tokenizer.vocab_size)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    for s in SPLITS:
        arr = _encode(split[s], tokenizer, dtype)
        arr.tofile(tmp / f"{s}.bin")
        counts[s] = int(arr.shape[0])
    meta = {
        "name": source.name,
        "dtype": np.dtype(dtype).name,
        "tokens": counts,
        "documents": {s: len(split[s]) for s in SPLITS},
        "tokenizer": tokenizer.fingerprint,
        "val_fraction": val_fraction,
        "probe_fraction": probe_fraction,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, final)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_cached(final, source.name)
