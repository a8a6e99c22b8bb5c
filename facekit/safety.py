"""Guards against hostile input, and the tools that check them.

Bytes a user hands to facekit (a ``.fkc`` file, a JPEG, an "image" that is a text file)
may be truncated, damaged or built to hurt: a header that declares a 60000x60000 image
(a decompression bomb), lengths that point past the end, checksums that do not match.
Every such input must end in a :class:`~facekit.errors.FacekitError` that names the
problem, in bounded time and memory, and never crash the interpreter. Images are read by
:func:`facekit.imageio.open_image`; this module holds the tools that check such readers.

* :func:`run_isolated` runs a call in a forked child under an address-space limit
  (``RLIMIT_AS``) and a timeout, and reports how it ended (:class:`Outcome`): the way to
  test a decoder against bombs without risking the caller's process.
* :func:`apply_ops`, :func:`random_ops` and :func:`reseal` are the mutations the fuzz
  tests (``tests/test_fuzz.py``) and ``benchmarks/fuzz_report.py`` share: truncation,
  bit flips, interesting integers, insertions, deletions, splices, wrong magic; ``reseal``
  repairs the container's CRC32 (and format 1's length) and PNG chunk CRCs so that a mutation reaches
  the checks behind them.
"""

from __future__ import annotations

import os
import random
import resource
import struct
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FacekitError
from .pngstream import PNG_SIGNATURE

# --------------------------------------------------------------------------- isolation


@dataclass(frozen=True)
class Outcome:
    """How an isolated call ended.

    ``status``: ``"ok"`` (returned), ``"refused"`` (raised a :class:`FacekitError`),
    ``"error"`` (raised anything else, ``MemoryError`` included), ``"crash"`` (the child
    died: a signal or an exit without a report), ``"hang"`` (killed after the timeout).
    ``error`` is the exception's class name (or ``"signal N"``), ``message`` its text,
    ``value`` a small repr of the return value, ``extra_vm_mb`` how much address space
    the call added at its peak.
    """

    status: str
    error: str | None = None
    message: str = ""
    seconds: float = 0.0
    value: str | None = None
    extra_vm_mb: float | None = None
    traceback: str | None = None

    @property
    def safe(self) -> bool:
        """Returned, or refused with facekit's own exception."""
        return self.status in ("ok", "refused")


