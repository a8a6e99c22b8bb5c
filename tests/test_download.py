"""facekit.data.download against an HTTP server on 127.0.0.1 (loopback only, no internet)."""

from __future__ import annotations

import hashlib
import io
import random
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from facekit.data import download
from facekit.data.download import LFW_SHA256, download_file, download_lfw
from facekit.data.lfw import check_checksums, read_sha256sums
from facekit.errors import DataError, DownloadError

BODY = random.Random(0).randbytes(50_000)
BODY_SHA = hashlib.sha256(BODY).hexdigest()
CHUNK = 4096
TIMEOUT = 5.0


class _State:
    """What the server serves and what it saw.

    ``routes[path]`` is ``(modes, body)``; ``modes`` is a list used one entry per request,
    the last entry repeating. Modes: ``ok`` (honours Range), ``norange`` (always 200, whole
    body), ``truncate`` (200 with the full Content-Length but half the body, then close),
    ``corrupt`` (200, right length, wrong bytes), ``badrange`` (206 with a Content-Range
    that starts elsewhere), ``status:NNN``.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[list[str], bytes]] = {}
        self.log: list[tuple[str, str | None]] = []
        self.sent: list[int] = []
        self.lock = threading.Lock()

    def requests(self, path: str) -> list[str | None]:
        """The Range header of each request for ``path``, in order."""
        return [rng for p, rng in self.log if p == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, closed after it

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _body(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.server.state.sent.append(len(body))  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with state.lock:
            state.log.append((self.path, rng))
            route = state.routes.get(self.path)
            if route is None:
                mode, body = "status:404", b""
            else:
                modes, body = route
                mode = modes.pop(0) if len(modes) > 1 else modes[0]
        if mode.startswith("status:"):
            self.send_error(int(mode.split(":")[1]))
            return
        if mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            state.sent.append(len(body) // 2)
            return
        if mode == "corrupt":
            self._body(200, bytes(b ^ 0xFF for b in body))
            return
        if mode == "badrange" and rng:
            self._body(206, body[1:], {"Content-Range": f"bytes 1-{len(body) - 1}/{len(body)}"})
            return
        if mode == "ok" and rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            self._body(206, body[start:], headers)
            return
        self._body(200, body)  # ok without Range, norange, badrange without Range


@pytest.fixture
def server() -> Iterator[tuple[_State, str]]:
    """An HTTP server on 127.0.0.1 at a free port; yields its state and base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = _State()  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)


