"""Where facekit looks for LFW.

The first of these that is given wins:

1. the ``root`` argument (``--root PATH`` on the command line, ``lfw_root`` in the notebooks);
2. the environment variable ``FACEKIT_LFW``;
3. the repository's own ``data/lfw/`` (a checkout installed with ``pip install -e .``;
   git ignores this folder, so LFW is never committed);
4. ``../shared/data/lfw`` beside the repository (where the Makefile and the tests look).

An argument or a ``FACEKIT_LFW`` that names a missing path is an error: facekit never
silently falls back to another copy. The two folders count only when they exist. When
nothing is found, the error names every place it looked and the variable to set.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import LFW_ENV, MIRRORS_ENV
from ..errors import DataError

__all__ = ["GET_LFW", "LFW_HELP", "default_lfw_places", "find_lfw", "repo_root"]

GET_LFW = (
    "LFW's official download is gone; get `lfw-deepfunneled.tgz` and `pairs.txt` from a copy "
    "you trust (e.g. the umass-vis-lfw GitHub Pages repository, or a mirror), or set "
    f"{MIRRORS_ENV}='https://host/path/' to a mirror that still serves them and run "
    "`facekit lfw download`."
)

LFW_HELP = (
    "Put `lfw-deepfunneled.tgz` and `pairs.txt` in one folder and point facekit at it with "
    f"`--root PATH` or the environment variable {LFW_ENV}=PATH (or use the repository's "
    f"data/lfw/). {GET_LFW}"
)


def repo_root() -> Path | None:
    """The repository facekit runs from (an editable install or a checkout on ``PYTHONPATH``).

    None when the package is installed elsewhere (no ``pyproject.toml`` above it).
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "facekit").is_dir():
        return root
    return None


def default_lfw_places() -> list[Path]:
    """The folders looked in when neither an argument nor ``FACEKIT_LFW`` is given, in order."""
    root = repo_root()
    if root is None:
        return []
    return [root / "data" / "lfw", root.parent / "shared" / "data" / "lfw"]


def find_lfw(root: str | os.PathLike[str] | None = None) -> Path:
    """The LFW location: ``root``, else ``$FACEKIT_LFW``, else the first default folder that exists.

    Raises :class:`~facekit.errors.DataError` naming every place looked and the variable
    to set when none holds anything.
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.exists():
            raise DataError(f"LFW path {path} does not exist. {LFW_HELP}")
        return path
    env = os.environ.get(LFW_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise DataError(f"{LFW_ENV}={env} does not exist. {LFW_HELP}")
        return path
    places = default_lfw_places()
    for place in places:
        if place.exists():
            return place
    looked = ["the root argument or --root (not given)", f"${LFW_ENV} (not set)"]
    looked += [f"{p} (absent)" for p in places]
    raise DataError(
        f"LFW was not found. facekit looked in: {'; '.join(looked)}. Set {LFW_ENV}=PATH "
        "(or pass --root PATH) to a folder holding `lfw-deepfunneled.tgz` and `pairs.txt`"
        f"{f', or put them in {places[0]}/' if places else ''}. {GET_LFW}"
    )
