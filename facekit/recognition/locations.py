"""Face locations of many image files, computed once and cached on disk.

:func:`locate_many` runs a locator (:meth:`~facekit.recognition.align.FaceAligner.locate_dlib`
and friends) over image files and keeps the results in
``cache_dir()/alignments/<alignment_id>.npz``, keyed by ``name|sha256(file)``: a changed
file is located again, another alignment never shares entries, and an interrupted run
resumes from what it saved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..config import cache_dir
from ..errors import AlignmentError
from ..fileio import atomic_path, sha256_file
from .align import FaceLocation, read_image

__all__ = ["locate_many"]


def _store_path(alignment_id: str) -> Path:
    return cache_dir() / "alignments" / f"{alignment_id}.npz"


def _load_store(path: Path) -> dict[str, FaceLocation]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            # read each array once (NpzFile re-reads an array at every access) and copy the rows,
            # so no location keeps a whole array alive
            arrays = {k: z[k] for k in ("keys", "theta", "matrix", "landmarks", "box", "method", "image_size", "fallback")}
        out = {}
        for i, k in enumerate(arrays["keys"]):
            out[str(k)] = FaceLocation(
                theta=arrays["theta"][i].astype(np.float32),
                matrix=arrays["matrix"][i].copy(),
                landmarks=arrays["landmarks"][i].copy(),
                box=arrays["box"][i].copy(),
                method=str(arrays["method"][i]),
                image_size=(int(arrays["image_size"][i][0]), int(arrays["image_size"][i][1])),
                fallback=bool(arrays["fallback"][i]),
            )
        return out
    except (OSError, KeyError, ValueError):
        return {}  # a damaged cache is recomputed, never trusted


def _save_store(path: Path, store: dict[str, FaceLocation]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = _load_store(path)  # keep what a concurrent run added
    merged.update(store)
    keys = sorted(merged)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            keys=np.array(keys),
            theta=np.stack([merged[k].theta for k in keys]).astype(np.float32),
            matrix=np.stack([merged[k].matrix for k in keys]),
            landmarks=np.stack(
                [np.asarray(merged[k].landmarks, dtype=np.float64).reshape(5, 2) for k in keys]
            ),
            box=np.stack([merged[k].box for k in keys]),
            method=np.array([merged[k].method for k in keys]),
            image_size=np.array([merged[k].image_size for k in keys], dtype=np.int64),
            fallback=np.array([merged[k].fallback for k in keys], dtype=bool),
        )


def locate_many(
    locate: Callable[[np.ndarray], FaceLocation],
    alignment_id: str,
    paths: Iterable[tuple[str, Path]],
    load: Callable[[Path], np.ndarray] = read_image,
    cache: bool = True,
    progress: bool = True,
    save_every: int = 500,
) -> dict[str, FaceLocation]:
    """Locations of many image files, computed once and cached.

    ``paths`` yields ``(name, file path)``; ``load(path)`` reads an original (default:
    :func:`read_image` with PIL; ``dlib-resnet`` uses dlib's own decoder). The cache
    (``cache_dir()/alignments/<alignment_id>.npz``) is keyed by ``name|sha256(file)``, so
    a changed file is located again; it is saved every ``save_every`` new images, so an
    interrupted run resumes.
    """
    items = list(paths)
    store_path = _store_path(alignment_id)
    store = _load_store(store_path) if cache else {}
    keys = {}
    for name, p in items:
        if not Path(p).is_file():
            raise AlignmentError(f"image {p} does not exist")
        keys[name] = f"{name}|{sha256_file(Path(p))}"
    todo = [(name, Path(p)) for name, p in items if keys[name] not in store]
    new: dict[str, FaceLocation] = {}
    bar = None
    if progress and todo:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"aligning ({alignment_id})", unit="img")
        except ImportError:
            bar = None
    try:
        for i, (name, p) in enumerate(todo, 1):
            new[keys[name]] = locate(load(p))
            if bar is not None:
                bar.update(1)
            if cache and i % save_every == 0:
                _save_store(store_path, new)
    finally:
        if bar is not None:
            bar.close()
        if cache and new:
            _save_store(store_path, new)
    store.update(new)
    return {name: store[keys[name]] for name, _ in items}
