"""Write results/README.md from a results JSON: the table, BD-rate summary, goals, figure.

    python benchmarks/results_readme.py results/rate_accuracy.json --command "..."

Beside the main results it tabulates the files found next to them: the second recogniser
(``rate_accuracy_sface.json``), faces detected on the decoded images
(``rate_accuracy_end_to_end.json``) and coding speed (``codec_speed.json``). The hand-written
notes at the end of an existing README (below :data:`NOTES_MARKER`) are kept unless ``--notes``
gives others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facekit.codecs.names import HYPERPRIOR, SHORT_NAMES
from facekit.codecs.registry import RECOMMENDED
from facekit.evaluate import load_results
from facekit.goals import (
    PSNR_RANGE,
    goals_table,
    joint_gain_table,
    psnr_difference_table,
    rate_term_gain_table,
)
from facekit.hyperprior_goals import (
    HYPERPRIOR_ACCURACY,
    HYPERPRIOR_SAVING,
    hyperprior_goals_table,
    with_points,
)
from facekit.plots import draw_results_figures, is_roi, summary_table

NOTES_MARKER = "<!-- hand-written notes below: benchmarks/results_readme.py keeps them when it regenerates this file -->"

def names_note() -> list[str]:
    """Markdown: the catalogue's names against the names the older results and notes use."""
    rows = [f"| `{new}` | `{spec.long_name}` |" for new, spec in SHORT_NAMES.items()]
    return [
        "**Old names.** `facekit codecs` lists the codecs by role; results made before those names, and the",
        "notes below, use the old ones. The other learned codecs in these tables (`facekit-joint-entropy`,",
        "`facekit-jointrate-entropy`, ...) are measured variants that the catalogue no longer lists; `facekit",
        "evaluate` and `facekit decompress` still accept their names. History: [CHANGELOG.md](../CHANGELOG.md).",
        "",
        "| name | old name |",
        "| --- | --- |",
        *rows,
        "",
    ]


def _subset(res: dict, names: list[str]) -> dict:
    return {**res, "codecs": {n: res["codecs"][n] for n in names}}


def roi_section(res: dict) -> list[str]:
    """Markdown: the region-of-interest codecs and the baselines that also code only the face."""
    roi = [n for n in res["codecs"] if is_roi(n)]
    if not roi:
        return []
    names = [n for n in res["codecs"] if n == "uncompressed" or n in roi]
    return [
        "## Region of interest: the codecs that code only the face, and their baselines",
        "",
        "The same points as above; the savings here are against the classical codecs that also code only the face",
        "region (they flatten the background before encoding).",
        "",
        summary_table(_subset(res, names)),
        "",
    ]


def hyperprior_section(res: dict, sface_path: Path, rd_path: Path) -> list[str]:
    """Markdown: issue 28's "what it must show" for ``facekit-hyperprior``, computed from ``res`` (dlib), the
    SFace results at ``sface_path`` and the distortion-only (phase one) weights' results at ``rd_path`` (when
    those files exist) by :func:`facekit.hyperprior_goals.hyperprior_goals`; it says "not measured yet" while ``res``
    holds no point of it."""
    sface = load_results(sface_path) if sface_path.exists() else None
    rd = load_results(rd_path) if rd_path.exists() else None
    lo, hi = PSNR_RANGE
    lines = [
        f"## The second generation, `{HYPERPRIOR}` (issue 28): what it must show",
        "",
        f"Computed by `facekit.hyperprior_goals` from this file (dlib), `{sface_path.name}` (SFace) and "
        f"`{rd_path.name}` (the distortion-only weights of phase one, dlib): "
        f"Bjøntegaard's delta PSNR of the distortion-only model against AVIF (best effort and speed 6; at least 0 dB) "
        f"and the other classical codecs over {lo}–{hi} bpp; at least {100 * HYPERPRIOR_ACCURACY:.2f} % at 0.1 bpp; "
        f"a saving of at least {100 * HYPERPRIOR_SAVING:.0f} % against AVIF under each recogniser; and against "
        f"`{RECOMMENDED}`, whose accuracy curve it must match to replace it in the catalogue. Each curve is one set "
        "of weights (sha256 and training phase below); savings are read only where the curves overlap.",
        "",
        hyperprior_goals_table(res, sface, distortion_only=rd),
        "",
    ]
    if rd is not None and HYPERPRIOR in rd["codecs"] and HYPERPRIOR in res["codecs"]:
        phase_one = f"{HYPERPRIOR} (phase one)"
        table = joint_gain_table(with_points(res, phase_one, rd["codecs"][HYPERPRIOR]), base=phase_one, joint=HYPERPRIOR)
        if table:
            lines += ["What the joint phase changed, at each rate `t` measured with both weights:", "", table, ""]
    return lines


