"""Find a dataset's original files, or download them once into a cache directory.

Search order for a dataset `name` with files F: the `--data-dir` DIR (DIR or DIR/name; no network is ever used
when DIR is given), then the cache directory ($LIFELONG_DATA/name, else ~/.cache/lifelong/name). Missing files are
downloaded into the cache from the official URLs (or from $LIFELONG_DATA_URL/<file> when that is set: a mirror, or
a loopback server in the tests), into `<file>.part`, which a later call continues with an HTTP Range request. A
finished download is checked against its published MD5 (or SHA-256); a mismatch deletes the file and says so.
Progress goes to stderr. Any network failure is one `LifelongError` line naming the files and where to put them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lifelong.errors import LifelongError
from lifelong.tracking.files import lock_file

CHUNK = 1 << 20
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Remote:
    """One original file: its name, official URL and published checksum (None where none is published)."""

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None


def home_cache() -> Path:
    """~/.cache/lifelong: the default of both caches below."""
    return Path(os.path.expanduser("~")) / ".cache" / "lifelong"


def cache_dir(name: str = "") -> Path:
    """The download cache: $LIFELONG_DATA, else ~/.cache/lifelong (joined with `name`)."""
    base = Path(os.environ.get("LIFELONG_DATA") or home_cache())
    return base / name if name else base


def derived_cache_dir(name: str) -> Path:
    """Where files derived from data are kept (decoded arrays, embeddings, token ids): $LIFELONG_CACHE/name, else
    ~/.cache/lifelong/name. Everything there can be deleted; it is made again when needed."""
    return Path(os.environ.get("LIFELONG_CACHE") or home_cache()) / name


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> None:
    """Check `path` against the remote's checksum; a mismatch deletes the file and raises one clear line."""
    for algorithm, expected in (("sha256", remote.sha256), ("md5", remote.md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got != expected.lower():
                path.unlink(missing_ok=True)
                raise LifelongError(f"{remote.filename}: {algorithm} checksum mismatch (got {got}, expected "
                                    f"{expected}); the download was deleted: run again to download it afresh")
            return


def source_url(remote: Remote, base_url: str | None = None) -> str:
    """The URL to fetch: `base_url` or $LIFELONG_DATA_URL (a mirror) joined with the file name, else official."""
    base = base_url or os.environ.get("LIFELONG_DATA_URL")
    return f"{base.rstrip('/')}/{remote.filename}" if base else remote.url


def offline_hint(dataset: str, files: Sequence[Remote], where: Path) -> str:
    names = ", ".join(r.filename for r in files)
    return (f"put {names} in {where} (or in a directory passed with --data-dir); the official URLs are "
            + ", ".join(r.url for r in files))


def progress(name: str, done: int, total: int | None, start: float) -> None:
    rate = done / max(time.monotonic() - start, 1e-9) / 1e6
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
    print(f"\rdownloading {name}: {size} ({rate:.1f} MB/s)", end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `.<name>.lock` beside `path` (waiting for it): one process downloads or decodes a
    cache entry while the others (compare and tune workers) wait, then find it made. The lock file is kept:
    removing it would race with the waiters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    held = lock_file(path.parent / f".{path.name}.lock")
    try:
        yield
    finally:
        if held is not None:
            held.close()


def download(remote: Remote, dest_dir: Path, base_url: str | None = None, dataset: str = "") -> Path:
    """Download one file into `dest_dir` (resuming `<file>.part`), verify its checksum, and return its path.
    Processes downloading the same file take turns (`exclusive`): the later ones find it downloaded."""
    final = dest_dir / remote.filename
    with exclusive(final):
        if final.is_file():
            return final
        return fetch(remote, dest_dir, base_url, dataset)


def fetch(remote: Remote, dest_dir: Path, base_url: str | None = None, dataset: str = "") -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / remote.filename, dest_dir / (remote.filename + ".part")
    url = source_url(remote, base_url)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lifelong"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    start = time.monotonic()
    try:
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not have:  # 416: the partial file is already complete
                raise
            response = None
        if response is not None:
            with response:
                resumed = have and response.status == 206
                length = response.headers.get("Content-Length")
                total = (int(length) + (have if resumed else 0)) if length else None
                done = have if resumed else 0
                last = 0.0
                with open(part, "ab" if resumed else "wb") as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        done += len(block)
                        if time.monotonic() - last > 0.5:
                            progress(remote.filename, done, total, start)
                            last = time.monotonic()
                progress(remote.filename, done, total, start)
                print(file=sys.stderr)
                if total is not None and done != total:
                    raise LifelongError(f"{remote.filename}: the connection closed after {done} of {total} "
                                        f"bytes; run again to continue the download")
    except urllib.error.HTTPError as err:
        raise LifelongError(f"cannot download {url}: HTTP {err.code} {err.reason}; "
                            + offline_hint(dataset, [remote], dest_dir)) from None
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", None) or err
        raise LifelongError(f"cannot download {url} ({reason}): no network? "
                            + offline_hint(dataset, [remote], dest_dir)) from None
    verify(part, remote)
    if not (remote.sha256 or remote.md5) and final.suffix in (".npz", ".zip") and not zipfile.is_zipfile(part):
        part.unlink(missing_ok=True)  # no checksum to catch it: an error page or a truncated file would stay cached
        raise LifelongError(f"{remote.filename} from {url} is not a zip archive (an error page, or truncated); the "
                            "download was deleted: run again, or check the mirror")
    part.replace(final)
    return final


def locate(dataset: str, files: Sequence[Remote], root: str | os.PathLike | None = None,
           base_url: str | None = None) -> Path:
    """The directory holding all of `files`: `root` (never any network then), else the cache, downloading there
    whatever is missing."""
    if root:
        for d in (Path(root), Path(root) / dataset):
            if all((d / r.filename).is_file() for r in files):
                return d
        missing = [r for r in files if not (Path(root) / r.filename).is_file()]
        raise LifelongError(f"dataset '{dataset}': --data-dir {root} does not hold "
                            f"{', '.join(r.filename for r in missing)}; " + offline_hint(dataset, files, Path(root)))
    where = cache_dir(dataset)
    for remote in files:
        if not (where / remote.filename).is_file():
            download(remote, where, base_url, dataset)
    return where
