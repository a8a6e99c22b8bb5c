"""Reaching a target rate: search a codec's setting for one image or a set of images.

Comparisons "at equal bits per pixel" (Bian et al. 2019, Fig. 5) need each codec's
setting chosen so that its rate lands on a target. Per image, :func:`search_setting`
finds the highest-quality setting whose bpp does not exceed the target; over a set,
:func:`match_bpp` finds one setting whose *mean* bpp is closest to the target.
:func:`setting_for_budget` is the per-image search as a byte budget: a clear error when even
the lowest rate overshoots. How each kind of codec is searched: a continuous setting
(:func:`continuous_range`: JPEG 2000's target bpp, ``facekit-hyperprior``'s ``t``) by bisection,
an integer quality by bisection over the integers, a discrete sweep (the learned codecs' rate
points) by trying each, and a codec with its own search (``search_rate``) by that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CodecError
from .base import Codec, bits_per_pixel, check_image


def _bpp(codec: Codec, image: np.ndarray, setting: Any) -> float:
    return bits_per_pixel(codec.encode(image, setting), image.shape[0], image.shape[1])


def _mean_bpp(codec: Codec, images: Sequence[np.ndarray], setting: Any) -> float:
    return float(np.mean([_bpp(codec, im, setting) for im in images]))


def _search(codec: Codec, measure, target: float, iters: int) -> tuple[Any, float]:
    """Largest setting with measure(setting) <= target (bpp grows with the setting)."""
    if codec.setting_range is None:
        best = None
        for s in codec.settings:
            b = measure(s)
            if b <= target and (best is None or b > best[1]):
                best = (s, b)
        if best is None:
            s = codec.settings[0]
            return s, measure(s)
        return best
    lo, hi = codec.setting_range
    if codec.integer_setting:
        lo, hi = int(lo), int(hi)
        b_lo = measure(lo)
        if b_lo > target:
            return lo, b_lo
        b_hi = measure(hi)
        if b_hi <= target:
            return hi, b_hi
        best = (lo, b_lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            b = measure(mid)
            if b <= target:
                lo, best = mid, (mid, b)
            else:
                hi = mid
        return best
    lo_f, hi_f = float(lo), float(hi)
    best = None
    s = min(max(target, lo_f), hi_f)
    for _ in range(iters):
        b = measure(s)
        if b <= target:
            best = (s, b)
            lo_f = s
        else:
            hi_f = s
        if best is not None and target - best[1] <= 0.005 * target:
            break
        s = 0.5 * (lo_f + hi_f)
    if best is None:
        return lo_f, measure(lo_f)
    return best


def search_setting(codec: Codec, image: np.ndarray, target_bpp: float, iters: int = 12) -> tuple[Any, float]:
    """The highest-quality setting whose bpp on ``image`` is at most ``target_bpp``.

    Returns ``(setting, bpp)``. If even the lowest setting overshoots, that setting and
    its (higher) bpp are returned, so callers can see the target was out of reach.
    """
    image = check_image(image)
    if target_bpp <= 0:
        raise CodecError(f"target bpp must be positive, got {target_bpp}")
    if callable(getattr(codec, "search_rate", None)):  # a codec with its own search (ResizedCodec: over scales)
        return codec.search_rate(image, target_bpp, iters)
    return _search(codec, lambda s: _bpp(codec, image, s), target_bpp, iters)


def match_bpp(codec: Codec, images: Sequence[np.ndarray], target_bpp: float, iters: int = 12) -> tuple[Any, float]:
    """One setting for all ``images`` whose mean bpp is at most, and closest to, ``target_bpp``."""
    images = [check_image(im) for im in images]
    if not images:
        raise CodecError("match_bpp needs at least one image")
    if target_bpp <= 0:
        raise CodecError(f"target bpp must be positive, got {target_bpp}")
    if callable(getattr(codec, "match_rate", None)):
        return codec.match_rate(images, target_bpp, iters)
    return _search(codec, lambda s: _mean_bpp(codec, images, s), target_bpp, iters)


def continuous_range(codec: Codec) -> tuple[float, float] | None:
    """``(low, high)`` of a codec's continuous setting; None when the setting is discrete (integers or a sweep).

    Example: ``continuous_range(get_codec("jpeg2000"))`` -> ``(0.01, 4.0)``; ``jpeg`` -> None.
    """
    if codec.setting_range is None or codec.integer_setting:
        return None
    lo, hi = codec.setting_range
    return float(lo), float(hi)


def setting_for_budget(codec: Codec, image: np.ndarray, target_bpp: float, iters: int = 12) -> tuple[Any, float]:
    """The highest-quality setting whose file of ``image`` takes at most ``target_bpp``: ``(setting, bpp)``.

    Args:
        codec: any codec (see the module docstring for how each kind is searched).
        image: an RGB uint8 image.
        target_bpp: the budget in bits per pixel of the whole file.
        iters: the most encodes a bisection makes.

    A budget below what the codec's lowest rate takes is a :class:`CodecError` that says the
    nearest bpp reachable. Example: ``setting_for_budget(get_codec("jpeg"), image, 0.5)`` -> ``(23, 0.497)``.
    """
    if not (isinstance(target_bpp, int | float) and np.isfinite(target_bpp)) or target_bpp <= 0:
        raise CodecError(f"target bpp must be a positive number, got {target_bpp!r}")
    span = continuous_range(codec)
    if span is not None and not callable(getattr(codec, "search_rate", None)):
        image = check_image(image)
        top = _bpp(codec, image, span[1])  # a budget above the highest rate: the highest rate, not a point below it
        if top <= target_bpp:
            return span[1], top
    setting, bpp = search_setting(codec, image, float(target_bpp), iters)
    if bpp > target_bpp:
        raise CodecError(f"{target_bpp:g} bpp cannot be reached by {codec.name}: the nearest bpp reachable is "
                         f"{bpp:.4f} (its lowest rate, setting {setting!r})")
    return setting, bpp