def points_table(res: dict) -> str:
    """Markdown: each point of each codec, with its accuracy, PSNR and (end to end) detector fallbacks."""
    detected = any(p.get("detection_failures") is not None for pts in res["codecs"].values() for p in pts)
    head = "| codec | setting | bpp | accuracy % | PSNR dB |"
    lines = [head + (" images the detector missed (MTCNN fallback) |" if detected else ""),
             "| --- " * (head.count("|") - 1 + detected) + "|"]
    for name, pts in res["codecs"].items():
        for p in sorted(pts, key=lambda p: p["bpp"]):
            psnr = "—" if p.get("psnr") is None else f"{p['psnr']:.1f}"
            setting = "—" if p["setting"] is None else p["setting"]
            row = (f"| {name} | {setting} | {p['bpp']:.3f} | {100 * p['acc_mean']:.2f} ± "
                   f"{100 * p['acc_std']:.2f} | {psnr} |")
            if detected:
                missed = p.get("detection_failures")
                row += " — |" if missed is None else f" {missed} of {p['n_images']} |"
            lines.append(row)
    return "\n".join(lines)


def other_results_section(path: Path, title: str, intro: str, *, savings: bool) -> list[str]:
    """Markdown: the points of another results JSON beside the main one (with the Bjøntegaard summary when
    ``savings``), or nothing when the file is absent."""
    if not path.exists():
        return []
    res = load_results(path)
    prot = res["protocol"]
    return [
        f"## {title}",
        "",
        f"{intro} Recogniser **{res['recognizer']['name']}**; {prot['n_pairs']} pairs of `{prot['pairs_file']}`"
        + (f" (the first {prot['per_fold']} a fold)" if prot.get("per_fold") else "")
        + f"; alignment {prot['alignment']}. File: [`{path.name}`]({path.name}).",
        "",
        points_table(res),
        "",
        *([summary_table(res).split("\n\n", 1)[1], ""] if savings else []),
    ]


