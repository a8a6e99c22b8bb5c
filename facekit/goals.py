"""The reproduction's goals, checked against a results file, and what joint training adds.

Bian et al. (arXiv:1907.01714, Fig. 5) claim that at equal bits per pixel the jointly
trained codec gives higher LFW verification accuracy than JPEG 2000 and far higher than
JPEG. facekit's goals go further (the issue tracker's "what it must show"):

1. above JPEG 2000 and JPEG at every bpp where both are measured;
2. above AVIF and WebP at every bpp below 0.3;
3. within 0.5 points of the uncompressed images (at least 98.25 %) at 0.1 bpp;
4. a bitrate saving of at least 50 % against AVIF and WebP at equal accuracy;
5. the same saving against the classical envelope: at each accuracy, the fewest bits any
   classical codec (JPEG, JPEG 2000, WebP, AVIF, HEVC-intra, JPEG XL) or its resize-then-code
   form needs; and, reported, the saving at equal TAR at FAR 1e-3 against that envelope.

A baseline is the upper envelope of every form the results measured of it (:func:`envelope`:
``avif`` pools ``avif``, ``avif-speed6`` and ``avif-resized``), and each detail names what it
pooled, so a saving always says which baseline set it refers to.

For a region-of-interest codec (a name ending in ``-roi`` or ``-roi-bg``, :mod:`facekit.codecs.roi`) the same
goals are checked, and then again against the baselines that code only the face too
(``jpeg2000-roi``, ``avif-roi``, ``webp-roi``), the comparison that separates what the
learned codec adds from what ROI coding alone gives.

"At every bpp where both are measured" is read as: over the bpp range both curves
cover, at each measured rate of either codec, the learned codec's accuracy (its
monotone envelope, linear in log bpp between its points, as
:func:`facekit.bdrate.quality_at`) is above the other's. The margin reported is the
smallest such difference, in accuracy points, and where it falls. Every function reads
only the results dict of :func:`facekit.evaluate.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bdrate import bd_quality, bd_rate, curve, monotone_envelope, quality_at, rate_at
from .codecs.names import is_learned
from .codecs.registry import CLASSIC, PAPER, PAPER_MSE

#: the accuracy (fraction) that goal 3 asks for at 0.1 bpp
TARGET_ACCURACY = 0.9825
#: the pairs of LFW's 10-fold protocol: goals and savings are judged on all of them only
FULL_LFW_PAIRS = 6000


def is_roi(name: str) -> bool:
    """A region-of-interest codec (``-roi``, or ``-roi-bg`` with a coded background: :mod:`facekit.codecs.roi`)."""
    return name.endswith("-roi") or "-roi-" in name


def pairs_measured(results: dict[str, Any], names: Sequence[str] | None = None) -> int | None:
    """The fewest LFW pairs behind the results (the protocol's count, and each point's of
    ``names``, or of every codec); None when the results do not record it."""
    counts = [results.get("protocol", {}).get("n_pairs")]
    for name in results["codecs"] if names is None else names:
        counts += [p.get("n_pairs") for p in results["codecs"].get(name, [])]
    known = [int(n) for n in counts if n is not None]
    return min(known) if known else None


def not_judged(results: dict[str, Any], names: Sequence[str] | None = None) -> str | None:
    """Why the results are too few to judge a goal or a saving on (fewer than all 6,000 LFW
    pairs, or a count not recorded); None when they hold all of them."""
    n = pairs_measured(results, names)
    if n is None:
        return "not judged: the number of pairs is not recorded"
    if n < FULL_LFW_PAIRS:
        return f"not judged: {n:,} pairs (a goal needs all {FULL_LFW_PAIRS:,})"
    return None


#: how a results name of a classical codec can differ from the codec it measures: another preset
#: (``avif-speed6``: AVIF at Pillow's default speed) or the resize-then-code form (``webp-resized``)
FORMS = ("-speed6", "-resized")
#: the key of TAR at FAR = 1e-3 in a results point
TAR_KEY = "tar_at_far_0.001"


def baseline_of(name: str) -> str:
    """The codec a results name measures: ``avif-speed6`` and ``avif-resized`` -> ``avif``,
    ``avif-speed6-roi`` -> ``avif-roi``; other names unchanged."""
    for form in FORMS:
        name = name.replace(form, "")
    return name


def measured_form(results: dict[str, Any], base: str) -> str | None:
    """The results name to draw for the classical codec ``base``: itself, else another preset of it
    (``avif-speed6`` for ``avif``), never its resized form; None when none is measured."""
    forms = [n for n in results["codecs"] if baseline_of(n) == base and "-resized" not in n]
    return base if base in forms else (forms[0] if forms else None)


def envelope(results: dict[str, Any], bases: Sequence[str], key: str = "acc_mean") -> tuple[list[dict[str, Any]], list[str]]:
    """The upper envelope of every measured form of the classical codecs ``bases``, and the names it pools.

    Every results name whose :func:`baseline_of` is in ``bases`` is pooled. At each rate the
    envelope takes the best of those codecs' curves (each linear in log bpp between its points,
    as :func:`facekit.bdrate.quality_at`), sampled at every measured rate and on a fine log grid
    (so that crossings are kept), then made monotone: the best any of them does at each rate,
    the strongest fair baseline. ``key`` is the quality: accuracy, or :data:`TAR_KEY`.
    """
    members = [n for n in results["codecs"] if baseline_of(n) in bases and not is_learned(n)]
    curves = [c for c in (curve(results["codecs"][n], key) for n in members) if len(c[0])]
    if not curves:
        return [], members
    rates = np.concatenate([x for x, _ in curves])
    grid = np.union1d(rates, np.geomspace(rates.min(), rates.max(), 200))
    best: list[dict[str, Any]] = []
    for r in grid:
        q = [v for v in (quality_at(x, y, float(r)) for x, y in curves) if v is not None]
        if q and (not best or max(q) > best[-1][key]):
            best.append({"bpp": float(r), key: float(max(q))})
    return best, members


def saving_at_equal_accuracy(
    test: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]], key: str = "acc_mean"
) -> dict[str, Any]:
    """The Bjøntegaard-style bitrate saving of ``test`` against ``ref`` (:func:`facekit.bdrate.bd_rate`),
    only where the two curves overlap: they share an accuracy range at least one point wide
    and a bpp range. Otherwise ``{"saving": None, "reason": ...}``: a saving read off curves
    that never meet is an extrapolation, not a measurement. ``key`` picks the quality: accuracy,
    or :data:`TAR_KEY` for the saving at equal TAR at FAR 1e-3.
    """
    xt, yt = curve(test, key)
    xr, yr = curve(ref, key)
    r = bd_rate(xt, yt, xr, yr)
    if r["saving"] is None:
        return r
    if r["range"][1] - r["range"][0] < 0.01:
        return {"saving": None, "range": None, "reason": "the curves share less than one accuracy point"}
    rt, _ = monotone_envelope(xt, yt)
    rr, _ = monotone_envelope(xr, yr)
    if rt[-1] < rr[0] or rr[-1] < rt[0]:
        return {"saving": None, "range": None, "reason": "the curves do not overlap in bpp"}
    return r


def margin_at_equal_rate(
    test: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]], max_bpp: float | None = None
) -> dict[str, Any]:
    """How far ``test`` is above ``ref`` in accuracy at equal bpp, over their common rate range.

    Returns ``{"min_margin", "at_bpp", "rates", "margins", "range"}`` (margins as fractions),
    or ``{"min_margin": None, "reason": ...}`` when the curves share no rate range
    (below ``max_bpp`` when given).
    """
    xt, yt = curve(test)
    xr, yr = curve(ref)
    if len(xt) == 0 or len(xr) == 0:
        return {"min_margin": None, "reason": "a curve has no points"}
    lo, hi = max(xt.min(), xr.min()), min(xt.max(), xr.max())
    if max_bpp is not None:
        hi = min(hi, max_bpp)
    rates = sorted({float(r) for r in np.concatenate([xt, xr]) if lo <= r <= hi})
    if not rates:
        return {"min_margin": None, "reason": "no common bpp range"}
    margins = []
    for r in rates:
        a, b = quality_at(xt, yt, r), quality_at(xr, yr, r)
        if a is not None and b is not None:
            margins.append((r, a - b))
    if not margins:
        return {"min_margin": None, "reason": "no common bpp range"}
    worst = min(margins, key=lambda m: m[1])
    return {
        "min_margin": float(worst[1]),
        "at_bpp": float(worst[0]),
        "rates": [m[0] for m in margins],
        "margins": [float(m[1]) for m in margins],
        "range": (float(lo), float(hi)),
    }


def pooled_baseline(results: dict[str, Any], bases: Sequence[str], key: str = "acc_mean") -> tuple[list[dict[str, Any]], str]:
    """The baseline's points (the :func:`envelope` of its measured forms) and, for a goal's detail, what they
    pool: ``""`` when exactly ``bases``, else `` (envelope of avif, avif-speed6)`` or `` (avif-speed6)``."""
    ref, members = envelope(results, bases, key)
    if members == list(bases):
        return ref, ""
    return ref, f" (envelope of {', '.join(members)})" if len(members) > 1 else f" ({', '.join(members)})"


def above_goal(results: dict[str, Any], learned: str, other: str, max_bpp: float | None, goal: str) -> dict[str, Any]:
    """Goal: ``learned``'s accuracy above the classical codec ``other``'s (every measured form of it) at
    every rate both cover (below ``max_bpp`` when given); :func:`margin_goal`."""
    ref, pooled = pooled_baseline(results, [other])
    return margin_goal(results, learned, ref, other, goal, max_bpp=max_bpp, note=pooled)


def margin_goal(
    results: dict[str, Any], learned: str, ref: Sequence[dict[str, Any]], ref_name: str, goal: str, *,
    max_bpp: float | None = None, strict: bool = True, note: str = "",
) -> dict[str, Any]:
    """Goal: ``learned``'s accuracy above (``strict``) or at least (not ``strict``) that of the points
    ``ref`` (of ``ref_name``) at every rate both cover, below ``max_bpp`` when given
    (:func:`margin_at_equal_rate`); ``note`` ends the detail."""
    mine = results["codecs"].get(learned, [])
    if not ref or not mine:
        return {"goal": goal, "kind": "margin", "met": None, "detail": f"{ref_name if not ref else learned} not measured"}
    m = margin_at_equal_rate(mine, ref, max_bpp)
    if m["min_margin"] is None:
        return {"goal": goal, "kind": "margin", "met": None, "detail": m["reason"]}
    lo, hi = m["range"]
    ok = [x > 0 if strict else x >= 0 for x in m["margins"]]
    return {
        "goal": goal, "kind": "margin",
        "met": all(ok),
        "detail": f"{'above' if strict else 'at least as good'} at {sum(ok)} of {len(ok)} rates in {lo:.3f}–{hi:.3f} bpp; "
                  f"smallest margin {100 * m['min_margin']:+.2f} points at {m['at_bpp']:.3f} bpp{note}",
    }


def accuracy_goal(points: Sequence[dict[str, Any]], target: float, goal: str, rate: float = 0.1) -> dict[str, Any]:
    """Goal: at least ``target`` accuracy at ``rate`` bpp (the curve read there, linear in log bpp).

    Where the curve ends below ``rate``, a point there that already reaches the target meets the
    goal (fewer bytes, same accuracy); one that does not cannot tell (``met`` None).
    """
    x, y = curve(points)
    acc = quality_at(x, y, rate) if len(x) else None
    below = [(b, a) for b, a in zip(x, y, strict=True) if b <= rate]
    if acc is None and below:
        b, a = max(below, key=lambda p: p[1])
        return {"goal": goal, "kind": "accuracy", "met": True if a >= target else None,
                "detail": f"{100 * a:.2f} % at {b:.3f} bpp, under {rate} bpp (its highest measured rate is {max(x):.3f} bpp)"}
    if acc is None:
        return {"goal": goal, "kind": "accuracy", "met": None, "detail": f"{rate} bpp is outside the measured rates"}
    return {"goal": goal, "kind": "accuracy", "met": acc >= target, "detail": f"{100 * acc:.2f} % at {rate} bpp (interpolated)"}


def saving_goal(
    results: dict[str, Any], learned: str, bases: Sequence[str], goal: str, target: float | None,
    key: str = "acc_mean", ref: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Goal: the Bjøntegaard-style saving of ``learned`` against the envelope of the classical codecs
    ``bases`` (:func:`saving_at_equal_accuracy`), met when it reaches ``target`` (None: reported only,
    met when positive). ``ref`` gives the reference points instead (another learned codec; ``bases``
    then names it in the detail only)."""
    mine = results["codecs"].get(learned, [])
    pooled = ""
    if ref is None:
        ref, pooled = pooled_baseline(results, bases, key)
    if not ref or len(curve(mine, key)[0]) < 2:
        return {"goal": goal, "kind": "saving", "met": None, "detail": "not measured"}
    r = saving_at_equal_accuracy(mine, ref, key)
    if r["saving"] is None:
        return {"goal": goal, "kind": "saving", "met": None, "detail": r.get("reason", "no common accuracy range")}
    what = "TAR " if key == TAR_KEY else ""
    return {"goal": goal, "kind": "saving", "met": r["saving"] >= target if target is not None else r["saving"] > 0,
            "detail": f"{100 * r['saving']:.0f} % over {what}{100 * r['range'][0]:.1f}–{100 * r['range'][1]:.1f} %{pooled}"}


