"""Interrupted work: training, downloads and ``facekit compress`` killed by a signal, then rerun.

Each test starts the real thing in a subprocess (``python -m facekit.cli ...`` or
:func:`facekit.data.download.download_file`), waits until it has visibly done part of
its work, kills it (SIGTERM / SIGKILL / SIGINT) and checks what it left: nothing
partial under a final name, and a rerun that completes. For training, the resumed run
must end with exactly the weights of a run that never stopped (same seed, CPU, one
thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facekit import container
from facekit.cli import main
from facekit.codecs.learned import LearnedCodec
from facekit.data import download
from facekit.data.download import download_file

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
WEIGHTS = CORPUS / "weights"
sys.path.insert(0, str(CORPUS))

from make_corpus import face_image  # noqa: E402

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.usefixtures("one_thread")]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _sigint_default() -> None:
    # a shell starts background jobs with SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler: give the child the Ctrl-C a user's terminal would deliver
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, *args], cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT,
                                preexec_fn=_sigint_default)


def _wait_for(proc: subprocess.Popen, ready, log: Path, timeout: float = 180.0) -> None:  # type: ignore[no-untyped-def]
    """Poll until ``ready()``; fail if the process ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no kill point after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=60)


def _quiet_main(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(args))


# --------------------------------------------------------------------------- training

TRAIN = [
    "--rate", "q1", "--arch", "enc_widths=[8,8,8,8]", "dec_widths=[8,8,8,8]", "dec_blocks=1",
    "--crop", "32", "--batch-size", "2", "--steps", "24", "--checkpoint-every", "4", "--log-every", "4",
    "--val-images", "1", "--device", "cpu", "--threads", "1", "--seed", "3",
]


def _history(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in rows]


