"""Write results/README.md from a results JSON: the table, BD-rate summary, goals, figure.

    python benchmarks/results_readme.py results/rate_accuracy.json --command "..."
"""

from __future__ import annotations

import argparse
from pathlib import Path

from facekit.evaluate import load_results
from facekit.goals import goals_table, joint_gain_table, rate_term_gain_table
from facekit.plots import is_roi, rate_accuracy_figure, roi_figure, summary_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    ap.add_argument("--command", default="", help="the command that made the results")
    ap.add_argument("--notes", type=Path, help="a Markdown file appended after the table")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = load_results(args.results)
    fig = args.results.with_suffix(".png")
    roi = [n for n in res["codecs"] if is_roi(n)]
    rate_accuracy_figure(res, fig, codecs=[n for n in res["codecs"] if n not in roi])
    roi_fig = fig.with_name(fig.stem + "_roi.png")
    roi_figure(res, roi_fig)
    prot = res["protocol"]
    prov = res["provenance"]
    lines = [
        "# Results",
        "",
        f"![rate-accuracy]({fig.name})",
        "",
        *([f"![rate-accuracy with region of interest]({roi_fig.name})", ""] if roi else []),
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
    gain = joint_gain_table(res)
    if gain:
        lines += ["## What joint training adds over distortion-only training", "", gain, ""]
    rate_gain = rate_term_gain_table(res)
    if rate_gain:
        lines += ["## What the rate term adds to joint training (both range-coded)", "", rate_gain, ""]
    face_gain = rate_term_gain_table(res, rated="facekit-jointface-entropy")
    if face_gain:
        lines += ["## What the face-weighted distortion adds to joint training (both range-coded, GPU runs)", "",
                  face_gain, ""]
    if args.notes and args.notes.exists():
        lines += [args.notes.read_text()]
    out = args.out or args.results.parent / "README.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
