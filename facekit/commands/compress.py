"""``facekit compress`` / ``facekit decompress``: the learned codec on files and folders.

``facekit compress IN... -o OUT [--rate q3] [--variant mse] [--entropy]`` writes one
``.fkc`` container per input image (``--entropy``: range-coded with the fitted context
model instead of PNG; ``--roi``: only the face the recogniser looks at is coded, see
:mod:`facekit.roi`; ``--roi --entropy --background q1``: the rest of the image too, at
q1); ``facekit decompress IN... -o OUT`` writes one PNG per container. Inputs are files or folders (searched recursively; a folder's layout is kept
under ``OUT``). Every output is written to a temporary name in its folder and renamed
when complete, so an interrupted run never leaves a partial file under a final name.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..codecs.registry import VARIANTS
from ..errors import CodecError, ImageError

SUFFIX = ".fkc"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff", ".gif")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compress",
        help="compress images with the learned codec (.fkc files)",
        description="Compress images (files or folders) with the learned face codec into .fkc containers.",
    )
    c.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .fkc file for one input)")
    c.add_argument("--rate", default="q3", help="rate point, q1 (lowest) .. q5 (highest); default q3")
    c.add_argument("--variant", default="mse", choices=list(VARIANTS),
                   help="trained variant (default mse; jointrate is trained for --entropy)")
    c.add_argument(
        "--entropy", action="store_true", help="range-code with the fitted context model instead of PNG (smaller)"
    )
    c.add_argument(
        "--roi", action="store_true",
        help="code only the face (dlib's detector finds it; an image without a face is coded whole); "
        "with --entropy only the face's codes are range-coded, the smallest files",
    )
    c.add_argument("--roi-margin", type=float, default=4.0, metavar="PX", help="pixels kept around the face chip")
    c.add_argument(
        "--background", default=None, metavar="RATE",
        help="with --roi --entropy: code the background too, at this lower rate point (e.g. q1), "
        "instead of leaving it flat; the face is decoded exactly as without it",
    )
    c.add_argument("--device", default=None, help="torch device (default cpu)")
    c.add_argument("--weights", default=None, metavar="DIR", help="weights folder (default: the shipped weights)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_compress)

    d = sub.add_parser(
        "decompress",
        help="decompress .fkc files to PNG",
        description="Decompress .fkc containers (files or folders) to PNG images.",
    )
    d.add_argument("inputs", nargs="+", metavar="IN", help=".fkc files or folders holding them")
    d.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .png file for one input)")
    d.add_argument("--device", default=None, help="torch device (default cpu)")
    d.add_argument("--weights", default=None, metavar="DIR", help="weights folder (default: the shipped weights)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run_decompress)


def collect(inputs: Sequence[str], suffixes: Iterable[str]) -> list[tuple[Path, Path]]:
    """``(source, relative output stem)`` for every file named or found under a folder."""
    suffixes = tuple(s.lower() for s in suffixes)
    out: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise CodecError(f"folder {p} holds no {'/'.join(suffixes)} files")
            out += [(f, Path(p.name) / f.relative_to(p).with_suffix("")) for f in found]
        elif p.is_file():
            out.append((p, Path(p.stem)))
        else:
            raise CodecError(f"input {p} does not exist")
    stems = [s for _, s in out]
    if len(set(stems)) != len(stems):
        dup = sorted({str(s) for s in stems if stems.count(s) > 1})
        raise CodecError(f"several inputs would write the same output: {', '.join(dup)}")
    return out


#: the largest image ``facekit compress`` accepts (declared size, checked before decoding)
MAX_COMPRESS_PIXELS = 4096 * 4096


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB uint8; :class:`ImageError` for anything that is not an image.

    The declared size is checked before any pixel is decoded (decompression bombs).
    """
    from ..imageio import open_image

    try:
        return open_image(path, max_pixels=MAX_COMPRESS_PIXELS)
    except ImageError as e:
        raise ImageError(f"{path} is not an image facekit can read: {e}") from e


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _targets(pairs: list[tuple[Path, Path]], output: str, suffix: str) -> list[tuple[Path, Path]]:
    out = Path(output)
    if len(pairs) == 1 and out.suffix.lower() == suffix and not out.is_dir():
        return [(pairs[0][0], out)]
    if out.exists() and not out.is_dir():
        raise CodecError(f"output {out} exists and is not a folder")
    return [(src, out / stem.with_name(stem.name + suffix)) for src, stem in pairs]


def _progress(items: list, desc: str, quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", file=sys.stderr)


def run_compress(args: argparse.Namespace) -> int:
    from .. import container
    from ..codecs.learned import LearnedCodec

    jobs = _targets(collect(args.inputs, IMAGE_SUFFIXES), args.output, SUFFIX)
    codec = LearnedCodec(args.variant, device=args.device, folder=args.weights, entropy=args.entropy,
                         roi=args.roi, roi_margin=args.roi_margin, background=args.background)
    if args.rate not in codec.settings:
        raise CodecError(f"unknown rate point {args.rate!r}; choose from {', '.join(codec.settings)}")
    bits = pixels = 0
    for src, dst in _progress(jobs, "compress", args.quiet):
        image = read_image(src)
        data = codec.encode(image, args.rate)
        container.parse(data)  # never write a file we could not read back
        atomic_write(dst, data)
        bits += 8 * len(data)
        pixels += image.shape[0] * image.shape[1]
    if not args.quiet:
        print(f"{len(jobs)} image(s) -> {args.output}: {bits / max(pixels, 1):.4f} bpp on average", file=sys.stderr)
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    import io

    from .. import container
    from ..codecs.learned import LearnedCodec, split_model_name

    jobs = _targets(collect(args.inputs, (SUFFIX,)), args.output, ".png")
    codecs: dict[tuple[str, bool], LearnedCodec] = {}
    for src, dst in _progress(jobs, "decompress", args.quiet):
        data = src.read_bytes()
        try:
            variant, _, entropy = split_model_name(container.parse(data).model)
        except CodecError as e:
            raise type(e)(f"{src}: {e}") from e
        key = (variant, entropy)
        if key not in codecs:
            codecs[key] = LearnedCodec(variant, device=args.device, folder=args.weights, entropy=entropy)
        try:
            image = codecs[key].decode(data)
        except CodecError as e:
            raise type(e)(f"{src}: {e}") from e
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        atomic_write(dst, buf.getvalue())
    return 0