def test_training_killed_then_resumed_matches_an_uninterrupted_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(face_image(48, 40, seed=i)).save(images / f"face{i}.png")
    run, ref = tmp_path / "run", tmp_path / "ref"
    log = tmp_path / "train.log"
    proc = _start(["-m", "facekit.cli", "train", "--images", str(images), "--out", str(run), *TRAIN], log)
    _wait_for(proc, lambda: (run / "checkpoint.pt").exists(), log)
    _kill(proc, signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM, log.read_text()[-2000:]
    assert not (run / "model.pt").exists(), "the run finished before it could be interrupted"
    step = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"]
    assert 0 < step < 24

    assert _quiet_main("train", "--images", str(images), "--out", str(run), "--resume", *TRAIN) == 0
    assert _quiet_main("train", "--images", str(images), "--out", str(ref), *TRAIN) == 0

    resumed = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    straight = torch.load(ref / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert resumed.keys() == straight.keys()
    differ = [k for k in straight if not torch.equal(resumed[k], straight[k])]
    assert not differ, f"resumed after step {step}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    a = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    b = torch.load(ref / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == 24
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _history(run / "history.jsonl") == _history(ref / "history.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["steps_done"] == 24


# --------------------------------------------------------------------------- downloads

BODY = random.Random(6).randbytes(400_000)
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class _SlowHandler(BaseHTTPRequestHandler):
    """Serves BODY (honouring Range); ``slow`` paces it at ~200 KB/s in 2 KB writes (~50 KB/s after 80 KB)."""

    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        state["ranges"].append(rng)
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        body = BODY[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        self.end_headers()
        try:
            for i in range(0, len(body), 2048):
                self.wfile.write(body[i : i + 2048])
                if state["slow"]:
                    self.wfile.flush()
                    # past the tests' kill point (60 KB) slow down further, so that a loaded
                    # machine still interrupts the download before it ends
                    time.sleep(0.01 if start + i < 80_000 else 0.04)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def slow_server() -> Iterator[tuple[dict, str]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    httpd.daemon_threads = True
    httpd.state = {"ranges": [], "slow": True}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}/f.bin"  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_download_killed_midway_leaves_only_a_part_file_then_resumes(slow_server, tmp_path, monkeypatch, sig):
    state, url = slow_server
    dest = tmp_path / "data" / "f.bin"
    part = dest.with_name(dest.name + ".part")
    code = (
        "import sys; from pathlib import Path; from facekit.data.download import download_file; "
        "download_file(sys.argv[1], Path(sys.argv[2]), sys.argv[3], progress=False, chunk=4096, retries=0)"
    )
    log = tmp_path / "download.log"
    proc = _start(["-c", code, url, str(dest), BODY_SHA], log)
    _wait_for(proc, lambda: part.exists() and part.stat().st_size >= 60_000, log)
    _kill(proc, sig)
    assert proc.returncode != 0, "the download finished before it could be interrupted"
    left = sorted(p.name for p in dest.parent.iterdir())
    assert left == ["f.bin.part"], left
    have = part.stat().st_size
    assert 0 < have < len(BODY)
    assert BODY.startswith(part.read_bytes())

    state["slow"] = False
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)
    assert download_file(url, dest, BODY_SHA, progress=False, retries=0, timeout=10) == dest
    assert dest.read_bytes() == BODY
    assert not part.exists()
    assert state["ranges"] == [None, f"bytes={have}-"]


def test_download_interrupted_in_process_keeps_the_final_name_free(slow_server, tmp_path, monkeypatch):
    """A KeyboardInterrupt while bytes arrive propagates (no retry swallows it) and leaves a .part."""
    state, url = slow_server
    state["slow"] = False
    dest = tmp_path / "f.bin"
    seen = {"n": 0}
    real_update = download.tqdm.update

    def update(self, n=1):  # type: ignore[no-untyped-def]
        seen["n"] += n
        if seen["n"] >= 100_000:
            raise KeyboardInterrupt
        return real_update(self, n)

    monkeypatch.setattr(download.tqdm, "update", update)
    monkeypatch.setattr(download, "RETRY_BACKOFF", 0.0)
    with pytest.raises(KeyboardInterrupt):
        download_file(url, dest, BODY_SHA, progress=False, retries=2, chunk=4096)
    assert len(state["ranges"]) == 1
    assert not dest.exists()
    have = dest.with_name("f.bin.part").stat().st_size
    assert 0 < have < len(BODY)
    monkeypatch.setattr(download.tqdm, "update", real_update)
    download_file(url, dest, BODY_SHA, progress=False, retries=0)
    assert dest.read_bytes() == BODY
    assert state["ranges"][-1] == f"bytes={have}-"


# --------------------------------------------------------------------------- facekit compress


def test_compress_killed_midway_leaves_no_partial_files_and_a_rerun_completes(tmp_path):
    src = tmp_path / "faces"
    src.mkdir()
    n = 60
    for i in range(n):
        img = face_image(seed=i).astype(np.int16)
        img[..., i % 3] += (i * 7) % 40
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(src / f"face{i:03d}.png")
    out = tmp_path / "out"
    args = ["compress", str(src), "-o", str(out), "--codec", "paper-mse", "--weights", str(WEIGHTS), "--rate", "q1", "--quiet"]
    log = tmp_path / "compress.log"
    proc = _start(["-m", "facekit.cli", *args], log)
    _wait_for(proc, lambda: any(out.rglob("*.fkc")), log)
    _kill(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL

    codec = LearnedCodec("mse", folder=WEIGHTS)
    files = [p for p in out.rglob("*") if p.is_file()]
    final = sorted(p for p in files if p.suffix == ".fkc")
    others = [p for p in files if p.suffix != ".fkc"]
    assert 0 < len(final) < n, f"{len(final)} of {n} written: the kill came too late to test anything"
    for p in final:  # every file under a final name is complete and decodes
        assert codec.decode(p.read_bytes()).shape == (80, 64, 3), p
    assert all(p.name.startswith(".") and ".partial-" in p.name for p in others), others
    before = {p.name: p.read_bytes() for p in final}

    assert _quiet_main(*args) == 0
    rerun = sorted(p for p in out.rglob("*.fkc"))
    assert len(rerun) == n
    for p in rerun:
        container.parse(p.read_bytes())
        if p.name in before:  # the same bytes from another process: encoding is deterministic
            assert p.read_bytes() == before[p.name], p.name
    assert not any(p.suffix == ".fkc" and ".partial-" in p.name for p in out.rglob("*"))
