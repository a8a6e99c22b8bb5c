"""Settings read from the environment, in one place.

``FACEKIT_LFW``
    Folder (or archive) holding LFW: ``lfw-deepfunneled.tgz`` or an extracted
    ``lfw-deepfunneled/`` folder, plus ``pairs.txt`` and the other protocol files.
    Without it, the repository's ``data/lfw/`` (see :mod:`facekit.data.locate`).
``FACEKIT_CACHE``
    Where facekit keeps extracted archives, converted weights, landmarks and
    embeddings. Defaults to ``$XDG_CACHE_HOME/facekit`` or ``~/.cache/facekit``.
``FACEKIT_LFW_MIRRORS``
    Space-separated base URLs that serve LFW's files, tried in order.
"""

from __future__ import annotations

import os
from pathlib import Path

LFW_ENV = "FACEKIT_LFW"
CACHE_ENV = "FACEKIT_CACHE"
MIRRORS_ENV = "FACEKIT_LFW_MIRRORS"


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


def lfw_mirrors() -> list[str]:
    """Mirror base URLs from ``$FACEKIT_LFW_MIRRORS`` (none by default)."""
    return [m for m in os.environ.get(MIRRORS_ENV, "").split() if m]