def speed_section(path: Path) -> list[str]:
    """Markdown: images per second of each codec point in ``codec_speed.json``, or nothing when it is absent."""
    if not path.exists():
        return []
    import json

    sp = json.loads(path.read_text())
    lines = [
        "## Speed",
        "",
        f"{sp['images']} {sp['source']} ({sp['size']}), {sp['device']}, {sp['torch_threads']} torch thread(s), "
        f"torch {sp['torch']}. File: [`{path.name}`]({path.name}), from `benchmarks/codec_speed.py`."
        + (f" Note: {sp['note']}." if sp.get("note") else ""),
        "",
        "| codec | setting | bpp | encode images/s | decode images/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in sp["rows"]:
        setting = r["setting"] if isinstance(r["setting"], (str, int)) else f"{r['setting']:.3f}"
        enc = f"{r['encode_img_per_s']:.1f}" + (" (with face detection)" if r.get("encode_includes") else "")
        lines.append(f"| {r['codec']} | {setting} | {r['bpp']:.3f} | {enc} | {r['decode_img_per_s']:.1f} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--command", default="", help="the command that made the results")
    ap.add_argument("--notes", type=Path,
                    help="a Markdown file appended after the tables (default: the notes of the existing README)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = load_results(args.results)
    fig, tar_fig, *roi_fig = draw_results_figures(args.results)
    prot = res["protocol"]
    prov = res["provenance"]
    lines = [
        "# Results",
        "",
        *names_note(),
        f"![rate-accuracy]({fig.name})",
        "",
        f"![rate and TAR at FAR 1e-3]({tar_fig.name})",
        "",
        *([f"![rate-accuracy with region of interest]({roi_fig[0].name})", ""] if roi_fig else []),
        f"Recogniser: **{res['recognizer']['name']}** ({res['recognizer']['distance']} distance); "
        f"{prot['n_pairs']} pairs of `{prot['pairs_file']}` ({prot['folds']} folds"
        + (f", the first {prot['per_fold']} pairs of each fold" if prot.get("per_fold") else "")
        + f", {prot['n_images']} images); alignment {prot['alignment']}; bpp = {prot['bpp']}.",
        f"Made by facekit {prov['facekit']} at commit `{prov.get('git_commit')}` on {prov['device']}"
        + (f" (the last of {len(res['runs'])} runs merged into it)." if res.get("runs") else "."),
    ]
    sweep = res.get("sweep") or {}
    if sweep.get("code_commit"):
        lines.append(f"Code of the sweep: {sweep['code_commit']}.")
    if (sweep.get("roi") or {}).get("code_commit"):
        lines.append(f"Code of the region-of-interest sweep: {sweep['roi']['code_commit']}.")
    def _own(p: dict) -> bool:
        return bool(p.get("rate_remeasured")) and not p["rate_remeasured"].get("accuracy_from")

    rerated = [
        f"`{n}` ({', '.join(str(p['setting']) for p in pts if _own(p))})"
        for n, pts in res["codecs"].items()
        if any(_own(p) for p in pts)
    ]
    def _checked(r: dict) -> str:
        rated, checked = r.get("images_rated"), r.get("images_checked")
        if rated and checked is not None and checked < rated:
            return f"; codes checked on {checked} of {rated} streams"
        return ""

    twins = [
        f"`{n}:{p['setting']}` (from `{p['rate_remeasured']['accuracy_from']}`{_checked(p['rate_remeasured'])})"
        for n, pts in res["codecs"].items()
        for p in pts
        if (p.get("rate_remeasured") or {}).get("accuracy_from")
    ]
    if rerated:
        lines.append(
            "Rates re-measured after a new context prior (`benchmarks/rerate.py`: every image compressed again, its "
            f"decoded codes checked equal, so accuracy and PSNR are the earlier ones): {', '.join(rerated)}."
        )
    if twins:
        lines.append(
            "Range-coded points whose accuracy and PSNR are those of their PNG twin, which decodes to the same images "
            f"(`benchmarks/rerate.py --from-twin`, every stream's codes checked unless noted): {', '.join(twins)}."
        )
    carried = [
        f"`{n}` ({', '.join(str(p['setting']) for p in pts if 'bpp_format1' in (p.get('container') or {}))})"
        for n, pts in res["codecs"].items()
        if any("bpp_format1" in (p.get("container") or {}) for p in pts)
    ]
    if carried:
        lines.append(
            "Learned-codec points measured on container format 1 and carried to format 2 "
            "(`benchmarks/recontainer.py`: same payloads, every file 8 + len(model name) bytes shorter, checked on "
            f"images of each point; bpp_format1 in the JSON): {', '.join(carried)}."
        )
    if sweep.get("not_run"):
        lines.append(f"Planned but not measured: {', '.join(f'`{j}`' for j in sweep['not_run'])}.")
    lines.append("")
    if args.command:
        lines += ["```bash", args.command, "```", ""]
    lines += [summary_table(res), ""]
    goals = goals_table(res)
    if goals:
        lines += ["## The goals, checked against these numbers (`facekit.goals`)", "", goals, ""]
    fidelity = psnr_difference_table(res)
    if fidelity:
        lo, hi = PSNR_RANGE
        lines += ["## Fidelity: PSNR at equal bpp against the classical codecs", "",
                  f"Mean whole-image PSNR difference at equal bpp (Bjøntegaard's delta PSNR; each curve linear in log "
                  f"bpp) over {lo}–{hi} bpp, or the part of it both curves cover (in brackets); positive: the "
                  "learned codec is sharper.", "", fidelity, ""]
    lines += hyperprior_section(res, args.results.parent / "rate_accuracy_sface.json",
                                args.results.parent / "rate_accuracy_hyperprior_rd.json")
    gain = joint_gain_table(res)
    if gain:
        lines += ["## What joint training adds over distortion-only training", "", gain, ""]
    rate_gain = rate_term_gain_table(res)
    if rate_gain:
        lines += ["## What the rate term adds to joint training (both range-coded)", "", rate_gain, ""]
    face_gain = rate_term_gain_table(res, rated=RECOMMENDED)
    if face_gain:
        lines += ["## What the face-weighted distortion adds to joint training (both range-coded, GPU runs)", "",
                  face_gain, ""]
    lines += roi_section(res)
    here = args.results.parent
    lines += other_results_section(
        here / "rate_accuracy_sface.json", "A second recogniser: SFace",
        "OpenCV Zoo's SFace (int8, YuNet landmarks, OpenCV's ArcFace alignment), independent of dlib's ResNet, "
        "which trained the joint codecs; it judges codecs but cannot train them.", savings=True,
    )
    lines += other_results_section(
        here / "rate_accuracy_end_to_end.json", "End to end: faces detected on the decoded images",
        "`facekit evaluate --end-to-end`: each decoded image's face found and aligned on it (MTCNN where dlib's "
        "detector finds none), instead of reusing the original's alignment.", savings=False,
    )
    lines += speed_section(here / "codec_speed.json")
    out = args.out or args.results.parent / "README.md"
    if args.notes and args.notes.exists():
        notes = args.notes.read_text()
    elif out.exists() and NOTES_MARKER in out.read_text():
        notes = out.read_text().split(NOTES_MARKER, 1)[1].lstrip("\n")
    else:
        notes = ""
    if notes:
        lines += [NOTES_MARKER, "", notes.rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