@pytest.fixture
def refused_url() -> str:
    """A loopback URL whose port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/f.bin"


def _get(urls, dest: Path, sha: str | None = BODY_SHA, **kw) -> Path:
    kw.setdefault("progress", False)
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("chunk", CHUNK)
    return download_file(urls, dest, sha, **kw)


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# --- download_file -------------------------------------------------------------------------


def test_happy_path_with_checksum(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "sub" / "f.bin"
    assert _get(f"{base}/f.bin", dest, progress=True) == dest
    assert dest.read_bytes() == BODY
    assert not _part(dest).exists()
    assert state.requests("/f.bin") == [None]


def test_uppercase_digest_and_no_digest(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    _get(f"{base}/f.bin", tmp_path / "a.bin", BODY_SHA.upper())
    _get(f"{base}/f.bin", tmp_path / "b.bin", None)
    assert (tmp_path / "a.bin").read_bytes() == BODY == (tmp_path / "b.bin").read_bytes()


def test_existing_file_with_right_sha_makes_no_request(server, tmp_path):
    state, base = server
    dest = tmp_path / "f.bin"
    dest.write_bytes(BODY)
    assert _get(f"{base}/f.bin", dest) == dest
    assert state.log == []


def test_existing_file_with_wrong_sha_is_replaced(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old version")
    _get(f"{base}/f.bin", dest)
    assert dest.read_bytes() == BODY


def test_truncated_on_first_mirror_then_second_mirror(server, tmp_path):
    state, base = server
    state.routes["/a/f.bin"] = (["truncate"], BODY)
    state.routes["/b/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _get([f"{base}/a/f.bin", f"{base}/b/f.bin"], dest, retries=1)
    assert dest.read_bytes() == BODY
    # The truncating mirror was tried 1 + retries times (its 200 answers restart cleanly),
    # then the second mirror resumed the half file it left.
    assert len(state.requests("/a/f.bin")) == 2
    assert state.requests("/b/f.bin") == [f"bytes={len(BODY) // 2}-"]
    assert not _part(dest).exists()


def test_truncated_everywhere_raises_and_keeps_final_name_free(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["truncate"], BODY)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="truncated") as info:
        _get(f"{base}/f.bin", dest, retries=2)
    assert f"{base}/f.bin" in str(info.value)
    assert len(state.requests("/f.bin")) == 3  # bounded: 1 + retries
    assert not dest.exists()


def test_truncated_response_is_resumed_on_retry(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["truncate", "ok"], BODY)
    dest = tmp_path / "f.bin"
    _get(f"{base}/f.bin", dest, retries=1)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == [None, f"bytes={len(BODY) // 2}-"]


def test_corrupt_response_raises_and_leaves_no_file(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["corrupt"], BODY)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        _get(f"{base}/f.bin", dest, retries=2)
    assert not dest.exists()
    assert not _part(dest).exists()
    assert len(state.requests("/f.bin")) == 1  # wrong bytes are not retried on the same mirror


def test_corrupt_first_mirror_then_good_second(server, tmp_path):
    state, base = server
    state.routes["/a/f.bin"] = (["corrupt"], BODY)
    state.routes["/b/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _get([f"{base}/a/f.bin", f"{base}/b/f.bin"], dest)
    assert dest.read_bytes() == BODY
    assert state.requests("/b/f.bin") == [None]


def test_resume_partial_part_with_range(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY[:20_000])
    _get(f"{base}/f.bin", dest, retries=0)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == ["bytes=20000-"]
    assert state.sent == [len(BODY) - 20_000]
    assert not _part(dest).exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["norange"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(b"\0" * 20_000)  # would corrupt the file if appended to
    _get(f"{base}/f.bin", dest, retries=0)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == ["bytes=20000-"]


def test_resumed_part_failing_checksum_restarts_from_zero(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(b"\0" * 20_000)  # a damaged prefix the server happily resumes
    _get(f"{base}/f.bin", dest, retries=0)  # the restart is free, even with retries=0
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == ["bytes=20000-", None]


def test_part_longer_than_file_gets_416_and_restarts(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY + b"extra")
    _get(f"{base}/f.bin", dest, retries=0)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == [f"bytes={len(BODY) + 5}-", None]


def test_complete_part_answered_416_is_accepted(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY)
    _get(f"{base}/f.bin", dest, retries=0)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == [f"bytes={len(BODY)}-"]


def test_wrong_content_range_restarts(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["badrange"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).write_bytes(BODY[:1000])
    _get(f"{base}/f.bin", dest, retries=0)
    assert dest.read_bytes() == BODY
    assert state.requests("/f.bin") == ["bytes=1000-", None]


def test_404_on_first_mirror_then_second(server, tmp_path):
    state, base = server
    state.routes["/b/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _get([f"{base}/a/f.bin", f"{base}/b/f.bin"], dest, retries=2)
    assert dest.read_bytes() == BODY
    assert len(state.requests("/a/f.bin")) == 1  # a 404 is not retried


def test_server_error_is_retried(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["status:503", "ok"], BODY)
    dest = tmp_path / "f.bin"
    _get(f"{base}/f.bin", dest, retries=1)
    assert dest.read_bytes() == BODY
    assert len(state.requests("/f.bin")) == 2


def test_every_mirror_failing_lists_each_url_and_why(server, tmp_path, refused_url):
    state, base = server
    state.routes["/c/f.bin"] = (["corrupt"], BODY)
    urls = [f"{base}/a/f.bin", refused_url, f"{base}/c/f.bin"]
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        _get(urls, dest, retries=1)
    msg = str(info.value)
    for url in urls:
        assert url in msg
    assert "HTTP 404" in msg
    assert "refused" in msg.lower()
    assert "sha256 mismatch" in msg
    assert not dest.exists()


def test_bad_arguments():
    with pytest.raises(DownloadError):
        download_file([], Path("unused"), None)
    with pytest.raises(ValueError):
        download_file("http://127.0.0.1:9/x", Path("unused"), None, retries=-1)
    with pytest.raises(ValueError, match="64 hex"):
        download_file("http://127.0.0.1:9/x", Path("unused"), "abc")


def test_unwritable_destination_is_a_download_error(server, tmp_path):
    state, base = server
    state.routes["/f.bin"] = (["ok"], BODY)
    dest = tmp_path / "f.bin"
    _part(dest).mkdir()  # the .part name is taken by a folder: cannot be opened for writing
    with pytest.raises(DownloadError, match="cannot write"):
        _get(f"{base}/f.bin", dest, retries=0)
    assert not dest.exists()


# --- download_lfw --------------------------------------------------------------------------


def _fake_tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"\xff\xd8 not really a jpeg \xff\xd9"
        info = tarfile.TarInfo("lfw-deepfunneled/Jane_Doe/Jane_Doe_0001.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_lfw(server, monkeypatch):
    """The server's ``/lfw/`` serves a tiny tgz and pairs.txt whose digests are patched in."""
    state, base = server
    files = {"lfw-deepfunneled.tgz": _fake_tgz(), "pairs.txt": b"1 1\nJane_Doe 1 1\nA 1 B 1\n"}
    for name, data in files.items():
        state.routes[f"/lfw/{name}"] = (["ok"], data)
        monkeypatch.setitem(LFW_SHA256, name, hashlib.sha256(data).hexdigest())
    return state, base, files


