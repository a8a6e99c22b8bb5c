"""Bjøntegaard-style comparisons of rate-accuracy curves.

Bjøntegaard's delta rate (VCEG-M33) compares two rate-quality curves by the mean
difference of log-rate over their common quality range. Here the quality axis is LFW
verification accuracy, as in the paper's comparison at equal accuracy (Bian et al.
2019, Fig. 5). Each curve is made monotone (its upper envelope: a point that costs more
bits for less accuracy than another is dropped) and log(bpp) is interpolated linearly
in accuracy, which is stabler than the cubic fit of the original for the few, noisy
points of an accuracy curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def curve(points: Sequence[dict], key: str = "acc_mean") -> tuple[np.ndarray, np.ndarray]:
    """``(bpp, quality)`` arrays of a results file's points, sorted by bpp, without missing values."""
    pts = sorted((p for p in points if p.get(key) is not None and p.get("bpp")), key=lambda p: p["bpp"])
    return np.array([p["bpp"] for p in pts], dtype=float), np.array([p[key] for p in pts], dtype=float)


def monotone_envelope(bpp: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by rate that each improve quality on every cheaper point."""
    r = np.asarray(bpp, dtype=float)
    q = np.asarray(quality, dtype=float)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError("bpp and quality must be 1-d and of one length")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))
    r, q = r[order], q[order]
    keep_r, keep_q = [], []
    for ri, qi in zip(r, q, strict=True):
        if not keep_q or qi > keep_q[-1]:
            keep_r.append(ri)
            keep_q.append(qi)
    return np.array(keep_r), np.array(keep_q)


def bd_rate(
    bpp_test: Sequence[float], q_test: Sequence[float], bpp_ref: Sequence[float], q_ref: Sequence[float],
    samples: int = 200,
) -> dict:
    """Bitrate change of ``test`` against ``ref`` at equal quality.

    Returns ``{"saving": s, "range": (lo, hi)}`` where ``s = 1 - exp(mean(log r_test -
    log r_ref))`` over the common quality range: 0.5 means the test codec needs half the
    bits. ``saving`` is ``None`` when the curves share no quality range.
    """
    rt, qt = monotone_envelope(bpp_test, q_test)
    rr, qr = monotone_envelope(bpp_ref, q_ref)
    if len(qt) < 2 or len(qr) < 2:
        return {"saving": None, "range": None, "reason": "each curve needs two increasing points"}
    lo, hi = max(qt[0], qr[0]), min(qt[-1], qr[-1])
    if not hi > lo:
        return {"saving": None, "range": None, "reason": "no common accuracy range"}
    grid = np.linspace(lo, hi, samples)
    lt = np.interp(grid, qt, np.log(rt))
    lr = np.interp(grid, qr, np.log(rr))
    mean_diff = float(np.mean(lt - lr))
    return {"saving": float(1 - np.exp(mean_diff)), "range": (float(lo), float(hi))}


def bd_quality(
    bpp_test: Sequence[float], q_test: Sequence[float], bpp_ref: Sequence[float], q_ref: Sequence[float],
    lo: float | None = None, hi: float | None = None, samples: int = 200,
) -> dict:
    """Quality change of ``test`` against ``ref`` at equal rate (Bjøntegaard's delta quality, e.g. BD-PSNR).

    Returns ``{"delta": d, "range": (lo, hi)}``: ``d`` is the mean of ``q_test - q_ref`` over the
    common bpp range (within ``[lo, hi]`` when given), each curve monotone and linear in log bpp;
    ``delta`` is ``None`` when the curves share no rate range.

    Example: ``bd_quality([0.1, 0.4], [27, 33], [0.1, 0.4], [28, 34])["delta"]`` -> -1.0.
    """
    rt, qt = monotone_envelope(bpp_test, q_test)
    rr, qr = monotone_envelope(bpp_ref, q_ref)
    if len(qt) < 2 or len(qr) < 2:
        return {"delta": None, "range": None, "reason": "each curve needs two increasing points"}
    a = max(rt[0], rr[0], lo if lo is not None else 0.0)
    b = min(rt[-1], rr[-1], hi if hi is not None else np.inf)
    if not b > a:
        return {"delta": None, "range": None, "reason": "no common bpp range"}
    grid = np.linspace(np.log(a), np.log(b), samples)
    d = np.interp(grid, np.log(rt), qt) - np.interp(grid, np.log(rr), qr)
    return {"delta": float(np.mean(d)), "range": (float(a), float(b))}


def rate_at(bpp: Sequence[float], quality: Sequence[float], target: float) -> float | None:
    """The (interpolated) bpp at which a curve reaches ``target`` quality; None if never."""
    r, q = monotone_envelope(bpp, quality)
    if len(q) == 0 or target > q[-1]:
        return None
    if target <= q[0]:
        return float(r[0])
    return float(np.exp(np.interp(target, q, np.log(r))))


def quality_at(bpp: Sequence[float], quality: Sequence[float], rate: float) -> float | None:
    """The (interpolated) quality of a curve at ``rate`` bpp; None outside its rate range."""
    r, q = monotone_envelope(bpp, quality)
    if len(r) == 0 or rate < r[0] or rate > r[-1]:
        return None
    return float(np.interp(np.log(rate), np.log(r), q))
