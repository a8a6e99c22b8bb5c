"""Where the bits of a region-of-interest codec go: bpp, whole-image PSNR and face PSNR.

A ROI codec (:mod:`facekit.codecs.roi`) flattens the background, so its whole-image PSNR is
meaningless; this prints, for each codec with and without ROI at the same setting, the
mean bpp (whole files), the whole-image PSNR and the PSNR over the pixels of the
recogniser's face chip (the square of dlib's 150x150 chip in the image, no margin),
over LFW pair images (the evaluation images, never trained on). Writes
``results/roi_face_psnr.json`` unless ``--out`` says otherwise.

    python benchmarks/roi_face_psnr.py --n 100
    python benchmarks/roi_face_psnr.py --n 100 --no-roi --jobs facekit-joint:q3 facekit-jointface:q3 \
        --out results/face_psnr_jointface.json      # the face-weighted codec against plain joint training
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekit.fileio import write_json  # noqa: E402
from facekit.metrics import psnr  # noqa: E402

#: (codec, setting) pairs; each is run as ``name`` and ``name-roi``
JOBS = [("facekit-joint", "q2"), ("facekit-joint", "q3"), ("facekit-joint", "q4"), ("facekit-joint", "q5"),
        ("avif", 0), ("avif", 10), ("avif", 30), ("jpeg2000", 0.05), ("jpeg2000", 0.1), ("jpeg2000", 0.2)]


def _job(text: str) -> tuple[str, str | int | float]:
    """``"avif:10"`` -> ``("avif", 10)``; ``"facekit-joint:q3"`` -> ``("facekit-joint", "q3")``."""
    name, sep, setting = text.rpartition(":")
    if not sep or not name or not setting:
        raise SystemExit(f"--jobs wants CODEC:SETTING, got {text!r}")
    for kind in (int, float):
        try:
            return name, kind(setting)
        except ValueError:
            pass
    return name, setting


def main() -> None:
    from facekit.codecs import get_codec
    from facekit.codecs.base import bits_per_pixel
    from facekit.codecs.roi import FaceRegionFinder, region_mask
    from facekit.data import open_lfw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None)
    ap.add_argument("--n", type=int, default=100, help="images, spread evenly over the pair images")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "roi_face_psnr.json")
    ap.add_argument("--jobs", nargs="+", metavar="CODEC:SETTING", default=None,
                    help="instead of the built-in list, e.g. facekit-jointface:q3 avif:10")
    ap.add_argument("--no-roi", action="store_true", help="only the codecs named, not their -roi versions too")
    args = ap.parse_args()
    jobs = JOBS if args.jobs is None else [_job(j) for j in args.jobs]
    lfw = open_lfw(args.root)
    names = sorted(lfw.pair_images())
    names = [names[i] for i in sorted(set(np.linspace(0, len(names) - 1, args.n).round().astype(int).tolist()))]
    images = [lfw.load(n) for n in names]
    finder = FaceRegionFinder()
    chips = [region_mask(finder.find(im), im.shape[:2], cell=1, margin=0) for im in images]
    rows = []
    print(f"{len(images)} LFW pair images; face = the pixels of the recogniser's chip "
          f"({100 * np.mean([c.mean() for c in chips]):.0f} % of the image on average)")
    print(f"{'codec':20s} {'setting':>7s} {'bpp':>7s} {'PSNR':>6s} {'face PSNR':>9s}")
    for base, setting in jobs:
        for name in (base,) if args.no_roi else (base, f"{base}-roi"):
            try:
                codec = get_codec(name)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"{name}: skipped ({type(e).__name__}: {e})")
                continue
            # one finder (margin 4, the default) for every ROI codec: each face is detected once
            if getattr(codec, "roi", None) is not None:
                codec.roi = finder
            elif getattr(codec, "finder", None) is not None:
                codec.finder = finder
            t = time.time()
            datas = codec.encode_batch(images, setting)
            decoded = codec.decode_batch(datas)
            row = {
                "codec": codec.name, "setting": setting,
                "bpp": float(np.mean([bits_per_pixel(d, *im.shape[:2]) for d, im in zip(datas, images, strict=True)])),
                "psnr": float(np.mean([psnr(im, de) for im, de in zip(images, decoded, strict=True)])),
                "face_psnr": float(np.mean([psnr(im, de, c) for im, de, c in zip(images, decoded, chips, strict=True)])),
                "seconds": round(time.time() - t, 1),
            }
            rows.append(row)
            print(f"{name:20s} {setting!s:>7s} {row['bpp']:7.4f} {row['psnr']:6.2f} {row['face_psnr']:9.2f}", flush=True)
    write_json(args.out, {
        "images": len(images), "what": "mean over images; face PSNR over the pixels of dlib's chip square",
        "machine": platform.processor() or platform.machine(), "rows": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
