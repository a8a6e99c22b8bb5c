"""Settings read from the environment, in one place.

``FACEKIT_LFW``
    Folder (or archive) holding LFW: ``lfw-deepfunneled.tgz`` or an extracted
    ``lfw-deepfunneled/`` folder, plus ``pairs.txt`` and the other protocol files.
``FACEKIT_CACHE``
    Where facekit keeps extracted archives, converted weights, landmarks and
    embeddings. Defaults to ``$XDG_CACHE_HOME/facekit`` or ``~/.cache/facekit``.
``FACEKIT_LFW_MIRRORS``
    Space-separated base URLs that serve LFW's files, tried in order.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

LFW_ENV = "FACEKIT_LFW"
CACHE_ENV = "FACEKIT_CACHE"
MIRRORS_ENV = "FACEKIT_LFW_MIRRORS"

LFW_HELP = (
    "LFW was not found. LFW's official download is gone; get `lfw-deepfunneled.tgz` and "
    "`pairs.txt` from a copy you trust (e.g. the umass-vis-lfw GitHub Pages repository, or "
    "a mirror), put them in one folder, and point facekit at it with "
    f"`--root PATH` or the environment variable {LFW_ENV}=PATH. To download from a mirror "
    f"that still serves the files, set {MIRRORS_ENV}='https://host/path/' and run "
    "`facekit lfw download`."
)


def cache_dir() -> Path:
    """The folder facekit caches into (created on demand)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "facekit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lfw_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the LFW location: the argument, else ``$FACEKIT_LFW``; a clear error if neither exists."""
    candidate = root if root is not None else os.environ.get(LFW_ENV)
    if not candidate:
        raise DataError(LFW_HELP)
    path = Path(candidate).expanduser()
    if not path.exists():
        raise DataError(f"LFW path {path} does not exist. {LFW_HELP}")
    return path


def lfw_mirrors() -> list[str]:
    """Mirror base URLs from ``$FACEKIT_LFW_MIRRORS`` (none by default)."""
    return [m for m in os.environ.get(MIRRORS_ENV, "").split() if m]