def test_download_lfw_from_local_mirror(fake_lfw, tmp_path):
    state, base, files = fake_lfw
    out = download_lfw(tmp_path / "lfw", [f"{base}/lfw/"], files=tuple(files), progress=False)
    assert out == tmp_path / "lfw"
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert read_sha256sums(out / "SHA256SUMS") == LFW_SHA256
    assert check_checksums(out) == {name: True for name in files}


def test_download_lfw_uses_env_mirrors_in_order(fake_lfw, tmp_path, monkeypatch):
    state, base, files = fake_lfw
    monkeypatch.setenv("FACEKIT_LFW_MIRRORS", f"{base}/missing {base}/lfw")
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    out = download_lfw(files=("pairs.txt",), progress=False)
    assert out == tmp_path / "cache" / "lfw"
    assert (out / "pairs.txt").read_bytes() == files["pairs.txt"]
    assert state.requests("/missing/pairs.txt") == [None]
    assert not (out / "lfw-deepfunneled.tgz").exists()


def test_download_lfw_without_mirrors_explains_setup(monkeypatch, tmp_path):
    monkeypatch.delenv("FACEKIT_LFW_MIRRORS", raising=False)
    with pytest.raises(DataError, match="FACEKIT_LFW"):
        download_lfw(tmp_path)
    with pytest.raises(DataError, match="FACEKIT_LFW"):
        download_lfw(tmp_path, mirrors=[])
    assert not any(tmp_path.iterdir())


def test_download_lfw_refuses_unknown_files(tmp_path):
    with pytest.raises(DataError, match="no known sha256"):
        download_lfw(tmp_path, ["http://127.0.0.1:9/"], files=("secret.bin",))


def test_download_lfw_reports_checksum_failure(fake_lfw, tmp_path, monkeypatch):
    state, base, files = fake_lfw
    monkeypatch.setitem(LFW_SHA256, "pairs.txt", "0" * 64)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        download_lfw(tmp_path, [f"{base}/lfw"], files=("pairs.txt",), progress=False)
    assert not (tmp_path / "pairs.txt").exists()


def test_builtin_digests_match_shared_sha256sums():
    shared = Path("/work/shared/data/lfw/SHA256SUMS")
    if not shared.exists():
        pytest.skip("no shared LFW SHA256SUMS on this machine")
    assert read_sha256sums(shared) == LFW_SHA256
    assert set(download.LFW_FILES) <= set(LFW_SHA256)
