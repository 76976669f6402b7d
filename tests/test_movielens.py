"""Downloads against an HTTP server the test starts on 127.0.0.1 (never the real GroupLens site)."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.data import DataError, fetch, load_dataset
from pipeline.data import movielens
from tests.test_readers import udata_text


def make_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("ml-100k/README", "test archive")
        zf.writestr("ml-100k/u.data", udata_text() * 1 + "".join(f"{u}\t{i}\t3\t1\n" for u in range(5, 60) for i in range(1, 40)))
    return buf.getvalue()


class Server:
    """Serves /ml-100k.zip; honours Range; can cut a transfer short once."""

    def __init__(self, body: bytes):
        self.body, self.requests, self.cut_after = body, [], None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                if self.path != "/ml-100k.zip":
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.body) - 1}/{len(outer.body)}")
                else:
                    self.send_response(200)
                chunk = outer.body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if outer.cut_after is not None:
                    self.wfile.write(chunk[: outer.cut_after])
                    outer.cut_after = None
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def archive():
    return make_archive()


@pytest.fixture
def server(archive, monkeypatch):
    monkeypatch.setitem(movielens.CATALOG, "ml-100k",
                        movielens.Archive("ml-100k", md5=hashlib.md5(archive).hexdigest()))
    with Server(archive) as s:
        monkeypatch.setenv("RECSYS_MOVIELENS_URL", s.url)
        yield s


def test_fetch_verifies_unpacks_and_is_then_a_no_op(tmp_path, server, archive):
    seen = []
    path = fetch("ml-100k", tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "ml-100k" / "u.data" and path.is_file()
    assert (tmp_path / "ml-100k.zip").read_bytes() == archive
    assert (tmp_path / "ml-100k.zip.sha256").read_text().split()[0] == hashlib.sha256(archive).hexdigest()
    assert not (tmp_path / "ml-100k.zip.part").exists()
    assert seen[-1] == (len(archive), len(archive))  # progress reached the total
    n = len(server.requests)
    assert fetch("ml-100k", tmp_path) == path and len(server.requests) == n  # no second download
    r = load_dataset("ml-100k", data_dir=tmp_path)
    assert r.name == "ml-100k" and len(r) > 100


def test_checksum_mismatch_is_rejected_and_nothing_is_kept(tmp_path, server, monkeypatch):
    monkeypatch.setitem(movielens.CATALOG, "ml-100k", movielens.Archive("ml-100k", md5="0" * 32))
    with pytest.raises(DataError, match="failed verification and was deleted: .*MD5 .* does not match"):
        fetch("ml-100k", tmp_path)
    assert not any(tmp_path.iterdir())


def test_interrupted_transfer_is_not_taken_as_good_and_resumes(tmp_path, server, archive):
    server.cut_after = len(archive) // 3
    with pytest.raises(DataError, match="connection closed after"):
        fetch("ml-100k", tmp_path)
    assert not (tmp_path / "ml-100k.zip").exists() and (tmp_path / "ml-100k.zip.part").exists()
    path = fetch("ml-100k", tmp_path)
    assert path.is_file() and (tmp_path / "ml-100k.zip").read_bytes() == archive
    assert server.requests[-1][1] == f"bytes={len(archive) // 3}-"  # resumed with a Range request


def test_a_tampered_cached_archive_is_caught(tmp_path, server):
    fetch("ml-100k", tmp_path)
    zip_path = tmp_path / "ml-100k.zip"
    zip_path.write_bytes(zip_path.read_bytes()[:-1] + b"!")
    with pytest.raises(DataError, match="does not match"):
        fetch("ml-100k", tmp_path)


def test_offline_says_where_to_put_the_archive(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RECSYS_MOVIELENS_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as info:
        fetch("ml-100k", tmp_path)
    assert "download it by hand and put it at" in str(info.value) and str(tmp_path / "ml-100k.zip") in str(info.value)


def test_unknown_name(tmp_path):
    with pytest.raises(DataError, match="unknown MovieLens dataset"):
        fetch("ml-7k", tmp_path)


def test_cli_fetch_then_compare_by_name(tmp_path, server):
    runner = CliRunner()
    res = runner.invoke(cli, ["data", "fetch", "ml-100k", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "downloading" in res.stderr
    res = runner.invoke(cli, ["compare", "--dataset", "ml-100k", "--data-dir", str(tmp_path), "--no-tracking",
                              "--quiet", "--rank", "2", "--max-iter", "20", "--optimizers", "lbfgs"])
    assert res.exit_code == 0, res.output
    assert "dataset ml-100k" in res.stderr


# -- a misbehaving server (issue 22, classes 9 and 10) -------------------------------------------------
class Scripted:
    """A server on 127.0.0.1 whose GET handler is ``handle(handler)``."""

    def __init__(self, handle):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    handle(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted(monkeypatch, archive):
    servers = []

    def start(handle, **limits):
        monkeypatch.setitem(movielens.CATALOG, "ml-100k",
                            movielens.Archive("ml-100k", md5=hashlib.md5(archive).hexdigest(), **limits))
        s = Scripted(handle)
        servers.append(s)
        monkeypatch.setenv("RECSYS_MOVIELENS_URL", s.url)
        return s
    yield start
    for s in servers:
        s.close()


def test_an_endless_body_stops_at_the_archives_limit_and_is_deleted(tmp_path, scripted):
    """No Content-Length and no end: 2 GB of .part for a "1 MB" archive."""
    def endless(h):
        h.send_response(200)
        h.end_headers()
        while True:
            h.wfile.write(b"\0" * 65536)
    scripted(endless, max_download=1 << 20)
    with pytest.raises(DataError, match="passed 1,048,576 bytes, more than this archive can be"):
        fetch("ml-100k", tmp_path)
    assert not (tmp_path / "ml-100k.zip.part").exists()


def test_a_declared_length_over_the_limit_is_refused_before_the_body(tmp_path, scripted):
    def huge(h):
        h.send_response(200)
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        h.wfile.write(b"\0" * 1000)
    scripted(huge, max_download=1 << 20)
    with pytest.raises(DataError, match="offers 1,000,000,000,000 bytes, more than the 1,048,576"):
        fetch("ml-100k", tmp_path)


def test_a_trickling_server_meets_the_deadline_with_progress_shown(tmp_path, scripted):
    """One byte every 5 s never timed out (a per-receive timeout only) and printed nothing."""
    import time

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)
    scripted(trickle)
    seen = []
    start = time.monotonic()
    with pytest.raises(DataError, match="too slow .* run the command again to resume"):
        fetch("ml-100k", tmp_path, progress=lambda done, total: seen.append(done), timeout=5.0, deadline=1.0)
    assert time.monotonic() - start < 5 and len(seen) >= 3 and seen[-1] < 1000
    assert (tmp_path / "ml-100k.zip.part").exists()  # kept, to resume


def test_a_206_for_another_range_is_not_appended(tmp_path, scripted, archive):
    """A 206 reply was appended without checking Content-Range: a corrupt archive."""
    (tmp_path / "ml-100k.zip.part").write_bytes(archive[:100])
    asked = []

    def wrong_range(h):
        rng = h.headers.get("Range")
        asked.append(rng)
        if rng:
            h.send_response(206)
            h.send_header("Content-Range", f"bytes 0-{len(archive) - 1}/{len(archive)}")  # the whole, not 100-
            body = archive
        else:
            h.send_response(200)
            body = archive
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    scripted(wrong_range)
    path = fetch("ml-100k", tmp_path)
    assert (tmp_path / "ml-100k.zip").read_bytes() == archive and path.is_file()
    assert asked == ["bytes=100-", None]  # the bad 206 dropped, a fresh download


def test_an_archive_that_unpacks_past_its_limit_is_not_unpacked(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", udata_text())
        zf.writestr("ml-100k/filler", b"\0" * (3 << 20))
    (tmp_path / "ml-100k.zip").write_bytes(buf.getvalue())
    monkeypatch.setitem(movielens.CATALOG, "ml-100k", movielens.Archive("ml-100k", max_unpacked=1 << 20))
    with pytest.raises(DataError, match="unpack to 3,14.* bytes, more than the 1,048,576 .* not unpacked"):
        fetch("ml-100k", tmp_path)
    assert not (tmp_path / "ml-100k").exists()
