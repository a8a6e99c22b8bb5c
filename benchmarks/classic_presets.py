"""Presets and chroma subsampling of the classical codecs, compared at equal bpp on LFW faces.

For each configuration the codec codes ``--n`` LFW pair images (250x250) at a few qualities;
the mean bpp and PSNR of each quality make a rate-distortion curve, and the curves of one
codec are compared by their PSNR interpolated (linearly in log bpp) at common rates inside
all of them. Prints a table and writes ``--out`` (JSON). One thread, as the sweeps run.

    python benchmarks/classic_presets.py --n 20 --out /tmp/presets.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: codec -> {configuration label: (get_codec keyword arguments, qualities)}
CONFIGS = {
    "jpeg": {"4:2:0": ({"subsampling": 2}, (3, 5, 8, 12, 20, 30)),
             "4:4:4": ({"subsampling": 0}, (3, 5, 8, 12, 20, 30))},
    "avif": {"speed 2, 4:2:0": ({"speed": 2, "subsampling": "4:2:0"}, (0, 10, 20, 30, 40)),
             "speed 2, 4:4:4": ({"speed": 2, "subsampling": "4:4:4"}, (0, 10, 20, 30, 40))},
    "hevc": {"slower, 4:2:0": ({"chroma": 420}, (0, 10, 20, 30, 40, 50)),
             "slower, 4:4:4": ({"chroma": 444}, (0, 10, 20, 30, 40, 50))},
    "jpegxl": {"effort 7": ({"effort": 7}, (0, 5, 10, 20, 30)),
               "effort 8": ({"effort": 8}, (0, 5, 10, 20, 30)),
               "effort 9": ({"effort": 9}, (0, 5, 10, 20, 30))},
}


def curve(codec, images, qualities) -> list[dict]:
    from facekit.metrics import psnr

    rows = []
    for q in qualities:
        t = time.perf_counter()
        datas = [codec.encode(im, q) for im in images]
        enc_ms = 1000 * (time.perf_counter() - t) / len(images)
        decs = [codec.decode(d) for d in datas]
        rows.append({"quality": q, "bpp": float(np.mean([8 * len(d) / im.shape[0] / im.shape[1] for d, im in zip(datas, images, strict=True)])),
                     "psnr": float(np.mean([psnr(a, b) for a, b in zip(images, decs, strict=True)])), "encode_ms": enc_ms})
    return rows


def psnr_at(rows: list[dict], bpp: float) -> float:
    xs = np.log([r["bpp"] for r in rows])
    order = np.argsort(xs)
    return float(np.interp(np.log(bpp), xs[order], np.array([r["psnr"] for r in rows])[order]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--codecs", nargs="+", default=list(CONFIGS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from facekit.codecs import get_codec
    from facekit.data.lfw import open_lfw
    from facekit.fileio import write_json

    lfw = open_lfw(None)
    names = lfw.pair_images()
    images = [lfw.load(names[i]) for i in np.linspace(0, len(names) - 1, args.n).round().astype(int)]
    result: dict = {"images": args.n, "source": "LFW pairs.txt images, evenly spaced", "codecs": {}}
    for cname in args.codecs:
        curves = {label: curve(get_codec(cname, **kw), images, qs) for label, (kw, qs) in CONFIGS[cname].items()}
        lo = max(min(r["bpp"] for r in c) for c in curves.values())
        hi = min(max(r["bpp"] for r in c) for c in curves.values())
        grid = [float(b) for b in np.geomspace(lo, hi, 5)] if hi > lo else []
        at = {label: [psnr_at(c, b) for b in grid] for label, c in curves.items()}
        result["codecs"][cname] = {"curves": curves, "common_bpp": grid, "psnr_at_common_bpp": at,
                                   "mean_psnr": {k: float(np.mean(v)) if v else None for k, v in at.items()}}
        print(f"{cname}: common bpp {', '.join(f'{b:.3f}' for b in grid)}")
        for label, c in curves.items():
            ms = np.mean([r["encode_ms"] for r in c])
            print(f"  {label:16s} PSNR {' '.join(f'{v:6.2f}' for v in at[label])}  mean {np.mean(at[label]) if grid else float('nan'):.2f} dB"
                  f"  encode {ms:.0f} ms/face  bpp {min(r['bpp'] for r in c):.3f}-{max(r['bpp'] for r in c):.3f}", flush=True)
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
