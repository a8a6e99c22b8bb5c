"""The figures the notebooks and the report share, drawn from a results JSON.

As in CompressAI's plots, the figures read only the saved results, never a live run:
accuracy against bpp (log axis, as in Bian et al. 2019, Fig. 5) and PSNR against bpp.
They are made to be read at a glance: at most :data:`MAX_SERIES` codecs a panel (the
headline ones when the results hold more), the recommended codec in one strong colour,
the paper's in another, the baselines in greys; error bars of one standard deviation over
the ten folds; a small-sample measurement drawn over the full-LFW curves as hollow points.

    python -m facekit.plots results/rate_accuracy.json   # redraws rate_accuracy.png and _roi.png
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bdrate import curve, quality_at
from .codecs.names import HYPERPRIOR, canonical_name, is_learned
from .codecs.registry import CLASSIC, PAPER, PAPER_MSE, RECOGNITION_FIRST, RECOMMENDED
from .goals import (
    FULL_LFW_PAIRS,
    TAR_KEY,
    baseline_of,
    envelope,
    is_roi,
    measured_form,
    not_judged,
    pairs_measured,
    saving_at_equal_accuracy,
)

__all__ = ["HEADLINE", "MAX_SERIES", "ROI_HEADLINE", "STYLE", "is_roi", "style_of", "rate_accuracy_figure", "rate_tar_figure",
           "roi_figure", "summary_table"]

#: the most codecs a panel draws when no list is given (the reference line of the
#: uncompressed images not counted)
MAX_SERIES = 7
#: the whole-image figure's codecs when the results hold more than fit (a classical codec not measured
#: at its own preset is drawn at another, ``avif-speed6`` for ``avif``); webp-resized: the strongest
#: classical codec below 0.15 bpp
HEADLINE = (RECOMMENDED, RECOGNITION_FIRST, HYPERPRIOR, PAPER, "avif", "jpeg2000", "webp-resized")
#: the region-of-interest figure's codecs when the results hold more than fit
ROI_HEADLINE = (RECOGNITION_FIRST, RECOMMENDED, "avif-roi", "webp-roi", "jpeg2000-roi")
#: what a headline codec is, in the legend
ROLE = {
    RECOMMENDED: "recommended",
    RECOGNITION_FIRST: "recognition-first",
    PAPER: "the paper's codec",
    PAPER_MSE: "the paper's, distortion only",
    HYPERPRIOR: "second generation",
}

_MUTED = "#8fa8c8"  # learned variants that are neither recommended nor the paper's
STYLE: dict[str, dict[str, Any]] = {
    "uncompressed": dict(color="black", ls=":", lw=1.2),
    # the baselines: greys, one marker each
    "avif": dict(color="#4d4d4d", marker="v"),
    "webp": dict(color="#737373", marker="^"),
    "jpeg2000": dict(color="#969696", marker="s"),
    "jpeg": dict(color="#b3b3b3", marker="o"),
    "hevc": dict(color="#5a5a5a", marker="<"),
    "jpegxl": dict(color="#858585", marker=">"),
    # the headline codecs: strong colours, drawn on top
    RECOMMENDED: dict(color="#d95f02", marker="o", lw=2.8, ms=6, zorder=4),
    PAPER: dict(color="#1f5fb4", marker="D", lw=2.2, zorder=3),
    PAPER_MSE: dict(color="#1f5fb4", marker="D", ls="--", mfc="none"),
    HYPERPRIOR: dict(color="#1b9e77", marker="*", lw=2.2, ms=8, zorder=3),
    # the other learned variants: one muted colour
    "facekit-mse-entropy": dict(color=_MUTED, marker="P", ls="--"),
    "facekit-joint-entropy": dict(color=_MUTED, marker="P"),
    "facekit-jointrate": dict(color=_MUTED, marker="d"),
    "facekit-jointrate-entropy": dict(color=_MUTED, marker="X"),
    "facekit-jointface": dict(color=_MUTED, marker="h"),
}
# region-of-interest variants (facekit.codecs.roi): the colour of their codec, dotted, hollow markers
# (with a coded background, -roi-bg: dash-dotted)
STYLE[RECOGNITION_FIRST] = dict(color="#c2187a", marker="s", ls="-.", lw=2.4, ms=6, zorder=4)


def style_of(name: str) -> dict[str, Any]:
    """The line style of a codec: its own; for a region-of-interest variant (``X-roi``, ``X-roi-bg``)
    that of its codec ``X``, dotted (dash-dotted with a coded background), with hollow markers; for
    another preset or the resized form of a classical codec (``avif-speed6``, ``webp-resized``) that
    of the codec, dashed (dash-dotted when resized). Always with a colour."""
    name = canonical_name(name)
    if name in STYLE:
        return STYLE[name]
    if "-roi" in name:
        base = style_of(name[: name.index("-roi")])
        return {**base, "ls": "-." if name.endswith("-roi-bg") else ":", "mfc": "none", "zorder": 2}
    if baseline_of(name) != name:
        return {**style_of(baseline_of(name)), "ls": "-." if "-resized" in name else "--"}
    return {"color": _MUTED}

_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _bars(y: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Error bars in percent of ±1 std, the upper one ending at 100 % (accuracy goes no higher)."""
    return 100 * np.stack([sd, np.minimum(y + sd, 1.0) - y])


