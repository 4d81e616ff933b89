"""Downloads against a loopback HTTP server (never the internet): checksum, resume with Range, offline line."""

import hashlib
import http.server
import re
import socket
import threading
from contextlib import contextmanager

import pytest

from lifelong.data.download import Remote, download, locate
from lifelong.errors import LifelongError


class FileServer(http.server.ThreadingHTTPServer):
    """Serves `files` (name -> bytes) with HTTP Range support; records each request's Range header."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.ranges = files, []
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        start = 0
        if header:
            start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(files: dict[str, bytes]):
    server = FileServer(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def remote(name: str, body: bytes, md5: bool = True) -> Remote:
    digest = hashlib.md5(body).hexdigest() if md5 else None
    return Remote(name, f"https://example.invalid/{name}", md5=digest,
                  sha256=None if md5 else hashlib.sha256(body).hexdigest())


BODY = bytes(range(256)) * 40


def test_download_verifies_md5_and_sha256(tmp_path, capsys):
    with serve({"a.bin": BODY}) as server:
        for use_md5 in (True, False):
            path = download(remote("a.bin", BODY, use_md5), tmp_path / str(use_md5), server.url)
            assert path.read_bytes() == BODY
            assert not (tmp_path / str(use_md5) / "a.bin.part").exists()
    assert "downloading a.bin" in capsys.readouterr().err


def test_bad_checksum_deletes_and_says_so(tmp_path):
    bad = Remote("a.bin", "https://example.invalid/a.bin", md5="0" * 32)
    with serve({"a.bin": BODY}) as server, pytest.raises(LifelongError, match="md5 checksum mismatch.*deleted"):
        download(bad, tmp_path, server.url)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]  # the lock file stays


def test_partial_download_resumes_with_a_range_request(tmp_path):
    half = len(BODY) // 2
    (tmp_path / "a.bin.part").write_bytes(BODY[:half])
    with serve({"a.bin": BODY}) as server:
        path = download(remote("a.bin", BODY), tmp_path, server.url)
        assert server.ranges == [f"bytes={half}-"]
    assert path.read_bytes() == BODY


def test_complete_part_file_is_kept_on_416(tmp_path):
    (tmp_path / "a.bin.part").write_bytes(BODY)
    with serve({"a.bin": BODY}) as server:
        assert download(remote("a.bin", BODY), tmp_path, server.url).read_bytes() == BODY


def test_corrupt_partial_file_fails_the_checksum_and_is_deleted(tmp_path):
    (tmp_path / "a.bin.part").write_bytes(b"x" * 100)  # wrong prefix: the resumed file is wrong
    with serve({"a.bin": BODY}) as server, pytest.raises(LifelongError, match="checksum mismatch"):
        download(remote("a.bin", BODY), tmp_path, server.url)
    assert not (tmp_path / "a.bin.part").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_one_line_naming_files_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA", str(tmp_path))
    monkeypatch.setenv("LIFELONG_DATA_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(LifelongError) as err:
        locate("toy", [remote("a.bin", BODY)], None)
    msg = str(err.value)
    assert "\n" not in msg and "no network" in msg and "put a.bin in " + str(tmp_path / "toy") in msg


def test_data_dir_never_uses_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_DATA_URL", "http://127.0.0.1:9")
    with pytest.raises(LifelongError, match="--data-dir .* does not hold a.bin"):
        locate("toy", [remote("a.bin", BODY)], tmp_path)
    (tmp_path / "a.bin").write_bytes(BODY)
    assert locate("toy", [remote("a.bin", BODY)], tmp_path) == tmp_path


def test_http_error_is_one_line(tmp_path):
    with serve({}) as server, pytest.raises(LifelongError, match="HTTP 404"):
        download(remote("a.bin", BODY), tmp_path, server.url)


class SlowHandler(Handler):
    """Sends the body in small pieces, so that concurrent downloads overlap."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        import time

        body = self.server.files[self.path.rsplit("/", 1)[-1]]
        self.server.ranges.append(self.headers.get("Range"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 1024):
            self.wfile.write(body[i:i + 1024])
            self.wfile.flush()
            time.sleep(0.01)


def test_concurrent_downloads_of_one_file_take_turns_and_leave_it_whole(tmp_path):
    """compare and tune workers load the same dataset at once: without turns the second appended its Range
    request to the first's .part (a larger, corrupt file cached for good)."""
    server = FileServer({"k.npz": BODY})
    server.RequestHandlerClass = SlowHandler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = [None, None]
        r = Remote("k.npz", "https://example.invalid/k.npz", sha256=hashlib.sha256(BODY).hexdigest())
        workers = [threading.Thread(target=lambda i=i: out.__setitem__(i, download(r, tmp_path, server.url)))
                   for i in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert out[0] == out[1] == tmp_path / "k.npz" and out[0].read_bytes() == BODY
        assert server.ranges == [None]  # one download; the other found it made
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_without_checksum_that_is_not_an_archive_is_not_cached(tmp_path):
    page = b"<html>Service Unavailable</html>"
    with serve({"kmnist-train-imgs.npz": page}) as server:
        with pytest.raises(LifelongError, match="is not a zip archive .* the download was deleted"):
            download(Remote("kmnist-train-imgs.npz", "https://example.invalid/x.npz"), tmp_path, server.url)
    assert not list(tmp_path.glob("kmnist-train-imgs.npz*"))
