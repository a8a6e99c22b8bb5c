"""Atomic file writes: a file appears under its final name complete, or not at all.

Every writer of facekit (weights, priors, manifests, checkpoints, caches, results,
``facekit compress`` outputs) writes to a temporary file in the destination folder and
renames it onto the final name with :func:`os.replace`, which is atomic on POSIX and
Windows. A killed process therefore leaves at most a hidden ``.<name>.partial-<pid>-<random>`` file,
never a truncated file under the final name.

Example::

    from facekit.fileio import atomic_path, atomic_write, write_json
    atomic_write("out/result.json", '{"ok": true}\\n')
    write_json("out/result.json", {"ok": True, "ms": np.float32(7.8)})   # the same, for any JSON
    with atomic_path("cache/embeddings.npz") as tmp:
        np.savez(tmp, x=x)          # any writer that takes a path
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def json_default(o: Any) -> Any:
    """``json.dumps``' ``default``: numpy (and torch) scalars and arrays as numbers and lists, anything else as text."""
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 1) -> Path:
    """Write ``obj`` to ``path`` as JSON with a final newline, atomically (its folder is created); returns the path.

    Args:
        path: the file to write.
        obj: what ``json.dumps`` takes, with numpy scalars and arrays, paths and the like (:func:`json_default`).
        indent: spaces per level.
    """
    return atomic_write(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