def _face_only(name: str) -> bool:
    """A region-of-interest codec whose background is flat (no ``-roi-bg``): its whole-image
    PSNR says nothing about the face."""
    return is_roi(name) and not name.endswith("-roi-bg") and name != RECOGNITION_FIRST


def _label(name: str) -> str:
    return f"{name} ({ROLE[name]})" if name in ROLE else name


def _series(points: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bpp, value, std)`` of the points that have ``key``, sorted by bpp (std 0 where none)."""
    pts = sorted((p for p in points if p.get(key) is not None and p.get("bpp")), key=lambda p: p["bpp"])
    std = [p.get("acc_std") or 0.0 if key == "acc_mean" else 0.0 for p in pts]
    return (np.array([p["bpp"] for p in pts], dtype=float), np.array([p[key] for p in pts], dtype=float),
            np.array(std, dtype=float))


def _choose(results: dict[str, Any], codecs: Sequence[str] | None, headline: Sequence[str]) -> list[str]:
    """The codecs asked for; else all of them when they fit, else the headline ones."""
    have = results["codecs"]
    if codecs is not None:
        return [c for c in codecs if c in have]
    names = list(have)
    if len([n for n in names if n != "uncompressed"]) <= MAX_SERIES:
        return names
    picked = [c if c in have or is_learned(c) else measured_form(results, c) for c in headline]  # avif-speed6 if no avif
    return [c for c in ("uncompressed", *picked) if c in have]


def _log_axis(ax: Any, xs: Sequence[float]) -> None:
    """A log bpp axis with a few plain tick labels that never collide."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    if len(xs):
        lo, hi = min(xs) / 1.25, max(xs) * 1.25
        ax.set_xlim(lo, hi)
        ticks = [t for t in _TICKS if lo <= t <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _percent_axis(ax: Any, lows: list[float], highs: list[float]) -> None:
    """Accuracy in %: everything visible (error bars too), no tick label above 100 %."""
    from matplotlib.ticker import FuncFormatter

    lo = max(50.0, min(lows + [90.0]) - 2)
    hi = min(101.2, max(highs + [99.0]) + 0.8)
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: "" if v > 100.001 else f"{v:g}"))


