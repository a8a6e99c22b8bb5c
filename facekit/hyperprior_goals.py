"""Issue 28's "what it must show" for the second-generation codec ``facekit-hyperprior``, computed.

(a) the distortion-only model's Bjøntegaard PSNR difference against AVIF (best effort and speed 6) over
    0.1-0.5 bpp on the LFW pair images: at least 0 dB; against WebP, JPEG 2000, HEVC-intra and JPEG
    XL reported;
(b) at least 98.33 % on all 6,000 pairs at 0.1 bpp or below, whole images (uncompressed 98.83 % less
    half a point);
(c) a Bjøntegaard-style saving of at least 60 % against AVIF under dlib's ResNet and under SFace, and,
    reported, against WebP, JPEG 2000, HEVC-intra, JPEG XL and the classical envelope;
(d) against the recommended ``facekit``: the saving, and whether its accuracy curve is at least as
    good (the condition for it to become the recommended codec).

Built on the goal machinery of :mod:`facekit.goals`; every function reads results dicts of
:func:`facekit.evaluate.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .bdrate import bd_quality, curve
from .codecs.names import HYPERPRIOR
from .codecs.registry import CLASSIC, RECOMMENDED
from .evaluate import check_same_run
from .goals import (
    PSNR_RANGE,
    accuracy_goal,
    goal_cell,
    margin_goal,
    mark_not_judged,
    not_judged,
    saving_goal,
)

#: issue 28's goals for ``facekit-hyperprior``: accuracy at 0.1 bpp (uncompressed 98.83 % less half a
#: point), the saving against AVIF under each recogniser, and the PSNR difference against AVIF (dB)
HYPERPRIOR_ACCURACY, HYPERPRIOR_SAVING, HYPERPRIOR_PSNR = 0.9833, 0.6, 0.0
#: the classical results names its PSNR is compared with (the first two have the goal), with their labels
HYPERPRIOR_PSNR_REFS = {"avif": "AVIF (best effort)", "avif-speed6": "AVIF (speed 6)", "webp": "WebP",
                        "jpeg2000": "JPEG 2000", "hevc": "HEVC-intra", "jpegxl": "JPEG XL"}
#: the classical codecs it is saved against (every measured form of each pooled), with their labels
HYPERPRIOR_SAVING_REFS = {"avif": "AVIF", "webp": "WebP", "jpeg2000": "JPEG 2000", "hevc": "HEVC-intra",
                          "jpegxl": "JPEG XL"}


def psnr_goal(results: dict[str, Any], learned: str, ref: str, goal: str, target: float | None) -> dict[str, Any]:
    """Goal: Bjøntegaard's delta PSNR of ``learned`` against the results name ``ref`` (that form only, no
    envelope) over :data:`PSNR_RANGE` (or the part both curves cover) at least ``target`` dB
    (None: reported, met when positive)."""
    codecs = results["codecs"]
    if ref not in codecs or learned not in codecs:
        return {"goal": goal, "kind": "psnr", "met": None, "detail": f"{ref if learned in codecs else learned} not measured"}
    d = bd_quality(*curve(codecs[learned], "psnr"), *curve(codecs[ref], "psnr"), *PSNR_RANGE)
    if d["delta"] is None:
        return {"goal": goal, "kind": "psnr", "met": None, "detail": d["reason"]}
    met = d["delta"] >= target if target is not None else d["delta"] > 0
    return {"goal": goal, "kind": "psnr", "met": met, "detail": f"{d['delta']:+.2f} dB over {d['range'][0]:.2f}–{d['range'][1]:.2f} bpp"}


def recognizer_label(results: dict[str, Any]) -> str:
    """The recogniser of a results dict, as a goal names it (``dlib-resnet``, ``sface``)."""
    return str(results.get("recognizer", {}).get("name", "?"))


def hyperprior_savings(results: dict[str, Any], learned: str = HYPERPRIOR) -> list[dict[str, Any]]:
    """Issue 28's savings of ``learned`` under one recogniser (the one of ``results``): at least 60 %
    against AVIF (goal); against WebP, JPEG 2000, HEVC-intra, JPEG XL, the classical envelope and
    facekit's recommended codec (reported); and whether its accuracy curve is at least as good as
    the recommended codec's (issue 28 item 8: the catalogue's switch condition)."""
    rec = recognizer_label(results)
    out = [saving_goal(results, learned, ["avif"],
                       f"({rec}) saving of at least {100 * HYPERPRIOR_SAVING:.0f} % against AVIF", HYPERPRIOR_SAVING)]
    for base, label in HYPERPRIOR_SAVING_REFS.items():
        if base != "avif":
            out.append(saving_goal(results, learned, [base], f"({rec}) saving against {label} (reported)", None))
    out.append(saving_goal(results, learned, CLASSIC, f"({rec}) saving against the classical envelope (reported)", None))
    mine_ref = results["codecs"].get(RECOMMENDED)
    out.append(saving_goal(results, learned, [RECOMMENDED], f"({rec}) saving against {RECOMMENDED} (reported)", None,
                           ref=mine_ref or []))
    out.append(margin_goal(results, learned, mine_ref or [], RECOMMENDED,
                           f"({rec}) accuracy at least {RECOMMENDED}'s wherever both are measured "
                           "(the catalogue switch, issue 28 item 8)", strict=False))
    return mark_not_judged(results, out)


def with_points(results: dict[str, Any], name: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    """``results`` with ``name``'s points replaced by (or set to) ``points``: another curve of one codec, e.g.
    the distortion-only weights of a codec whose shipped weights were then trained jointly."""
    return {**results, "codecs": {**results["codecs"], name: points}}


def hyperprior_goals(results: dict[str, Any], sface: dict[str, Any] | None = None,
                     learned: str = HYPERPRIOR, distortion_only: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Issue 28's "what it must show" for ``learned``, computed: ``{"goal", "met", "detail"}`` each.

    ``results`` are dlib's (all 6,000 pairs; fewer: every goal "not judged", :func:`not_judged`),
    ``sface`` SFace's (its savings are added when given and ``learned`` is in them):

    (a) Bjøntegaard PSNR difference over :data:`PSNR_RANGE` against AVIF (best effort and speed 6:
        at least 0 dB) and, reported, WebP, JPEG 2000, HEVC-intra and JPEG XL;
    (b) at least 98.33 % at 0.1 bpp (or below);
    (c) a saving of at least 60 % against AVIF, under dlib and under SFace, and the other savings of
        :func:`hyperprior_savings`;
    (d) against facekit's recommended codec: the saving, and whether its curve is at least as good.

    ``distortion_only``: results (dlib, all pairs) of ``learned``'s phase-one weights, before joint
    training; goal (a) is the distortion-only model's, so it reads them when given. They must share
    ``results``' recogniser, data and protocol (:func:`~facekit.evaluate.check_same_run`, a DataError
    otherwise); fewer than all 6,000 pairs leave goal (a) "not judged" (:func:`not_judged`).
    An empty list when ``learned`` is not in ``results``.
    """
    if learned not in results["codecs"]:
        return []
    out = []
    fidelity, whose, unjudged = results, "", None
    if distortion_only is not None and learned in distortion_only["codecs"]:
        unjudged = not_judged(distortion_only)
        if unjudged is None:
            check_same_run(results, distortion_only)
        fidelity, whose = with_points(results, learned, distortion_only["codecs"][learned]), "distortion-only model: "
    for ref, label in HYPERPRIOR_PSNR_REFS.items():
        goal = ref.startswith("avif")
        name = (f"PSNR at least {HYPERPRIOR_PSNR:+.0f} dB against {label}" if goal else f"PSNR against {label} (reported)")
        g = psnr_goal(fidelity, learned, ref, f"{whose}{name}, Bjøntegaard over {PSNR_RANGE[0]}–{PSNR_RANGE[1]} bpp",
                      HYPERPRIOR_PSNR if goal else None)
        out.append({**g, "met": None, "detail": f"{unjudged} ({g['detail']})"} if unjudged else g)
    out.append(accuracy_goal(results["codecs"][learned], HYPERPRIOR_ACCURACY,
                             f"({recognizer_label(results)}) at least {100 * HYPERPRIOR_ACCURACY:.2f} % at 0.1 bpp"))
    out = mark_not_judged(results, out) + hyperprior_savings(results, learned)
    if sface is not None and learned in sface["codecs"]:
        out += hyperprior_savings(sface, learned)
    return out


