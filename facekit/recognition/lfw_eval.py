"""LFW verification accuracy of a recogniser on the uncompressed images.

The baseline row of the paper's tables (Bian et al. 2019, Sec. 4): every image of the
protocol file (``pairs.txt``: 10 folds of 300 matched and 300 mismatched pairs) is
aligned (landmarks found once and cached), embedded (embeddings cached too, shared with
the ``uncompressed`` row of :func:`facekit.evaluate.evaluate`), and each pair's distance
goes into the 10-fold protocol of :mod:`facekit.protocol` (threshold chosen on nine folds,
accuracy on the tenth). ``facekit lfw eval`` calls :func:`evaluate_uncompressed` and
prints :func:`describe_fallbacks`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence

import torch

from ..data.lfw import LFW, Pair
from .base import Recognizer
from .registry import fallback_counts, find_alignments

__all__ = ["DETECTORS", "LazyImages", "describe_fallbacks", "evaluate_uncompressed", "limit_pairs"]


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
    recognizer: str | Recognizer = "dlib-resnet",
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
    ``recognizer``, ``n_images``, ``bpp`` (of the original JPEG files), ``fallbacks``
    (images per detector and the number of fallbacks), ``fallback_images``, and the
    seconds spent aligning, embedding and in all. ``limit`` keeps only the first ``limit``
    pairs of each fold, half matched and half mismatched (an even number, at least 2).

    This is the ``uncompressed`` row of :func:`facekit.evaluate.evaluate`, computed by the
    same code: landmarks and embeddings are cached on disk (``FACEKIT_CACHE``) under the
    recogniser's :meth:`~facekit.recognition.base.Recognizer.cache_id` and the digest of
    the pairs file and images, so a second run reads them instead of embedding again
    (``cache=False`` embeds again and stores no embeddings; landmarks are always cached).
    """
    from ..evaluate import make_context, run_setting, score

    if limit is not None and (limit < 2 or limit % 2):
        raise ValueError(
            f"limit must be an even number of at least 2 (half matched, half mismatched pairs "
            f"of each fold), got {limit}"
        )
    t0 = time.perf_counter()
    dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(recognizer, str):
        recognizer = recognizer.to(dev)
    ctx = make_context(
        root, pairs, recognizer, dev, per_fold=limit, batch_size=batch_size,
        progress=progress, use_cache=cache,
    )
    locs = find_alignments(ctx.recognizer, ctx.lfw, ctx.names, progress=False)  # cached by make_context
    t1 = time.perf_counter()
    run = run_setting(ctx, None, None, "uncompressed")
    t2 = time.perf_counter()
    result = score(ctx, run)
    result.pop("psnr", None)  # no codec: nothing to compare with
    result.update(
        {
            "recognizer": ctx.recognizer.name,
            "pairs_file": pairs,
            "fallbacks": fallback_counts(locs),
            "fallback_images": sorted(n for n in ctx.names if locs[n].fallback),
            "fallback_methods": {n: locs[n].method for n in ctx.names if locs[n].fallback},
            "device": str(ctx.device),
            "torch_threads": torch.get_num_threads(),
            "seconds_align": round(t1 - t0, 2),
            "seconds_embed": round(t2 - t1, 2),
            "seconds_total": round(time.perf_counter() - t0, 2),
        }
    )
    return result


#: what each detection method is, in words (FaceLocation.method)
DETECTORS = {
    "hog": "dlib's HOG detector",
    "mtcnn": "MTCNN",
    "yunet": "YuNet",
    "centre": "a centred crop (LFW centres the named person)",
}


def describe_fallbacks(result: dict) -> str:
    """The detector fallbacks of an :func:`evaluate_uncompressed` result, in words.

    A fallback is an image where the recogniser's own detector (dlib's HOG detector for
    ``dlib-resnet``) found no face, so a second detector (MTCNN) or, failing that, a
    centred crop placed the face instead. Those images are still embedded and their
    pairs scored.
    """
    counts = dict(result["fallbacks"])
    n_fallbacks = counts.pop("fallbacks", 0)
    n_images = result["n_images"]
    by_method = Counter(result.get("fallback_methods", {}).values())
    primary = [m for m in counts if counts[m] > by_method.get(m, 0)]
    first = " or ".join(DETECTORS.get(m, m) for m in primary) or "the recogniser's detector"
    if not n_fallbacks:
        return f"detector fallbacks: none; {first} found a face in all {n_images:,} images."
    ranked = sorted(by_method.items(), key=lambda mk: -mk[1])
    used = " and ".join(
        f"{DETECTORS.get(m, m)} {'was used ' if i == 0 else ''}for {k:,}" for i, (m, k) in enumerate(ranked)
    )
    return (
        f"detector fallbacks: {n_fallbacks:,} of {n_images:,} images ({100 * n_fallbacks / n_images:.2f} %): "
        f"{first} found no face in them, so {used}. Their pairs are still scored; `--out` lists them."
    )
