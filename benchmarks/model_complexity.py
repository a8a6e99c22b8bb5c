"""Complexity of the second-generation codec (facekit.models.hyperprior): MACs per pixel and ms a face.

Counts the multiply-accumulates of ``compress`` (encoder) and ``decompress`` (decoder) of
one 250x250 face with torch's ``FlopCounterMode`` (MACs = FLOPs / 2; convolutions and
matrix products, the integer networks' float64 convolutions included; element-wise work
such as GDN's square roots is not counted), then times encode and decode on one thread,
face by face (median of ``--rounds`` rounds over ``--n`` images), beside OpenJPEG
(``jpeg2000``) and AVIF (``avif``) in the same run, each at the setting of its default
sweep whose bpp is nearest the learned codec's. Prints what it measures; ``--json`` writes it.

    python benchmarks/model_complexity.py --n 8 --rounds 3
    python benchmarks/model_complexity.py --weights runs/hp/model.pt --rate 0.3
    python benchmarks/model_complexity.py --dec-widths 48 32 16     # a smaller synthesis, untrained
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from facekit.codecs import get_codec  # noqa: E402
from facekit.models.hyperprior import FaceHyperprior, HyperpriorArch  # noqa: E402


def load_images(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` LFW pair images when ``$FACEKIT_LFW`` is set, else synthetic 250x250 images."""
    if os.environ.get("FACEKIT_LFW"):
        from facekit.data.lfw import open_lfw

        lfw = open_lfw(None)
        names = lfw.pair_images()
        idx = np.linspace(0, len(names) - 1, n).round().astype(int)
        return [lfw.load(names[i]) for i in idx], "LFW pairs.txt images"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (250, 250, 3), dtype=np.uint8) for _ in range(n)], "random 250x250"


def to_tensor(im: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255


def macs_per_pixel(fn, pixels: int) -> float:  # type: ignore[no-untyped-def]
    """Multiply-accumulates of ``fn()`` per pixel (FLOPs / 2 / pixels)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2.0 / pixels


def median_ms(fn, items, rounds: int) -> float:  # type: ignore[no-untyped-def]
    """Median over rounds of the mean ms per item of ``fn(item)``."""
    per_round = []
    for _ in range(rounds):
        t = time.perf_counter()
        for it in items:
            fn(it)
        per_round.append(1000 * (time.perf_counter() - t) / len(items))
    return statistics.median(per_round)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images to time (default 8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.5, help="the rate parameter t in [0, 1]")
    ap.add_argument("--weights", help="a training run's model.pt (default: untrained weights, same cost)")
    ap.add_argument("--enc-widths", type=int, nargs=3, help="analysis widths of an untrained variant (default 24 40 56)")
    ap.add_argument("--dec-widths", type=int, nargs=3, help="synthesis widths of an untrained variant (default 56 40 24)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    arch = HyperpriorArch()
    if args.enc_widths:
        arch = HyperpriorArch.from_dict({**arch.to_dict(), "enc_widths": args.enc_widths})
    if args.dec_widths:
        arch = HyperpriorArch.from_dict({**arch.to_dict(), "dec_widths": args.dec_widths})
    model = FaceHyperprior(arch)
    if args.weights:
        blob = torch.load(args.weights, map_location="cpu", weights_only=True)
        model = FaceHyperprior(HyperpriorArch.from_dict(blob["rate_point"]))
        model.load_state_dict(blob["state_dict"], strict=False)
    model.eval().freeze()
    images, source = load_images(args.n)
    xs = [to_tensor(im) for im in images]
    pixels = 250 * 250
    enc0 = model.compress(xs[0], args.rate)
    enc_macs = macs_per_pixel(lambda: model.compress(xs[0], args.rate), pixels)
    dec_macs = macs_per_pixel(lambda: model.decompress(enc0["strings"], enc0["shape"]), pixels)

    encoded = [model.compress(x, args.rate) for x in xs]  # warm-up and the payloads to decode
    bpp = float(np.mean([8 * len(e["strings"][0]) / pixels for e in encoded]))
    rows = {"facekit-hyperprior": {
        "encode_ms": median_ms(lambda x: model.compress(x, args.rate), xs, args.rounds),
        "decode_ms": median_ms(lambda e: model.decompress(e["strings"], e["shape"]), encoded, args.rounds),
        "bpp": bpp, "setting": args.rate}}
    for name in ("jpeg2000", "avif"):
        codec = get_codec(name)
        probe = {s: float(np.mean([8 * len(codec.encode(im, s)) / pixels for im in images[:4]])) for s in codec.settings}
        setting = min(probe, key=lambda s: abs(probe[s] - bpp))
        datas = [codec.encode(im, setting) for im in images]
        rows[name] = {
            "encode_ms": median_ms(lambda im, c=codec, s=setting: c.encode(im, s), images, args.rounds),
            "decode_ms": median_ms(lambda d, c=codec: c.decode(d), datas, args.rounds),
            "bpp": float(np.mean([8 * len(d) / pixels for d in datas])), "setting": setting}

    ours = rows["facekit-hyperprior"]
    print(f"facekit.models.hyperprior {model.arch}")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(f"MACs per pixel (250x250, FlopCounterMode): encoder {enc_macs:,.0f}, decoder {dec_macs:,.0f}")
    print(f"one thread, {args.n} {source}, median of {args.rounds} rounds; {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'codec':20s} {'setting':>8s} {'bpp':>7s} {'encode ms':>10s} {'decode ms':>10s} {'enc ratio':>10s} {'dec ratio':>10s}")
    for name, r in rows.items():
        print(f"{name:20s} {r['setting']!s:>8s} {r['bpp']:7.3f} {r['encode_ms']:10.2f} {r['decode_ms']:10.2f} "
              f"{ours['encode_ms'] / r['encode_ms']:10.2f} {ours['decode_ms'] / r['decode_ms']:10.2f}")
    print("(ratio: facekit-hyperprior's time over that codec's; targets: decode <= 10 ms, encode <= 20 ms)")
    result = {"macs_per_pixel": {"encoder": enc_macs, "decoder": dec_macs}, "rows": rows, "images": source,
              "n": args.n, "rounds": args.rounds, "threads": 1, "arch": model.arch.to_dict(),
              "load": os.getloadavg()[0], "weights": args.weights}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