def vm_kb(field: str) -> int | None:
    """A memory figure of this process from ``/proc/self/status`` (``VmSize``, ``VmPeak``, ...) in kB; None where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def classify(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
    """Call ``func`` here (no isolation) and describe how it ended as an :class:`Outcome`."""
    t0 = time.perf_counter()
    try:
        value = func(*args, **kwargs)
    except FacekitError as e:
        return Outcome("refused", type(e).__name__, str(e), time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - this is what we are looking for
        return Outcome(
            "error", type(e).__name__, str(e), time.perf_counter() - t0,
            traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)),
        )
    return Outcome("ok", None, "", time.perf_counter() - t0, value=_short_repr(value))


def _short_repr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray{value.shape} {value.dtype}"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def run_isolated(
    func: Callable[..., Any],
    *args: Any,
    memory_mb: float | None = 1024,
    timeout: float = 60.0,
    **kwargs: Any,
) -> Outcome:
    """Run ``func(*args, **kwargs)`` in a forked child and report how it ended.

    The child may add at most ``memory_mb`` MiB of address space to what it inherited
    (``RLIMIT_AS``; ``None``: no limit) and is killed after ``timeout`` seconds. Torch's
    CPU threads are set to one in the child. POSIX only (``fork``).
    """
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        recv.close()
        try:
            import sys

            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(1)
            start_kb = vm_kb("VmSize")
            if memory_mb is not None and start_kb is not None:
                limit = start_kb * 1024 + int(memory_mb * 2**20)
                _, hard = resource.getrlimit(resource.RLIMIT_AS)
                if hard != resource.RLIM_INFINITY:
                    limit = min(limit, hard)
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            out = classify(func, *args, **kwargs)
            peak_kb = vm_kb("VmPeak")
            extra = None if start_kb is None or peak_kb is None else max(0, peak_kb - start_kb) / 1024
            out = Outcome(out.status, out.error, out.message, out.seconds, out.value, extra, out.traceback)
            send.send(out)
        except BaseException as e:  # noqa: BLE001 - report anything, then leave
            try:
                send.send(Outcome("error", type(e).__name__, f"in the isolation wrapper: {e}"))
            except BaseException:  # noqa: BLE001
                pass
        finally:
            send.close()
            os._exit(0)

    t0 = time.perf_counter()
    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    result: Outcome | None = None
    try:
        if recv.poll(timeout):
            try:
                result = recv.recv()
            except EOFError:
                result = None
        else:
            proc.kill()
            proc.join(5)
            return Outcome("hang", None, f"no answer after {timeout:.1f} s", time.perf_counter() - t0)
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    finally:
        recv.close()
    if result is None:
        code = proc.exitcode
        what = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return Outcome("crash", what, f"the child process died ({what}) without a report", time.perf_counter() - t0)
    return result


# --------------------------------------------------------------------------- mutations

#: the kinds of :func:`apply_ops` operations
OPS = (
    "truncate", "flip", "set_byte", "set_int", "insert", "delete", "duplicate", "zero",
    "splice", "magic", "random",
)
_INTERESTING8 = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x10, 0x40)
_INTERESTING_INT = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 60000, 8193,
                    0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def apply_ops(data: bytes, ops: Sequence[tuple[str, int, int]], others: Sequence[bytes] = ()) -> bytes:
    """Apply mutations ``(kind, position, value)`` in order; positions wrap around the length.

    ``kind`` is one of :data:`OPS`; ``others`` are files to splice from. Deterministic: the
    same input and operations give the same bytes (so hypothesis can shrink them).
    """
    buf = bytearray(data)
    for kind, pos, val in ops:
        n = len(buf)
        pos, val = abs(int(pos)), abs(int(val))
        i = pos % n if n else 0
        span = 1 + val % 64
        if kind == "truncate":
            del buf[pos % (n + 1):]
        elif kind == "flip" and n:
            buf[i] ^= 1 << (val % 8)
        elif kind == "set_byte" and n:
            buf[i] = _INTERESTING8[val % len(_INTERESTING8)]
        elif kind == "set_int" and n:
            number = _INTERESTING_INT[val % len(_INTERESTING_INT)]
            width = 2 if number <= 0xFFFF and (val >> 4) % 2 else 4
            order = ">" if (val >> 5) % 2 == 0 else "<"
            raw = struct.pack(order + ("H" if width == 2 else "I"), number)
            chunk = raw[: n - i]
            buf[i : i + len(chunk)] = chunk
        elif kind == "insert":
            buf[i:i] = bytes([val & 0xFF]) * span
        elif kind == "delete" and n:
            del buf[i : i + span]
        elif kind == "duplicate" and n:
            buf[i:i] = buf[i : i + span]
        elif kind == "zero" and n:
            buf[i : i + span] = bytes(len(buf[i : i + span]))
        elif kind == "splice" and others:
            other = others[val % len(others)]
            j = (val >> 8) % (len(other) + 1)
            buf = buf[:i] + bytearray(other[j:])
        elif kind == "magic":
            buf[:4] = struct.pack(">I", val & 0xFFFFFFFF)
        elif kind == "random":
            buf = bytearray(random.Random(val).randbytes(pos % 4096))
    return bytes(buf)


def random_ops(rng: random.Random, max_ops: int = 4) -> list[tuple[str, int, int]]:
    """1..``max_ops`` random operations for :func:`apply_ops` (``random`` is rare)."""
    ops = []
    for _ in range(rng.randint(1, max_ops)):
        kind = rng.choice(OPS[:-1]) if rng.random() > 0.02 else "random"
        ops.append((kind, rng.getrandbits(24), rng.getrandbits(24)))
    return ops


def reseal_png(data: bytes) -> bytes:
    """Recompute the CRC of every well-formed chunk of a PNG (left as is past a bad length)."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    buf = bytearray(data)
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(buf):
        (length,) = struct.unpack(">I", buf[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(buf):
            break
        buf[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(buf[pos + 4 : end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(buf)


def reseal(data: bytes) -> bytes:
    """Repair what a checksum would catch, so a mutation reaches the checks behind it.

    A facekit container gets its payload's PNG chunk CRCs and its CRC32 recomputed (and,
    in format 1, its payload length); a PNG gets its chunk CRCs recomputed; anything else
    is unchanged.
    """
    from . import container

    if data.startswith(PNG_SIGNATURE):
        return reseal_png(data)
    header_end = container.payload_start(data)
    if header_end is None or len(data) < header_end + 4:
        return data
    payload = reseal_png(data[header_end:-4])
    if data.startswith(container.MAGIC_V1):  # format 1 also states the payload's length
        body = data[: header_end - 4] + struct.pack(">I", len(payload)) + payload
    else:
        body = data[:header_end] + payload
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
