"""What a synthesis of other widths costs: fine-tune one on a stored codec's own bits, compare PSNR at equal rate.

The decoder's time goes mostly to ``g_s`` (``results/README.md``, model card). oneDNN's AVX-512
kernels compute 16 output channels at a time, so widths that are not multiples of 16 (56, 40, 24)
run as if padded to the next (64, 48, 32). This experiment keeps everything of a stored model but
``g_s`` (analysis, hyperprior, context, gains: the files are byte for byte the same), starts a
synthesis of other widths from the stored one (each layer keeps the channels the next layer reads
most, by weight norm; GDN's matrices cut alike), and fine-tunes only it, for ``log10(MSE)`` on
random crops of LFW's identity-disjoint split at a random rate ``t`` per batch (the
straight-through training pass of :meth:`~facekit.models.hyperprior.FaceHyperprior.forward`). It
prints, on the recipe's 32 held-out faces coded for real at five rates, the PSNR of the stored
model and of the new synthesis on the same bits. Run it also with the stored widths: the same
fine-tuning without a cut, the control that separates the two effects (a jointly trained
synthesis was not trained for PSNR alone). ``results/synthesis_width.json`` started from the
weights shipped before, whose synthesis was 56-40-24 (``hyperprior@0cec36fc`` in the store):

    python benchmarks/synthesis_width.py --store hyperprior@0cec36fc --widths 48 32 16 --time-limit 3600 --out runs/gs48
    python benchmarks/synthesis_width.py --store hyperprior@0cec36fc --widths 56 40 24 --time-limit 3600 --out runs/gs56
    python benchmarks/model_complexity.py --weights runs/gs48/model.pt --refine-steps 0   # its speed

``--images DIR`` trains and checks on a folder of images instead. ``--out`` receives ``model.pt`` (the whole model, loadable by ``model_complexity.py --weights``)
and ``result.json`` (the held-out table before and after, steps, seconds). One thread.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import facekit  # noqa: E402, F401  (before torch, so that facekit's thread defaults apply: facekit.threads)

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from facekit.codecs.hyperprior import HyperpriorCodec  # noqa: E402
from facekit.fileio import write_json  # noqa: E402
from facekit.metrics import rate_and_psnr  # noqa: E402
from facekit.models.hyperprior import FaceHyperprior, HyperpriorArch  # noqa: E402
from facekit.training.data import training_sets  # noqa: E402
from facekit.zoo import load_hyperprior  # noqa: E402

RATES = (0.0, 0.25, 0.5, 0.75, 1.0)


def narrower(model: FaceHyperprior, widths: tuple[int, int, int]) -> FaceHyperprior:
    """A copy of ``model`` whose ``g_s`` has ``widths``, cut from ``model.g_s``: each layer keeps the
    output channels that the next layer's weights read most (largest norm), in their order."""
    arch = HyperpriorArch.from_dict({**model.arch.to_dict(), "dec_widths": tuple(widths)})
    new = FaceHyperprior(arch)
    new.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("g_s.")}, strict=False)
    old_convs = [model.g_s[i] for i in (0, 2, 4, 6)]
    keep = []
    for nxt, width in zip(old_convs[1:], widths, strict=True):
        w = nxt.weight.detach()
        reads = w if isinstance(nxt, torch.nn.ConvTranspose2d) else w.transpose(0, 1)  # (in, ...) either way
        norms = reads.flatten(1).norm(dim=1)
        keep.append(norms.argsort(descending=True)[:width].sort().values)
    with torch.no_grad():
        ins = [None, *keep]
        for j, (src, dst) in enumerate(zip(old_convs, [new.g_s[i] for i in (0, 2, 4, 6)], strict=True)):
            w = src.weight.detach()
            if isinstance(src, torch.nn.ConvTranspose2d):  # (in, out, k, k)
                w = w if ins[j] is None else w[ins[j]]
                dst.weight.copy_(w[:, keep[j]])
                dst.bias.copy_(src.bias.detach()[keep[j]])
            else:  # the last convolution (12, in, k, k)
                dst.weight.copy_(w[:, ins[j]])
                dst.bias.copy_(src.bias.detach())
        for j, i in enumerate((1, 3, 5)):
            k = keep[j]
            new.g_s[i].gamma.copy_(model.g_s[i].gamma.detach()[k][:, k])
            new.g_s[i].beta.copy_(model.g_s[i].beta.detach()[k])
    return new


def psnr_table(model: FaceHyperprior, images: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean bpp (whole files) and PSNR (dB) of ``images`` coded for real at each of :data:`RATES`."""
    codec = HyperpriorCodec(model)
    return {str(t): rate_and_psnr(codec, images, t) for t in RATES}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs=3, default=[48, 32, 16])
    ap.add_argument("--store", default="hyperprior", help="the stored model to start from (default: the shipped one)")
    ap.add_argument("--steps", type=int, default=100_000, help="at most this many steps (cosine schedule over them)")
    ap.add_argument("--time-limit", type=float, default=3600.0, help="stop after this many seconds of training")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=32, help="held-out faces of the split (the recipe's 32)")
    ap.add_argument("--images", help="a folder of images to use instead of LFW's identity-disjoint split")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stored = load_hyperprior(args.store)[0]
    train, val, _ = training_sets(args.held_out, images_dir=args.images)
    before = psnr_table(stored, val)
    model = narrower(stored, tuple(args.widths))
    start = psnr_table(model, val)
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("g_s."))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    t0, step, losses = time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - t0 < args.time_limit:
        lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))) * min(1.0, (step + 1) / 20)
        for group in opt.param_groups:
            group["lr"] = lr
        x = train.batch(step, args.batch, args.seed, args.crop, 0.05)
        loss = torch.log10(F.mse_loss(model(x)["x_hat"], x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 1000 == 0:
            print(f"step {step}: mean log10 MSE {np.mean(losses[-1000:]):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    after = psnr_table(model, val)
    torch.save({"arch": model.arch.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
    result = {"widths": args.widths, "store": args.store, "steps": step, "seconds": seconds, "batch": args.batch,
              "crop": args.crop, "lr": args.lr, "held_out": len(val), "stored": before, "cut": start, "tuned": after}
    write_json(out / "result.json", result, indent=2)
    print(f"widths {tuple(args.widths)}: {step} steps in {seconds:.0f} s; held-out PSNR dB (bpp) at t:")
    for t in RATES:
        s, c, a = before[str(t)], start[str(t)], after[str(t)]
        print(f"  t={t:<5} stored {s['psnr']:.2f} ({s['bpp']:.3f})  cut {c['psnr']:.2f}  tuned {a['psnr']:.2f} ({a['bpp']:.3f})"
              f"  tuned - stored {a['psnr'] - s['psnr']:+.2f}")
    return result


if __name__ == "__main__":
    main()
