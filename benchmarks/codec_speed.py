"""Encode/decode speed (images per second, ms a face) of the learned codec on CPU, beside
JPEG 2000, AVIF, HEVC-intra and JPEG XL.

A batch of 250x250 images (LFW pair images when ``$FACEKIT_LFW`` is set, else synthetic
faces-sized images) is encoded and decoded once per codec after a warm-up; each learned
codec is timed image by image and as one batch (``encode_batch``/``decode_batch``), at each
of its rate points, and the classical codecs at the settings that match its mean bpp.
``--codecs`` with no names and ``--at-bpp`` time the classical codecs alone, at settings
matching those rates. Every classical codec runs on one thread (its preset's default).
Writes ``results/codec_speed.json``; ``--merge`` keeps the rows of codecs not timed this run.

    python benchmarks/codec_speed.py --n 32 --threads 1
    python benchmarks/codec_speed.py --n 16 --codecs facekit --merge
    python benchmarks/codec_speed.py --n 16 --codecs --at-bpp 0.1 0.2 0.4 --merge
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_images(n: int, root: str | None) -> tuple[list[np.ndarray], str]:
    if root or os.environ.get("FACEKIT_LFW"):
        from facekit.data.lfw import open_lfw

        lfw = open_lfw(root)
        names = lfw.pair_images()
        idx = np.linspace(0, len(names) - 1, n).round().astype(int)
        return [lfw.load(names[i]) for i in idx], "LFW pairs.txt images"
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:250, 0:250].astype(np.float32)
    out = []
    for _ in range(n):
        f = rng.uniform(5, 20, 3)
        img = 127 + 100 * np.stack([np.sin(x / f[0]), np.cos(y / f[1]), np.sin((x + y) / f[2])], -1)
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return out, "synthetic 250x250"


def timed(fn, *args):
    """``(seconds, result)`` of one call."""
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def encode_all(codec, images, setting) -> list[bytes]:
    return [codec.encode(im, setting) for im in images]


def decode_all(codec, datas) -> list[np.ndarray]:
    return [codec.decode(d) for d in datas]


def forget_faces(codec) -> None:
    """Clear a region-of-interest codec's face cache, so each timed encode detects the face
    as it would on a new image (the cache serves a sweep that codes one image many times)."""
    finder = getattr(codec, "roi", None)
    if finder is not None:
        finder.clear_cache()


def time_learned(learned, images, rates, compare) -> list[dict]:
    """Rows for one learned codec at each rate point, each followed by its matched classical rows.

    For the region-of-interest codecs every encode timing includes finding the face.
    """

    n = len(images)
    rows: list[dict] = []
    for rate in rates:
        learned.encode(images[0], rate)  # load + warm up
        forget_faces(learned)
        t_enc, datas = timed(encode_all, learned, images, rate)
        t_dec, _ = timed(decode_all, learned, datas)
        forget_faces(learned)
        t_enc_b, _ = timed(learned.encode_batch, images, rate)
        t_dec_b, _ = timed(learned.decode_batch, datas)
        bpp = float(np.mean([8 * len(d) / (250 * 250) for d in datas]))
        rows.append({
            "codec": learned.name, "setting": rate, "bpp": bpp,
            "encode_img_per_s": n / t_enc, "decode_img_per_s": n / t_dec,
            "encode_batch_img_per_s": n / t_enc_b, "decode_batch_img_per_s": n / t_dec_b,
            **({"encode_includes": "face detection"} if getattr(learned, "roi", None) is not None else {}),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
        rows += time_classical(images, bpp, compare)
    return rows


def time_classical(images, bpp: float, compare, **tag) -> list[dict]:
    """Rows for each codec of ``compare`` at the setting whose mean bpp on 8 images matches ``bpp``."""
    from facekit.codecs import get_codec, match_bpp
    from facekit.errors import CodecError

    n = len(images)
    rows: list[dict] = []
    for name in compare:
        try:
            codec = get_codec(name)
            setting, _ = match_bpp(codec, images[:8], bpp)
        except CodecError as e:
            rows.append({"codec": name, "error": str(e), **tag})
            continue
        codec.encode(images[0], setting)
        t_enc, cdatas = timed(encode_all, codec, images, setting)
        t_dec, _ = timed(decode_all, codec, cdatas)
        d = codec.describe()
        rows.append({
            "codec": name, "setting": setting, "bpp": float(np.mean([8 * len(d) / (250 * 250) for d in cdatas])),
            "encode_img_per_s": n / t_enc, "decode_img_per_s": n / t_dec,
            "encode_ms": 1000 * t_enc / n, "decode_ms": 1000 * t_dec / n,
            **({"preset": d["preset"]} if "preset" in d else {}), **tag,
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def keep_rows(old: list[dict], timed_now: list[str], alone: bool = False) -> list[dict]:
    """``old``'s rows minus the learned codecs timed now and the classical rows that follow them
    (and, with ``alone``, minus the classical rows timed on their own: ``at_bpp`` rows)."""
    from facekit.codecs.names import canonical_name, is_learned

    kept, drop = [], False
    for row in old:
        if is_learned(str(row.get("codec", ""))):
            drop = canonical_name(row["codec"]) in {canonical_name(t) for t in timed_now}
        if not drop and not (alone and "at_bpp" in row):
            kept.append(row)
    return kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=32, help="images in the batch")
    p.add_argument("--root", default=None)
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--codecs", nargs="*", default=["paper-mse"], help="learned codecs to time (none: --at-bpp)")
    p.add_argument("--rates", nargs="*", default=None, help="learned rate points (default all shipped)")
    p.add_argument("--compare", nargs="*", default=["jpeg2000", "avif", "hevc", "jpegxl"])
    p.add_argument("--at-bpp", nargs="*", type=float, default=[],
                   help="also time the --compare codecs alone at settings matching these rates")
    p.add_argument("--out", default=str(REPO / "results" / "codec_speed.json"))
    p.add_argument("--merge", action="store_true",
                   help="keep --out's rows of learned codecs not timed now (each with its classical rows)")
    args = p.parse_args(argv)

    import torch

    from facekit.codecs import get_codec
    from facekit.codecs.learned import LearnedCodec
    from facekit.fileio import write_json

    torch.set_num_threads(args.threads)
    images, source = load_images(args.n, args.root)
    n = len(images)
    rows: list[dict] = []
    for cname in args.codecs:
        learned = get_codec(cname, **({"folder": args.weights} if args.weights else {}))
        if not isinstance(learned, LearnedCodec):
            raise SystemExit(f"codec_speed: {cname} is not a learned codec")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows += [{**r, "timed": now} for r in time_learned(learned, images, args.rates or learned.settings, args.compare)]
    for bpp in args.at_bpp:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows += [{**r, "timed": now} for r in time_classical(images, bpp, args.compare, at_bpp=bpp)]
    if args.merge and Path(args.out).exists():
        rows = keep_rows(json.loads(Path(args.out).read_text())["rows"], args.codecs, alone=bool(args.at_bpp)) + rows
    result = {
        "benchmark": "codec_speed", "images": n, "source": source, "size": "250x250",
        "device": "cpu", "torch_threads": args.threads, "torch": torch.__version__,
        "machine": platform.platform(), "processor": platform.processor(), "rows": rows,
        "note": "matched classical settings at the learned codec's mean bpp (or at_bpp) on 8 of the images; "
                "classical codecs on one thread (their presets' default)",
    }
    out = Path(args.out)
    write_json(out, result, indent=2)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
