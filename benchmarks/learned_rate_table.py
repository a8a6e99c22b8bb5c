"""Rate/distortion table of the shipped learned codec on LFW pair images, beside JPEG 2000 and AVIF.

For every shipped rate point of ``facekit-<variant>``: mean bpp (whole container
bytes) and mean PSNR over the images of ``pairs.txt`` (the evaluation images: never
trained on); then for each classical codec the single setting whose mean bpp over the
same images is closest to (at most) the learned codec's, and its mean PSNR there
(:func:`facekit.codecs.match_bpp`). Writes ``results/learned_rate_table[_N].json``.

    python benchmarks/learned_rate_table.py --n 200       # 200 images, evenly spread
    python benchmarks/learned_rate_table.py               # all ~7,700 images (slow on CPU)
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
from facekit.metrics import rate_and_psnr  # noqa: E402


def pick(names: list[str], n: int | None) -> list[str]:
    """``n`` names spread evenly over the sorted list (all when ``n`` is None)."""
    if n is None or n >= len(names):
        return names
    idx = np.linspace(0, len(names) - 1, n).round().astype(int)
    return [names[i] for i in sorted(set(idx.tolist()))]


def main(argv: list[str] | None = None) -> int:
    from facekit.codecs.registry import VARIANTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="how many pair images (default: all)")
    p.add_argument("--root", default=None, help="LFW (default $FACEKIT_LFW)")
    p.add_argument("--variant", default="mse", choices=list(VARIANTS))
    p.add_argument("--entropy", action="store_true", help="also the -entropy variant (context model + range coder)")
    p.add_argument("--only-entropy", action="store_true", help="only the -entropy variant")
    p.add_argument("--compare", nargs="*", default=["jpeg2000", "avif"], help="classical codecs to match")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="output JSON (default results/learned_rate_table[_N].json)")
    args = p.parse_args(argv)

    import torch

    from facekit.codecs import get_codec, match_bpp
    from facekit.codecs.learned import LearnedCodec
    from facekit.data.lfw import open_lfw
    from facekit.errors import CodecError

    torch.set_num_threads(args.threads)
    lfw = open_lfw(args.root)
    names = pick(lfw.pair_images(), args.n)
    images = [lfw.load(n) for n in names]
    print(f"{len(images)} LFW pair images", file=sys.stderr)

    learned_codecs = [] if args.only_entropy else [LearnedCodec(args.variant, folder=args.weights)]
    if args.entropy or args.only_entropy:
        learned_codecs.append(LearnedCodec(args.variant, folder=args.weights, entropy=True))
    jobs = [(c, r) for c in learned_codecs for r in c.settings]
    rows = []
    for codec_l, rate in jobs:
        t0 = time.time()
        row = {"rate_point": rate, "codec": codec_l.name, **rate_and_psnr(codec_l, images, rate)}
        row["seconds"] = time.time() - t0
        for name in args.compare:
            try:
                codec = get_codec(name)
                setting, mean_bpp = match_bpp(codec, images, row["bpp"])
                res = rate_and_psnr(codec, images, setting)
                # a codec whose lowest setting overshoots the target cannot be compared there
                row[name] = {"setting": setting, **res, "reached_target": res["bpp"] <= 1.02 * row["bpp"]}
            except CodecError as e:
                row[name] = {"error": str(e)}
        rows.append(row)
        cmp = "  ".join(
            f"{n}: {row[n]['bpp']:.3f} bpp {row[n]['psnr']:.2f} dB" if "bpp" in row[n] else f"{n}: {row[n]['error']}"
            for n in args.compare
        )
        print(f"{codec_l.name} {rate}: {row['bpp']:.4f} bpp {row['psnr']:.2f} dB   {cmp}", file=sys.stderr)

    result = {
        "benchmark": "learned_rate_table",
        "variant": args.variant,
        "images": len(images),
        "image_names": "evenly spread over sorted pairs.txt images" if args.n else "all pairs.txt images",
        "psnr": "mean over images of per-image PSNR (RGB, 8-bit)",
        "matching": "one setting per classical codec whose mean bpp is at most, and closest to, the learned codec's "
        "(facekit.codecs.match_bpp); reached_target is false where even its lowest setting overshoots",
        "bpp": "8 * len(bytes) / (H * W), whole file (container / codestream) included",
        "rows": rows,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.platform(),
        "weights": learned_codecs[0].describe()["models"],
    }
    out = Path(args.out) if args.out else REPO / "results" / (f"learned_rate_table_{args.n}.json" if args.n else "learned_rate_table.json")
    write_json(out, result, indent=2)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
