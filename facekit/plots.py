"""The figures the notebooks and the report share, drawn from a results JSON.

As in CompressAI's plots, the figures read only the saved results, never a live run:
accuracy against bpp (log axis, as in Bian et al. 2019, Fig. 5) and PSNR against bpp.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bdrate import bd_rate, curve, quality_at

STYLE = {
    "uncompressed": dict(color="black", marker="*", ls="none", ms=12),
    "jpeg": dict(color="tab:red", marker="o"),
    "jpeg2000": dict(color="tab:orange", marker="s"),
    "webp": dict(color="tab:green", marker="^"),
    "avif": dict(color="tab:purple", marker="v"),
    "facekit-mse": dict(color="tab:blue", marker="D", ls="--"),
    "facekit-joint": dict(color="tab:blue", marker="D", lw=2.5),
    "facekit-mse-entropy": dict(color="tab:cyan", marker="P", ls="--"),
    "facekit-joint-entropy": dict(color="tab:cyan", marker="P", lw=2.5),
    "facekit-jointrate": dict(color="tab:pink", marker="d", lw=1.5),
    "facekit-jointrate-entropy": dict(color="tab:pink", marker="X", lw=2.5),
    "facekit-jointface": dict(color="tab:olive", marker="h", lw=1.5),
    "facekit-jointface-entropy": dict(color="darkgreen", marker="H", lw=3),
}
# region-of-interest variants (facekit.roi): the colour of their codec, dotted, hollow markers
# (with a coded background, -roi-bg: dash-dotted)
STYLE.update({f"{k}{suffix}": {**v, "ls": ls, "mfc": "none"} for k, v in list(STYLE.items()) if k != "uncompressed"
              for suffix, ls in (("-roi", ":"), ("-roi-bg", "-."))})


def is_roi(name: str) -> bool:
    """A region-of-interest codec (``-roi``, or ``-roi-bg`` with a coded background: :mod:`facekit.roi`)."""
    return name.endswith("-roi") or "-roi-" in name

LEARNED_PREFIX = "facekit"


def rate_accuracy_figure(
    results: dict[str, Any],
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    codecs: Sequence[str] | None = None,
):
    """Accuracy (%) and PSNR (dB) against bpp (log axis); saved to ``path`` when given.

    ``codecs`` draws only those (in that order); by default every codec of the results.
    Region-of-interest codecs (``-roi``) are left out of the PSNR panel: their background
    is flat by design, so their whole-image PSNR says nothing about the face (``-roi-bg``
    codecs code a background, so they stay).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    names = list(results["codecs"]) if codecs is None else [c for c in codecs if c in results["codecs"]]
    for name in names:
        points = results["codecs"][name]
        style = {"lw": 1.5, "ms": 5, **STYLE.get(name, {})}
        x, y = curve(points, "acc_mean")
        if len(x):
            ax1.plot(x, 100 * y, label=name, **style)
        if name != "uncompressed" and not name.endswith("-roi"):  # a ROI codec's background is flat
            x, y = curve(points, "psnr")
            if len(x):
                ax2.plot(x, y, label=name, **style)
    rec = results.get("recognizer", {}).get("name", "")
    n = results.get("protocol", {}).get("n_pairs", "")
    ax1.set(xscale="log", xlabel="bits per pixel", ylabel="LFW verification accuracy (%)",
            title=title or f"rate-accuracy ({rec}, {n} pairs, 10-fold)")
    roi = any(n.endswith("-roi") for n in names)  # left out of the PSNR panel
    ax2.set(xscale="log", xlabel="bits per pixel", ylabel="PSNR (dB)",
            title="rate-distortion" + (" (whole image; ROI codecs left out)" if roi else ""))
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    lo = min([100 * p["acc_mean"] for n in names for p in results["codecs"][n]] + [90])
    ax1.set_ylim(max(50, lo - 2), 100)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def summary_table(results: dict[str, Any], rates: tuple[float, ...] = (0.1, 0.15, 0.2, 0.3, 0.5)) -> str:
    """Markdown: each codec's measured points, accuracy interpolated at fixed rates, BD savings."""
    codecs = results["codecs"]
    lines = ["| codec | points (bpp → accuracy %, PSNR dB) |", "| --- | --- |"]
    for name, pts in codecs.items():
        cells = []
        for p in sorted(pts, key=lambda p: p["bpp"]):
            ps = f", {p['psnr']:.1f} dB" if p.get("psnr") is not None else ""
            cells.append(f"{p['bpp']:.3f} → {100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f}{ps}")
        lines.append(f"| {name} | {'; '.join(cells)} |")
    lines += ["", "| codec | " + " | ".join(f"acc @ {r} bpp" for r in rates) + " |",
              "| --- |" + " --- |" * len(rates)]
    for name, pts in codecs.items():
        if name == "uncompressed":
            continue
        x, y = curve(pts, "acc_mean")
        vals = [quality_at(x, y, r) for r in rates]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
    learned = [n for n in codecs if n.startswith(LEARNED_PREFIX)]
    classic = [n for n in codecs if not n.startswith(LEARNED_PREFIX) and n != "uncompressed"]
    if learned and classic:
        lines += ["", "Bitrate saving at equal accuracy (Bjøntegaard-style, over the common accuracy range):", "",
                  "| facekit | " + " | ".join(f"vs {c}" for c in classic) + " |", "| --- |" + " --- |" * len(classic)]
        for ln in learned:
            xl, yl = curve(codecs[ln], "acc_mean")
            cells = []
            for c in classic:
                xc, yc = curve(codecs[c], "acc_mean")
                r = bd_rate(xl, yl, xc, yc)
                cells.append("no overlap" if r["saving"] is None else
                             f"{100 * r['saving']:.0f}% ({100 * r['range'][0]:.1f}–{100 * r['range'][1]:.1f}%)")
            lines.append(f"| {ln} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roi_figure(results: dict[str, Any], path: str | os.PathLike[str] | None = None):
    """The region-of-interest codecs (``-roi``, ``-roi-bg``) beside the codecs they are made
    from, or None when the results hold no ROI codec; saved to ``path`` when given."""
    roi = [n for n in results["codecs"] if is_roi(n)]
    if not roi:
        return None
    pair = [n for k in roi for n in (k[: k.index("-roi")], k) if n in results["codecs"]]
    return rate_accuracy_figure(results, path, codecs=["uncompressed", *dict.fromkeys(pair)],
                                title="region of interest: only the face chip is coded (facekit.roi)")
