"""Atomic file writes: a file appears under its final name complete, or not at all.

Every writer of facekit (weights, priors, manifests, checkpoints, caches, results,
``facekit compress`` outputs) writes to a temporary file in the destination folder and
renames it onto the final name with :func:`os.replace`, which is atomic on POSIX and
Windows. A killed process therefore leaves at most a hidden ``.<name>.partial-<pid>-<random>`` file,
never a truncated file under the final name.

Example::

    from facekit.fileio import atomic_write, atomic_path
    atomic_write("out/result.json", '{"ok": true}\\n')
    with atomic_path("cache/embeddings.npz") as tmp:
        np.savez(tmp, x=x)          # any writer that takes a path
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

#: a path argument: a string or anything ``os.fspath`` takes
PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Args:
        path: the final file name (its folder is created).
        fsync: flush the file to disk before the rename (for files a crash must not lose).

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns the path."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
