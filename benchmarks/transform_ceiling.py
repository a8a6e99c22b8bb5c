"""How far bits can take the second-generation codec: its transforms' PSNR without quantisation.

For each rate ``t``, on ``--n`` LFW pair images (else synthetic ones), prints the mean PSNR of
``g_s(g_a(x))`` with the latents left unrounded (the analysis and synthesis transforms'
ceiling at that rate: no number of bits can decode better), beside the PSNR and bpp of real
coding (``compress`` then ``decompress``, the payload's bytes). When the coded PSNR at the top
rate is within a fraction of a dB of the ceiling, more bits or more training of the entropy
model cannot close a fidelity gap; larger transforms (``latent``, the widths) must.

    python benchmarks/transform_ceiling.py --store hyperprior
    python benchmarks/transform_ceiling.py --weights runs/hp/rd/checkpoint.pt --rates 0.5 0.75 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

# this folder's benchmark; importing it puts the repository on sys.path
from model_complexity import load_images, load_weights, to_tensor

# isort: split

from facekit.fileio import write_json  # noqa: E402
from facekit.metrics import psnr  # noqa: E402
from facekit.models.hyperprior import FaceHyperprior, HyperpriorArch  # noqa: E402
from facekit.training.rd import evaluate_rd  # noqa: E402


def to_image(x: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """An 8-bit ``(H, W, 3)`` image of a ``(1, 3, H', W')`` output in [0, 1], cropped to ``shape``."""
    return (x[0, :, : shape[0], : shape[1]].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


@torch.no_grad()
def ceiling_row(model: FaceHyperprior, images: list[np.ndarray], t: float) -> dict[str, float]:
    """Mean unquantised PSNR, and coded PSNR and bpp (:func:`~facekit.training.rd.evaluate_rd`), of ``images`` at rate ``t``."""
    ceiling = [psnr(im, to_image(model.unquantised(to_tensor(im), t), im.shape)) for im in images]
    coded = evaluate_rd(model, images, [t])
    return {"t": t, "ceiling_psnr": float(np.mean(ceiling)), "psnr": coded[f"val_psnr_t{t:g}"], "bpp": coded[f"val_bpp_t{t:g}"]}


def rate_sweep_parser(doc: str | None, n: int, rates: list[float]) -> argparse.ArgumentParser:
    """The options of a benchmark that codes ``--n`` images at ``--rates`` with one model (``n``, ``rates``: defaults)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=n, help=f"images (default {n})")
    ap.add_argument("--rates", type=float, nargs="+", default=rates, help="rates t in [0, 1]")
    ap.add_argument("--weights", help="a run's model.pt or checkpoint.pt, or a store file (default: untrained)")
    ap.add_argument("--store", help="a model in the weights store, by name")
    ap.add_argument("--json", help="write the rows here")
    return ap


def model_and_images(args: argparse.Namespace) -> tuple[FaceHyperprior, list[np.ndarray], str]:
    """One thread; the frozen model of ``--weights`` or ``--store``, and ``--n`` images with their source."""
    torch.set_num_threads(1)
    model = load_weights(args.weights, args.store, HyperpriorArch()).eval().freeze()
    return (model, *load_images(args.n))


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = rate_sweep_parser(__doc__, 50, [0.5, 0.75, 1.0]).parse_args(argv)
    model, images, source = model_and_images(args)
    print(f"{args.n} {source}; latent {model.arch.latent}, synthesis widths {model.arch.dec_widths}")
    print(f"{'t':>5s} {'bpp':>7s} {'coded dB':>9s} {'ceiling dB':>11s}")
    rows = []
    for t in args.rates:
        rows.append(row := ceiling_row(model, images, t))
        print(f"{t:5.3g} {row['bpp']:7.3f} {row['psnr']:9.2f} {row['ceiling_psnr']:11.2f}", flush=True)
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