def mark_not_judged(results: dict[str, Any], goals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``goals`` (changed in place) judged on nothing when ``results`` hold fewer than all 6,000 pairs
    (:func:`not_judged`): ``met`` None, and no saving; the margins measured stay in the detail."""
    why = not_judged(results)
    if why is not None:
        for g in goals:  # what was measured stays, but no saving: on a small sample it is noise
            g["met"] = None
            g["detail"] = why if g.get("kind") == "saving" else f"{why}; {g['detail']}"
    return goals


def check_goals(results: dict[str, Any], learned: str) -> list[dict[str, Any]]:
    """Each goal for the learned codec ``learned``: ``{"goal", "met": True/False/None, "detail"}``.

    ``met`` is None where the results cannot tell (a codec missing, no common range), and
    for every goal when they hold fewer than all 6,000 LFW pairs (:func:`not_judged`: the
    detail then starts with "not judged: N pairs" and still gives the margins measured, but
    no bitrate saving).
    """
    mine = results["codecs"].get(learned, [])
    out = [
        above_goal(results, learned, "jpeg2000", None, "above JPEG 2000 wherever both are measured"),
        above_goal(results, learned, "jpeg", None, "above JPEG wherever both are measured"),
        above_goal(results, learned, "avif", 0.3, "above AVIF below 0.3 bpp"),
        above_goal(results, learned, "webp", 0.3, "above WebP below 0.3 bpp"),
        accuracy_goal(mine, TARGET_ACCURACY, f"at least {100 * TARGET_ACCURACY:.2f} % at 0.1 bpp"),
    ]
    for other in ("avif", "webp"):
        out.append(saving_goal(results, learned, [other],
                               f"bitrate saving of at least 50 % against {other.upper() if other == 'avif' else 'WebP'}", 0.5))
    out.append(saving_goal(results, learned, CLASSIC, "bitrate saving of at least 50 % against the classical envelope", 0.5))
    if any(p.get(TAR_KEY) is not None for p in mine):  # results from before TAR was recorded have none
        out.append(saving_goal(results, learned, CLASSIC,
                               "bitrate saving at equal TAR at FAR 1e-3 against the classical envelope (reported)", None,
                               key=TAR_KEY))
    if is_roi(learned):
        # the fair comparison for region-of-interest coding: baselines that code only the face too
        for other, label in (("jpeg2000-roi", "JPEG 2000"), ("avif-roi", "AVIF"), ("webp-roi", "WebP")):
            if envelope(results, [other])[0]:
                out.append(above_goal(
                    results, learned, other, 0.3 if other != "jpeg2000-roi" else None,
                    f"ROI baselines: above {label} with ROI" + (" below 0.3 bpp" if other != "jpeg2000-roi" else
                                                                " wherever both are measured")))
        for other, label in (("avif-roi", "AVIF"), ("webp-roi", "WebP")):
            if envelope(results, [other])[0] and len(curve(mine)[0]) >= 2:
                out.append(saving_goal(results, learned, [other],
                                       f"ROI baselines: bitrate saving against {label} with ROI (reported, no target)", None))
    return mark_not_judged(results, out)


#: how a goal's ``met`` reads in a table
MET_WORDS = {True: "**met**", False: "not met", None: "—"}


def goal_cell(g: dict[str, Any]) -> str:
    """A goal's table cell: met / not met / — and its detail (only the detail when not judged)."""
    if g["detail"].startswith("not judged"):  # too few pairs: the detail says so first
        return g["detail"]
    return f"{MET_WORDS[g['met']]}: {g['detail']}"


def goals_table(results: dict[str, Any], learned: Sequence[str] | None = None) -> str:
    """Markdown: one row per goal, one column per learned codec (met / not met, and by how much)."""
    names = list(learned) if learned is not None else [n for n in results["codecs"] if is_learned(n)]
    if not names:
        return ""
    checks = {n: {g["goal"]: g for g in check_goals(results, n)} for n in names}
    goals = list(dict.fromkeys(g for n in names for g in checks[n]))  # every codec's goals, in order

    lines = ["| goal | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for goal in goals:
        cells = [goal_cell(checks[n][goal]) if goal in checks[n] else "—" for n in names]
        lines.append(f"| {goal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: the classical codecs whole-image PSNR is compared with, and the rate range (bpp) of the comparison
PSNR_REFERENCES, PSNR_RANGE = ("avif", "jpeg2000", "webp", "hevc", "jpegxl"), (0.1, 0.5)


def psnr_difference_table(results: dict[str, Any], learned: Sequence[str] | None = None) -> str:
    """Markdown: each whole-image learned codec's mean PSNR difference at equal bpp (Bjøntegaard's
    delta PSNR, :func:`facekit.bdrate.bd_quality`) against each classical codec measured, over
    :data:`PSNR_RANGE` or the part of it both curves cover; "" when nothing compares.
    """
    codecs = results["codecs"]
    names = list(learned) if learned is not None else [n for n in codecs if is_learned(n) and not is_roi(n)]
    refs = [f for f in (measured_form(results, r) for r in PSNR_REFERENCES) if f is not None]
    if not names or not refs:
        return ""

    def cell(n: str, r: str) -> str:
        d = bd_quality(*curve(codecs[n], "psnr"), *curve(codecs[r], "psnr"), *PSNR_RANGE)
        if d["delta"] is None:
            return "—"
        return f"{d['delta']:+.2f} dB ({d['range'][0]:.2f}–{d['range'][1]:.2f})"

    lines = ["| codec | " + " | ".join(f"vs {r}" for r in refs) + " |", "| --- |" + " --- |" * len(refs)]
    lines += [f"| {n} | " + " | ".join(cell(n, r) for r in refs) + " |" for n in names]
    return "\n".join(lines)


def joint_gain_table(results: dict[str, Any], base: str = PAPER_MSE, joint: str = PAPER) -> str:
    """Markdown: at each rate point both variants have, what joint training changed (bpp, accuracy, PSNR)."""
    codecs = results["codecs"]
    if base not in codecs or joint not in codecs:
        return ""
    a = {p["setting"]: p for p in codecs[base]}
    b = {p["setting"]: p for p in codecs[joint]}
    common = [s for s in a if s in b]
    if not common:
        return ""
    lines = [f"| rate point | {base}: bpp, accuracy %, PSNR dB | {joint}: bpp, accuracy %, PSNR dB | "
             "accuracy gain (points) | PSNR cost (dB) |", "| --- | --- | --- | --- | --- |"]
    for s in sorted(common, key=lambda s: a[s]["bpp"]):
        p, q = a[s], b[s]
        lines.append(
            f"| {s} | {p['bpp']:.3f}, {100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f}, {p['psnr']:.2f} | "
            f"{q['bpp']:.3f}, {100 * q['acc_mean']:.2f} ± {100 * q['acc_std']:.2f}, {q['psnr']:.2f} | "
            f"{100 * (q['acc_mean'] - p['acc_mean']):+.2f} | {p['psnr'] - q['psnr']:.2f} |"
        )
    return "\n".join(lines)


def rate_term_gain_table(
    results: dict[str, Any], base: str = "facekit-joint-entropy", rated: str = "facekit-jointrate-entropy"
) -> str:
    """Markdown: what the rate term adds, at each point of ``rated``, against ``base`` at equal bpp.

    The two variants sit at different rates (the rate term moves each point to fewer bits),
    so ``base`` is read at ``rated``'s bpp on its envelope (linear in log bpp, as
    :func:`facekit.bdrate.quality_at`), and its bpp at ``rated``'s accuracy
    (:func:`facekit.bdrate.rate_at`) gives the bits saved; a dash where ``rated`` lies
    outside ``base``'s range.
    """
    codecs = results["codecs"]
    if base not in codecs or rated not in codecs:
        return ""
    xb, yb = curve(codecs[base])
    lowest = monotone_envelope(xb, yb)[1][0] if len(xb) else np.inf
    same = {p["setting"]: p for p in codecs[base]}
    lines = [f"| rate point | {rated}: bpp, accuracy %, PSNR dB | {base} at that bpp: accuracy % | "
             f"accuracy gain (points) | bits saved at that accuracy | PSNR cost against {base}'s same point (dB) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for p in sorted(codecs[rated], key=lambda p: p["bpp"]):
        acc = quality_at(xb, yb, p["bpp"])
        at = rate_at(xb, yb, p["acc_mean"])
        saved = f"{100 * (1 - p['bpp'] / at):.0f} %" if at is not None and p["acc_mean"] >= lowest else "—"
        q = same.get(p["setting"])
        cost = f"{q['psnr'] - p['psnr']:.2f}" if q and q.get("psnr") is not None and p.get("psnr") is not None else "—"
        lines.append(
            f"| {p['setting']} | {p['bpp']:.3f}, {100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f}, "
            f"{p['psnr']:.2f} | " + (f"{100 * acc:.2f}" if acc is not None else "—") + " | "
            + (f"{100 * (p['acc_mean'] - acc):+.2f}" if acc is not None else "—") + f" | {saved} | {cost} |"
        )
    return "\n".join(lines)