def weights_identities(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct weights records (``{"sha256", "fingerprint", "phase"}``) of a codec's points, in order."""
    seen: dict[Any, dict[str, Any]] = {}
    for p in points:
        w = p.get("weights") or {}
        seen.setdefault(w.get("sha256"), w)
    return [w for w in seen.values() if w]


def hyperprior_goals_table(results: dict[str, Any], sface: dict[str, Any] | None = None,
                           learned: str = HYPERPRIOR, distortion_only: dict[str, Any] | None = None) -> str:
    """Markdown: the weights measured and one row per goal of :func:`hyperprior_goals`, or a line saying
    that ``learned`` is not measured yet."""
    if learned not in results["codecs"]:
        return f"`{learned}`: not measured yet on these pairs (`benchmarks/rate_accuracy.py --codecs {learned}`)."
    lines = []
    for rs, what in ((results, ""), (sface, ""), (distortion_only, ", distortion-only (phase one) weights")):
        if rs is not None and learned in rs["codecs"]:
            pts = rs["codecs"][learned]
            ids = ", ".join(f"sha256 `{w.get('sha256', '?')[:12]}` (phase {w.get('phase') or 'unknown'})"
                            for w in weights_identities(pts)) or "weights not recorded"
            lines.append(f"- {recognizer_label(rs)}{what}: {len(pts)} points, {ids}")
    if sface is not None and learned not in sface["codecs"]:
        lines.append(f"- {recognizer_label(sface)}: not measured yet")
    lines += ["", "| goal | result |", "| --- | --- |"]
    lines += [f"| {g['goal']} | {goal_cell(g)} |" for g in hyperprior_goals(results, sface, learned, distortion_only)]
    return "\n".join(lines)
