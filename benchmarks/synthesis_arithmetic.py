"""What the bfloat16 synthesis changes: the same files decoded with float32 and with bfloat16 convolutions.

For each rate ``t``, on ``--n`` LFW pair images (else synthetic ones), codes every image once
and decodes it twice (``decompress(..., synthesis=)``, :data:`facekit.models.coding_transforms.SYNTHESIS`),
then prints the mean bpp, the mean PSNR of each decode, the largest pixel difference between
the two, and the share of pixels that differ. ``benchmarks/model_complexity.py`` times both.

    python benchmarks/synthesis_arithmetic.py --store hyperprior --n 300
"""

from __future__ import annotations

import numpy as np
import torch

# this folder's benchmarks; importing them puts the repository on sys.path
from model_complexity import to_tensor, weights_label, weights_record
from transform_ceiling import model_and_images, rate_sweep_parser, to_image

# isort: split

from facekit.fileio import write_json  # noqa: E402
from facekit.metrics import psnr  # noqa: E402
from facekit.models.hyperprior import FaceHyperprior  # noqa: E402


@torch.no_grad()
def arithmetic_row(model: FaceHyperprior, images: list[np.ndarray], t: float) -> dict[str, float]:
    """Mean bpp and PSNR of both decodes of ``images`` at rate ``t``, and how far their pixels are apart."""
    bpp, p32, p16, worst, differ = [], [], [], 0, []
    for im in images:
        enc = model.compress(to_tensor(im), t)
        a, b = (to_image(model.decompress(enc["strings"], enc["shape"], s)["x_hat"], im.shape) for s in ("float32", "bfloat16"))
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        bpp.append(8 * len(enc["strings"][0]) / (im.shape[0] * im.shape[1]))
        p32.append(psnr(im, a))
        p16.append(psnr(im, b))
        worst, differ = max(worst, int(diff.max())), differ + [float((diff > 0).mean())]
    return {"t": t, "bpp": float(np.mean(bpp)), "psnr_float32": float(np.mean(p32)), "psnr_bfloat16": float(np.mean(p16)),
            "max_pixel_difference": worst, "pixels_differing": float(np.mean(differ))}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = rate_sweep_parser(__doc__, 100, [0.0, 0.25, 0.5, 0.75, 1.0]).parse_args(argv)
    model, images, source = model_and_images(args)
    weights = weights_record(args.weights, args.store, model)
    print(f"{args.n} {source}; weights {weights_label(weights)}")
    print(f"{'t':>5s} {'bpp':>7s} {'float32 dB':>11s} {'bfloat16 dB':>12s} {'diff dB':>8s} {'max px diff':>12s} {'px differ':>10s}")
    rows = []
    for t in args.rates:
        rows.append(r := arithmetic_row(model, images, t))
        print(f"{t:5.2f} {r['bpp']:7.4f} {r['psnr_float32']:11.3f} {r['psnr_bfloat16']:12.3f} "
              f"{r['psnr_bfloat16'] - r['psnr_float32']:+8.4f} {r['max_pixel_difference']:12d} {r['pixels_differing']:10.1%}")
    if args.json:
        write_json(args.json, {"images": source, "n": args.n, "weights": weights, "rows": rows}, indent=2)
    return rows


if __name__ == "__main__":
    main()