def _not_monotone(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(len(y) > 2 and np.any(np.diff(y) < -0.05))


def rate_accuracy_figure(
    results: dict[str, Any],
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    codecs: Sequence[str] | None = None,
    check: dict[str, Any] | None = None,
    psnr: bool = True,
):
    """Accuracy (%) and PSNR (dB) against bpp (log axis); saved to ``path`` when given.

    ``codecs`` draws only those (in that order); by default every codec of the results when
    they are at most :data:`MAX_SERIES`, else the :data:`HEADLINE` ones. Error bars are one
    standard deviation of the accuracy over the folds. ``check``: a second results dict (a
    small-sample run, such as the quick preset's) drawn over the curves as hollow points
    with their error bars, for the codecs both hold. Region-of-interest codecs that code
    only the face (``-roi``) are left out of the PSNR panel: their background is flat by
    design (``-roi-bg`` codecs code a background, so they stay). ``psnr=False``: the
    accuracy panel alone. A caption says why where a learned codec's PSNR falls as its rate
    rises.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = _choose(results, codecs, HEADLINE)
    if psnr:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12.5, 5.0))
    else:
        fig, ax1 = plt.subplots(figsize=(7.5, 5.0))
        ax2 = None
    xs: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    falling: list[str] = []
    left_out: list[str] = []
    for name in names:
        points = results["codecs"][name]
        style = {"lw": 1.4, "ms": 5, **style_of(name)}
        if name == "uncompressed":
            p = points[0]
            acc, sd = 100 * p["acc_mean"], 100 * (p.get("acc_std") or 0.0)
            ax1.axhline(acc, label=name, **style)
            ax1.axhspan(acc - sd, acc + sd, color="black", alpha=0.06, lw=0)
            lows.append(acc - sd)
            highs.append(min(acc + sd, 100.0))
            continue
        x, y, sd = _series(points, "acc_mean")
        if len(x):
            ax1.plot(x, 100 * y, label=name, **style)
            ax1.errorbar(x, 100 * y, yerr=_bars(y, sd), fmt="none", ecolor=style["color"], elinewidth=1.1,
                         capsize=0, alpha=0.8, zorder=style.get("zorder", 2))
            xs += list(x)
            lows += list(100 * (y - sd))
            highs += list(100 * np.minimum(y + sd, 1.0))
        if ax2 is None:
            continue
        if _face_only(name):
            left_out.append(name)
            continue
        x, y, _ = _series(points, "psnr")
        if len(x):
            ax2.plot(x, y, label=name, **style)
            if is_learned(name) and name != RECOGNITION_FIRST and _not_monotone(x, y):
                falling.append(name)

    checked = 0
    if check is not None:
        for name in names:
            pts = check["codecs"].get(name)
            if name == "uncompressed" or not pts:
                continue
            style = style_of(name)
            x, y, sd = _series(pts, "acc_mean")
            ax1.errorbar(x, 100 * y, yerr=_bars(y, sd), fmt=style.get("marker", "o"), ms=8, mfc="white",
                         mec=style.get("color", "black"), mew=1.6, ecolor=style.get("color", "black"),
                         elinewidth=1.0, capsize=3, zorder=5, label="_check")
            xs += list(x)
            lows += list(100 * (y - sd))
            highs += list(100 * np.minimum(y + sd, 1.0))
            if ax2 is not None and not _face_only(name):
                x, y, _ = _series(pts, "psnr")
                ax2.plot(x, y, ls="none", marker=style.get("marker", "o"), ms=8, mfc="white",
                         mec=style.get("color", "black"), mew=1.6, zorder=5, label="_check")
            checked += 1

    rec = results.get("recognizer", {}).get("name", "")
    n = results.get("protocol", {}).get("n_pairs")
    pairs = f"{n:,} pairs, 10 folds" if isinstance(n, int) else "10 folds"
    ax1.set_xlabel("bits per pixel (log scale)")
    ax1.set_ylabel("LFW verification accuracy (%)")
    ax1.set_title(title or f"Rate and accuracy ({rec}, {pairs})", fontsize=11)
    _log_axis(ax1, xs)
    _percent_axis(ax1, lows, highs)
    handles, labels = ax1.get_legend_handles_labels()
    labels = [_label(lab) for lab in labels]
    if checked:
        m = check.get("protocol", {}).get("n_pairs", "?")
        handles.append(Line2D([], [], ls="none", marker="o", ms=8, mfc="white", mec="black", mew=1.6))
        labels.append(f"hollow: small-sample check, {m} pairs")
    ax1.legend(handles, labels, fontsize=8, loc="lower right", framealpha=0.9)
    ax1.grid(True, which="major", alpha=0.3)
    note = "bars: ±1 std over the 10 folds"
    ax1.text(0.01, 0.01, note, transform=ax1.transAxes, fontsize=7.5, color="#555", va="bottom")

    if ax2 is not None:
        ax2.set_xlabel("bits per pixel (log scale)")
        ax2.set_ylabel("PSNR (dB), whole image")
        ax2.set_title("Rate and distortion" + (" (face-only ROI codecs left out)" if left_out else ""),
                      fontsize=11)
        _log_axis(ax2, xs)
        h2, l2 = ax2.get_legend_handles_labels()
        if h2:
            ax2.legend(h2, [_label(lab) for lab in l2], fontsize=8, loc="upper left", framealpha=0.9)
        ax2.grid(True, which="major", alpha=0.3)
    caption = []
    if falling:
        caption.append(f"The PSNR of {', '.join(falling)} is not monotone in rate: joint training trades pixel "
                       "fidelity (mostly outside the face) for identity, and each rate point is trained on its own.")
    if ax2 is not None and RECOGNITION_FIRST in names:
        caption.append(f"{RECOGNITION_FIRST} codes the background at q1, so its whole-image PSNR stays low.")
    if caption:
        import textwrap

        fig.text(0.01, 0.005, "\n".join(textwrap.fill(c, 170) for c in caption), fontsize=8, color="#333",
                 va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.035 * len(caption), 1, 1))
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def summary_table(results: dict[str, Any], rates: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.5)) -> str:
    """Markdown: each codec's measured points, accuracy interpolated at fixed rates, BD savings.

    Savings are given on all 6,000 LFW pairs only, and only where the two curves overlap
    (:func:`facekit.goals.saving_at_equal_accuracy`).
    """
    codecs = results["codecs"]
    lines = ["| codec | points (bpp → accuracy %, TAR % at FAR 1e-3, PSNR dB) |", "| --- | --- |"]
    for name, pts in codecs.items():
        cells = []
        for p in sorted(pts, key=lambda p: p["bpp"]):
            tar = f", TAR {100 * p[TAR_KEY]:.1f}" if p.get(TAR_KEY) is not None else ""
            ps = f", {p['psnr']:.1f} dB" if p.get("psnr") is not None else ""
            cells.append(f"{p['bpp']:.3f} → {100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f}{tar}{ps}")
        lines.append(f"| {name} | {'; '.join(cells)} |")
    lines += ["", "| codec | " + " | ".join(f"acc @ {r} bpp" for r in rates) + " |",
              "| --- |" + " --- |" * len(rates)]
    for name, pts in codecs.items():
        if name == "uncompressed":
            continue
        x, y = curve(pts, "acc_mean")
        vals = [quality_at(x, y, r) for r in rates]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
    learned = [n for n in codecs if is_learned(n)]
    classic = [n for n in codecs if not is_learned(n) and n != "uncompressed"]
    if learned and classic:
        if not_judged(results) is not None:
            n = pairs_measured(results)
            held = "do not record how many pairs they hold" if n is None else f"hold {n:,}"
            lines += ["", f"Bitrate savings at equal accuracy are given on all {FULL_LFW_PAIRS:,} LFW pairs only "
                      f"(these results {held})."]
            return "\n".join(lines)
        env_acc, pooled = envelope(results, CLASSIC)
        env_tar, _ = envelope(results, CLASSIC, TAR_KEY)
        lines += ["", "Bitrate saving at equal accuracy (Bjøntegaard-style, over the common accuracy range; "
                  "a dash where the curves do not overlap). The last two columns are against the classical "
                  f"envelope, the fewest bits any of {', '.join(pooled)} needs at each accuracy (and at each TAR "
                  "at FAR 1e-3):", "",
                  "| facekit | " + " | ".join(f"vs {c}" for c in classic) + " | vs envelope | vs envelope, TAR |",
                  "| --- |" + " --- |" * (len(classic) + 2)]

        def cell(r: dict[str, Any]) -> str:
            return "—" if r["saving"] is None else f"{100 * r['saving']:.0f}% ({100 * r['range'][0]:.1f}–{100 * r['range'][1]:.1f}%)"

        for ln in learned:
            cells = [cell(saving_at_equal_accuracy(codecs[ln], codecs[c])) for c in classic]
            cells += [cell(saving_at_equal_accuracy(codecs[ln], env_acc)) if env_acc else "—",
                      cell(saving_at_equal_accuracy(codecs[ln], env_tar, TAR_KEY)) if env_tar else "—"]
            lines.append(f"| {ln} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roi_figure(
    results: dict[str, Any], path: str | os.PathLike[str] | None = None, check: dict[str, Any] | None = None
):
    """Rate and accuracy of the region-of-interest codecs (``-roi``, ``-roi-bg``), or None when
    the results hold no ROI codec; saved to ``path`` when given.

    Each ROI codec is drawn beside the codec it is made from when that fits in
    :data:`MAX_SERIES`, else the :data:`ROI_HEADLINE` codecs are. One panel: the whole-image
    PSNR of a codec that codes only the face says nothing about the face. ``check``: a
    small-sample run drawn over the curves, as in :func:`rate_accuracy_figure`.
    """
    roi = [n for n in results["codecs"] if is_roi(n)]
    if not roi:
        return None
    pair = list(dict.fromkeys(n for k in roi for n in (k[: k.index("-roi")], k) if n in results["codecs"]))
    if len(pair) > MAX_SERIES:
        pair = [c for c in ROI_HEADLINE if c in results["codecs"]]
    rec = results.get("recognizer", {}).get("name", "")
    n = results.get("protocol", {}).get("n_pairs")
    pairs = f", {n:,} pairs" if isinstance(n, int) else ""
    return rate_accuracy_figure(results, path, codecs=["uncompressed", *pair], psnr=False, check=check,
                                title=f"Region of interest: the face region coded first ({rec}{pairs})")


def rate_tar_figure(
    results: dict[str, Any], path: str | os.PathLike[str] | None = None, codecs: Sequence[str] | None = None
):
    """TAR at FAR 1e-3 (%) against bpp (log axis), the codecs chosen as :func:`rate_accuracy_figure` does.

    LFW accuracy saturates near 99 %; the true-accept rate at one false accept in a thousand is
    what a deployment sets its threshold by, and it separates codecs that accuracy does not.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    xs: list[float] = []
    for name in _choose(results, codecs, HEADLINE):
        style = {"lw": 1.4, "ms": 5, **style_of(name)}
        x, y, _ = _series(results["codecs"][name], TAR_KEY)
        if name == "uncompressed" and len(y):
            ax.axhline(100 * y[0], label=name, **style)
        elif len(x):
            ax.plot(x, 100 * y, label=_label(name), **style)
            xs += list(x)
    rec = results.get("recognizer", {}).get("name", "")
    n = results.get("protocol", {}).get("n_pairs")
    ax.set_xlabel("bits per pixel (log scale)")
    ax.set_ylabel("TAR at FAR = 1e-3 (%)")
    ax.set_title(f"Rate and true accepts at 1 false accept in 1,000 ({rec}" + (f", {n:,} pairs)" if isinstance(n, int)
                                                                                  else ")"), fontsize=11)
    _log_axis(ax, xs or [0.1, 1.0])
    ax.set_ylim(0, 100)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def draw_results_figures(results_path: str | os.PathLike[str]) -> list[Path]:
    """Redraw ``NAME.png`` (the headline codecs), ``NAME_tar.png`` (TAR at FAR 1e-3) and
    ``NAME_roi.png`` beside a results JSON."""
    from .evaluate import load_results

    src = Path(results_path)
    res = load_results(src)
    out = [src.with_suffix(".png"), src.with_name(src.stem + "_tar.png")]
    rate_accuracy_figure(res, out[0])
    rate_tar_figure(res, out[1])
    roi_path = src.with_name(src.stem + "_roi.png")
    if roi_figure(res, roi_path) is not None:
        out.append(roi_path)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["results/rate_accuracy.json"]:
        for p in draw_results_figures(arg):
            print(f"wrote {p}")
