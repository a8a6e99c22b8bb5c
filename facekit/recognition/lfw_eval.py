"""LFW verification accuracy of a recogniser on the uncompressed images.

The baseline row of the paper's tables (Bian et al. 2019, Sec. 4): every image of the
protocol file (``pairs.txt``: 10 folds of 300 matched and 300 mismatched pairs) is
aligned (landmarks found once and cached), embedded, and each pair's distance goes into
the 10-fold protocol of :mod:`facekit.protocol` (threshold chosen on nine folds,
accuracy on the tenth). ``facekit lfw eval`` calls :func:`evaluate_uncompressed`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np
import torch

from .. import protocol
from ..data.lfw import LFW, Pair, open_lfw
from .registry import embed_images, fallback_counts, find_alignments, get_recognizer

__all__ = ["LazyImages", "evaluate_uncompressed", "limit_pairs"]


class LazyImages(Sequence):
    """Images of a data set, read when indexed (keeps memory flat over 7,701 images)."""

    def __init__(self, lfw: LFW, names: list[str]) -> None:
        self.lfw = lfw
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):  # noqa: ANN001, ANN204 - Sequence protocol
        return self.lfw.load(self.names[i])


def limit_pairs(pairs: list[Pair], limit: int | None) -> list[Pair]:
    """The first ``limit`` pairs of each fold, half matched and half mismatched.

    (``pairs.txt`` lists each fold's matched pairs before its mismatched ones, so the
    first ``limit`` lines alone would all be matched.)
    """
    if limit is None:
        return pairs
    if limit < 2:
        raise ValueError(
            f"limit must be at least 2 (one matched and one mismatched pair), got {limit}"
        )
    n_same, n_diff = (limit + 1) // 2, limit // 2
    out: list[Pair] = []
    seen: dict[tuple[int, bool], int] = {}
    for p in pairs:
        key = (p.fold, p.same)
        if seen.get(key, 0) < (n_same if p.same else n_diff):
            out.append(p)
            seen[key] = seen.get(key, 0) + 1
    return out


def evaluate_uncompressed(
    root: str | os.PathLike[str] | None = None,
    recognizer: str = "dlib-resnet",
    pairs: str = "pairs.txt",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    limit: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> dict:
    """10-fold LFW accuracy of ``recognizer`` on the original images.

    Returns :func:`facekit.protocol.evaluate_pairs`'s figures (``acc_mean``, ``acc_std``,
    ``fold_accuracies``, ``thresholds``, ``auc``, ``tar_at_far_0.001``, ``n_pairs``) plus
    ``recognizer``, ``n_images``, ``fallbacks`` (images per detector and the number of
    fallbacks), ``fallback_images``, and the seconds spent aligning, embedding and in all.
    ``limit`` keeps only the first ``limit`` pairs of each fold (half matched).
    """
    t0 = time.perf_counter()
    lfw = open_lfw(root)
    pair_list = limit_pairs(lfw.pairs(pairs), limit)
    names = lfw.pair_images(pair_list)
    missing = lfw.missing(pair_list)
    if missing:
        from ..errors import DataError

        raise DataError(
            f"{len(missing)} images of {pairs} are missing from {lfw.images}, e.g. {missing[0]}"
        )
    rec = get_recognizer(recognizer, device=device)
    dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    rec = rec.to(dev)

    t1 = time.perf_counter()
    locs = find_alignments(rec, lfw, names, cache=cache, progress=progress)
    t2 = time.perf_counter()
    thetas = np.stack([locs[n].theta for n in names])
    emb = embed_images(
        rec, LazyImages(lfw, names), thetas, batch_size=batch_size, device=dev, progress=progress
    )
    t3 = time.perf_counter()

    index = {n: i for i, n in enumerate(names)}
    a = emb[[index[p.a] for p in pair_list]]
    b = emb[[index[p.b] for p in pair_list]]
    distances = protocol.pair_distances(a, b, rec.distance)
    same = np.array([p.same for p in pair_list])
    folds = np.array([p.fold for p in pair_list])
    result = protocol.evaluate_pairs(distances, same, folds)
    result.update(
        {
            "recognizer": rec.name,
            "pairs_file": pairs,
            "n_images": len(names),
            "fallbacks": fallback_counts(locs),
            "fallback_images": sorted(n for n in names if locs[n].fallback),
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "seconds_align": round(t2 - t1, 2),
            "seconds_embed": round(t3 - t2, 2),
            "seconds_total": round(time.perf_counter() - t0, 2),
        }
    )
    return result
