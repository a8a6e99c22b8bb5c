"""Issue 29's full-LFW sweep of the strongest classical yardsticks: one process, one thread.

1. **Plan** (on ``--plan-images`` evenly spaced LFW pair images): the settings of HEVC-intra
   and JPEG XL whose mean bpp is at most, and closest to, each of their target rates
   (:func:`facekit.codecs.match_bpp`); AVIF at its best-effort preset at the qualities of
   the committed speed-6 sweep; and, for the resize-then-code forms, the candidates that
   reach 0.03 bpp at all, each rate-searched over its scales (the scale with the best PSNR
   wins) at every resized target. The two candidates with the best mean PSNR over those
   targets are swept. The plan, with each candidate's bpp, PSNR and ms a face, is written
   to ``plan.json`` in ``--out-dir``.
2. **Sweep**: every planned point on all 6,000 LFW pairs with the dlib recogniser
   (:func:`facekit.evaluate.evaluate`, embeddings cached), in the order HEVC, JPEG XL,
   AVIF, resized; each codec to its own ``<codec>.json`` in ``--out-dir``, merged point by
   point as each finishes, so a stopped sweep keeps what it measured (and, rerun, takes
   finished points from the embedding cache). ``README.txt`` there is rewritten after each
   point with the progress and the estimated time left.

    OMP_NUM_THREADS=1 python benchmarks/modern_sweep.py --out-dir /work/sweeps/issue29
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: codec -> targets (bpp) its settings are matched to; AVIF keeps the committed qualities
TARGETS = {"hevc": (0.1, 0.15, 0.2, 0.3, 0.5), "jpegxl": (0.15, 0.2, 0.3, 0.4, 0.5)}
AVIF_QUALITIES = (0, 10, 20, 30, 50)
RESIZED_TARGETS = (0.03, 0.05, 0.075, 0.1, 0.15)
RESIZED_CANDIDATES = ("webp", "jpegxl", "jpeg2000", "jpeg", "avif", "hevc")


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}", flush=True)


def mean_ms(codec: Any, images: list[np.ndarray], setting: Any) -> tuple[float, float, float]:
    """``(bpp, psnr, encode+decode ms a face)`` of ``codec`` at ``setting`` over ``images``."""
    from facekit.metrics import psnr

    t = time.perf_counter()
    datas = [codec.encode(im, setting) for im in images]
    decs = [codec.decode(d) for d in datas]
    ms = 1000 * (time.perf_counter() - t) / len(images)
    bpp = float(np.mean([8 * len(d) / (im.shape[0] * im.shape[1]) for d, im in zip(datas, images, strict=True)]))
    return bpp, float(np.mean([psnr(a, b) for a, b in zip(images, decs, strict=True)])), ms


def make_plan(images: list[np.ndarray]) -> dict[str, Any]:
    from facekit.codecs import get_codec, match_bpp
    from facekit.codecs.resize import format_setting

    plan: dict[str, Any] = {"points": {}, "measured": {}, "resized_candidates": {}}
    for name, targets in TARGETS.items():
        codec = get_codec(name)
        rows = []
        for t in targets:
            s, _ = match_bpp(codec, images, t)
            bpp, ps, ms = mean_ms(codec, images, s)
            rows.append({"target": t, "setting": s, "bpp": bpp, "psnr": ps, "ms": ms})
            log(f"plan {name} target {t}: setting {s} bpp {bpp:.4f} psnr {ps:.2f} {ms:.0f} ms")
        plan["measured"][name] = rows
        plan["points"][name] = sorted({r["setting"] for r in rows})
    avif = get_codec("avif")
    rows = []
    for q in AVIF_QUALITIES:
        bpp, ps, ms = mean_ms(avif, images, q)
        rows.append({"setting": q, "bpp": bpp, "psnr": ps, "ms": ms})
        log(f"plan avif q {q}: bpp {bpp:.4f} psnr {ps:.2f} {ms:.0f} ms")
    plan["measured"]["avif"] = rows
    plan["points"]["avif"] = list(AVIF_QUALITIES)
    scores = {}
    for base in RESIZED_CANDIDATES:
        codec = get_codec(f"{base}-resized")
        floor = min(codec.scales)
        lowest = mean_ms(codec, images, format_setting(floor, codec.inner.settings[0]))[0]
        entry: dict[str, Any] = {"lowest_bpp": lowest, "lowest_setting": format_setting(floor, codec.inner.settings[0])}
        if lowest > RESIZED_TARGETS[0] * 1.02:
            entry["note"] = f"cannot reach {RESIZED_TARGETS[0]} bpp (its file headers alone are larger)"
            log(f"plan {base}-resized: lowest {lowest:.4f} bpp, not a candidate")
            plan["resized_candidates"][base] = entry
            continue
        rows = []
        for t in RESIZED_TARGETS:
            s, _ = codec.match_rate(images, t)
            bpp, ps, ms = mean_ms(codec, images, s)
            rows.append({"target": t, "setting": s, "bpp": bpp, "psnr": ps, "ms": ms})
            log(f"plan {base}-resized target {t}: {s} bpp {bpp:.4f} psnr {ps:.2f} {ms:.0f} ms")
        entry["points"] = rows
        entry["mean_psnr"] = float(np.mean([r["psnr"] for r in rows]))
        scores[base] = entry["mean_psnr"]
        plan["resized_candidates"][base] = entry
    best = sorted(scores, key=scores.get, reverse=True)[:2]
    plan["resized_best_two"] = best
    for base in best:
        rows = plan["resized_candidates"][base]["points"]
        plan["measured"][f"{base}-resized"] = rows
        plan["points"][f"{base}-resized"] = list(dict.fromkeys(r["setting"] for r in rows))
    return plan


def write_readme(out_dir: Path, plan: dict[str, Any], done: list[dict], started: float, cmd: str,
                 commit: str = "") -> None:
    """Progress and the estimated time left: each point's time = the measured embedding time
    a point (the first point's time less its coding time) + 7,701 x the codec's ms a face."""
    n_img = 7701
    jobs = [(c, s) for c, ss in plan["points"].items() for s in ss]
    ms = {c: float(np.mean([r["ms"] for r in rows])) for c, rows in plan["measured"].items()}
    if done:
        first = done[0]
        embed_s = max(60.0, first["seconds"] - n_img * ms[first["codec"]] / 1000)
    else:
        embed_s = 15 * 60.0  # before the first point: the committed sweeps' ~15 min a point
    finished = {(d["codec"], repr(d["setting"])) for d in done}
    left = [(c, s) for c, s in jobs if (c, repr(s)) not in finished]
    est = {c: embed_s + n_img * ms[c] / 1000 for c in plan["points"]}
    left_s = sum(est[c] for c, _ in left)
    total_s = sum(est[c] for c, _ in jobs)
    lines = [
        "Issue 29 sweep: HEVC-intra, JPEG XL, AVIF (speed 2), resize-then-code; all 6,000 LFW pairs, dlib-resnet,",
        "one process, one thread (OMP_NUM_THREADS=1). Each codec's points in <codec>.json here (not in results/).",
        f"command: {cmd}",
        f"code: {REPO} (commit {commit or 'unknown'})",
        f"started: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(started))}",
        f"updated: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        f"points: {len(done)} of {len(jobs)} done",
        f"estimate: {total_s / 3600:.1f} h in all ({embed_s / 60:.1f} min a point for reading, aligning and "
        f"embedding, {'from the first point, at least 1 min' if done else 'assumed before the first point'}, "
        f"plus 7,701 x each codec's encode+decode ms from plan.json); about {left_s / 3600:.1f} h left, "
        f"ETA {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + left_s))}",
        "",
        "plan (setting: mean bpp / PSNR / encode+decode ms a face on the plan images):",
    ]
    for c, rows in plan["measured"].items():
        lines.append(f"  {c}: " + "; ".join(f"{r['setting']}: {r['bpp']:.3f}/{r['psnr']:.1f}/{r['ms']:.0f}" for r in rows))
    lines.append(f"  resized forms swept (best mean PSNR over {list(RESIZED_TARGETS)}): {plan.get('resized_best_two')}")
    for b, e in plan.get("resized_candidates", {}).items():
        lines.append(f"    {b}-resized: " + (f"mean PSNR {e['mean_psnr']:.2f} dB" if "mean_psnr" in e else e.get("note", "")))
    lines += ["", "done (codec, setting, minutes, bpp, accuracy, TAR@FAR=1e-3):"]
    for d in done:
        lines.append(f"  {d['codec']} {d['setting']}: {d['seconds'] / 60:.1f} min, {d['bpp']:.4f} bpp, "
                     f"{d['acc']:.4f}, {d['tar']:.3f}")
    (out_dir / "README.txt").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--plan-images", type=int, default=20)
    p.add_argument("--plan-only", action="store_true")
    p.add_argument("--per-fold", type=int, default=None, help="pairs a fold (default all 600: the full protocol)")
    p.add_argument("--only", nargs="*", default=None, help="sweep only these codecs of the plan")
    args = p.parse_args(argv)

    import torch

    from facekit.data.lfw import open_lfw
    from facekit.evaluate import evaluate, load_results, merge_results, save_results
    from facekit.fileio import write_json

    torch.set_num_threads(1)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cmd = " ".join([sys.executable, *sys.argv])
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    if not commit and (REPO / "COMMIT").exists():  # a snapshot of the code (git archive) names its commit here
        commit = (REPO / "COMMIT").read_text().strip()

    plan_path = out_dir / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        log(f"plan read from {plan_path}")
    else:
        lfw = open_lfw(None)
        names = lfw.pair_images()
        images = [lfw.load(names[i]) for i in np.linspace(0, len(names) - 1, args.plan_images).round().astype(int)]
        plan = make_plan(images)
        plan.update(images=args.plan_images, code_commit=commit, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_json(plan_path, plan)
        log(f"plan written to {plan_path}: {plan['points']}")
    done: list[dict] = []
    write_readme(out_dir, plan, done, started, cmd, commit)
    if args.plan_only:
        return 0
    for codec, settings in plan["points"].items():
        if args.only is not None and codec not in args.only:
            continue
        path = out_dir / f"{codec}.json"
        for s in settings:
            t = time.time()
            res = evaluate(codecs={codec: [s]}, recognizer="dlib-resnet", device="cpu", per_fold=args.per_fold,
                           progress=False)
            res["sweep"] = {"issue": 29, "code_commit": commit, "command": cmd,
                            "note": "benchmarks/modern_sweep.py: one process of one thread, points in plan order"}
            if path.exists():
                res = merge_results(load_results(path), res, by_point=True)
            save_results(res, path)
            pt = next(p for p in res["codecs"][codec] if repr(p["setting"]) == repr(s))
            done.append({"codec": codec, "setting": s, "seconds": time.time() - t, "bpp": pt["bpp"],
                         "acc": pt["acc_mean"], "tar": pt["tar_at_far_0.001"]})
            log(f"{codec} {s}: {done[-1]['seconds'] / 60:.1f} min, bpp {pt['bpp']:.4f}, acc {pt['acc_mean']:.4f}, "
                f"TAR@FAR=1e-3 {pt['tar_at_far_0.001']:.3f}")
            write_readme(out_dir, plan, done, started, cmd, commit)
    log("sweep finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
