"""``facekit compress`` / ``facekit decompress``: the learned codecs on files and folders.

``facekit compress IN... -o OUT [--codec facekit] [--rate q3 | --target-bpp X]`` writes one
``.fkc`` file per input image with a learned codec of the catalogue (``facekit codecs``; the
same names as ``facekit evaluate``): ``facekit`` (the default, the recommended codec),
``facekit-roi`` (the face first, the background at q1), ``paper``, ``paper-mse``, or the second
generation, ``facekit-hyperprior``, whose ``--rate`` is also any number in ``[0, 1]``.
``--target-bpp X`` chooses each image's setting instead: the highest rate whose file takes at
most ``X`` bits per pixel (:func:`facekit.codecs.rate.setting_for_budget`: a bisection of ``t``
for a continuous rate, a choice among the rate points otherwise). ``facekit decompress IN... -o
OUT`` writes one PNG per file, whichever codec wrote it (the file's magic says which format,
the container or FKH1 header names the model). Inputs are files or folders (searched
recursively); the tree below a folder is mirrored under ``OUT``. Every output is written to a
temporary name in its folder and renamed when complete, so an interrupted run never leaves a
partial file under a final name, and a run that stops part-way says which outputs it wrote.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..codecs.base import Codec
from ..codecs.names import HYPERPRIOR, HYPERPRIOR_REFINED, VARIANTS, LearnedSpec, ModelId
from ..codecs.rate import continuous_range
from ..codecs.registry import CODECS, RECOMMENDED, codec_names, get_codec
from ..errors import CodecError, FacekitError, ImageError, WeightsError
from ..fileio import atomic_write
from ..threads import keep_freed_memory

SUFFIX = ".fkc"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff", ".gif")
#: the listed learned codecs (one model per rate point)
LEARNED = tuple(n for n in codec_names() if LearnedSpec.parse(n) is not None)
#: the listed codecs compress can write: the learned ones and the second generation (decompress reads any)
WRITABLE = (*LEARNED, HYPERPRIOR, HYPERPRIOR_REFINED)
#: the rate when neither --rate nor --target-bpp is given
DEFAULT_RATE = "q3"


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compress",
        help=f"compress images with a learned codec (.fkc files; default {RECOMMENDED})",
        description="Compress images (files or folders) with a learned face codec into .fkc containers.",
    )
    c.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders of images")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .fkc file for one input)")
    c.add_argument("--codec", default=None, metavar="NAME",
                   help=f"a codec of `facekit codecs` that writes .fkc files: {', '.join(WRITABLE)} (default {RECOMMENDED})")
    c.add_argument("--rate", default=None,
                   help=f"rate point, q1 (lowest) .. q5 (highest), default {DEFAULT_RATE}; for {HYPERPRIOR} "
                   "also any number in [0, 1] (0: fewest bits)")
    c.add_argument("--target-bpp", default=None, metavar="X",
                   help="instead of --rate: each image at the highest rate whose file takes at most X bits per pixel")
    c.add_argument("--roi-margin", type=float, default=4.0, metavar="PX",
                   help="with --codec facekit-roi: pixels kept around the face chip")
    # the spelling before --codec, still read: --variant V [--entropy] [--roi] [--background RATE]
    c.add_argument("--variant", default=None, choices=list(VARIANTS), help=argparse.SUPPRESS)
    c.add_argument("--entropy", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--roi", action="store_true", help=argparse.SUPPRESS)
    c.add_argument("--background", default=None, metavar="RATE", help=argparse.SUPPRESS)
    c.add_argument("--device", default=None, help="torch device (default cpu)")
    c.add_argument("--weights", default=None, metavar="DIR", help="weights folder (default: the shipped weights)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_compress)

    d = sub.add_parser(
        "decompress",
        help="decompress .fkc files to PNG",
        description="Decompress .fkc containers (files or folders, from any learned codec) to PNG images.",
    )
    d.add_argument("inputs", nargs="+", metavar="IN", help=".fkc files or folders holding them")
    d.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .png file for one input)")
    d.add_argument("--device", default=None, help="torch device (default cpu)")
    d.add_argument("--weights", default=None, metavar="DIR", help="weights folder (default: the shipped weights)")
    d.add_argument("--synthesis", default="float32", metavar="ARITHMETIC",
                   help=f"{HYPERPRIOR} files: the synthesis' arithmetic, float32 (default) or bfloat16 (the same "
                        "PSNR, pixels a few levels apart, a decode about 15 % faster where the CPU has bfloat16 dot products)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run_decompress)


def collect(inputs: Sequence[str], suffixes: Iterable[str]) -> list[tuple[Path, Path]]:
    """``(source, relative output stem)`` for every file named or found under a folder.

    A file's stem is its name; a file found under a folder keeps its path below that folder.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    out: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise CodecError(f"folder {p} holds no {'/'.join(suffixes)} files")
            out += [(f, f.relative_to(p).with_suffix("")) for f in found]
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


def read_image(path: Path, on_convert: Callable[[str], None] | None = None) -> np.ndarray:
    """An image file as RGB uint8; :class:`ImageError` for anything that is not an image.

    The declared size is checked before any pixel is decoded (decompression bombs).
    """
    from ..imageio import open_image

    try:
        return open_image(path, max_pixels=MAX_COMPRESS_PIXELS, on_convert=on_convert)
    except ImageError as e:
        raise ImageError(f"{path} is not an image facekit can read: {e}") from e




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


def _old_flags(args: argparse.Namespace) -> list[str]:
    return [f for f, given in (("--variant", args.variant is not None), ("--entropy", args.entropy),
                               ("--roi", args.roi), ("--background", args.background is not None)) if given]


def compress_spec(args: argparse.Namespace) -> LearnedSpec:
    """The learned codec the command line asks for: ``--codec``, or the older ``--variant``/``--entropy``/``--roi``/``--background``."""
    old = _old_flags(args)
    if not old:
        name = args.codec or RECOMMENDED
        spec = LearnedSpec.parse(name)
        if name not in CODECS or spec is None:
            what = "is not a learned codec" if name in CODECS else "is not a codec"
            raise CodecError(f"--codec {name} {what}; compress writes one of {', '.join(WRITABLE)} (see facekit codecs)")
        return spec
    if args.codec is not None:
        raise CodecError(f"{' '.join(old)} cannot be combined with --codec (--codec facekit-roi codes the face first)")
    if args.background is not None and not (args.roi and args.entropy):
        raise CodecError("--background needs --roi and --entropy (or use --codec facekit-roi)")
    return LearnedSpec(args.variant or "mse", args.entropy, args.roi, args.background)


def compress_codec(args: argparse.Namespace) -> Codec:
    """The codec the command line asks for (:func:`compress_spec`'s learned codec, or ``facekit-hyperprior``),
    on the weights of ``--weights`` and the device of ``--device``.

    Example: ``compress_codec(build_parser().parse_args(["compress", "a.png", "-o", "o", "--codec", "paper"]))``.
    """
    if args.codec in (HYPERPRIOR, HYPERPRIOR_REFINED):
        if _old_flags(args):
            raise CodecError(f"{' '.join(_old_flags(args))} cannot be combined with --codec {args.codec}")
        return get_codec(args.codec, folder=args.weights, device=args.device)
    from ..codecs.learned import LearnedCodec

    spec = compress_spec(args)
    return LearnedCodec.from_spec(spec, device=args.device, folder=args.weights, roi_margin=args.roi_margin)


def parse_rate(codec: Codec, text: str) -> Any:
    """The setting ``--rate TEXT`` asks of ``codec``: a rate point's name, or for a codec with a
    continuous rate (:func:`~facekit.codecs.rate.continuous_range`) a number in its range too.

    One :class:`CodecError` naming the flag and what it takes otherwise.
    Example: ``parse_rate(hyperprior_codec, "0.4")`` -> 0.4; ``parse_rate(paper_codec, "q2")`` -> ``"q2"``.
    """
    span = continuous_range(codec)
    presets = list(getattr(codec, "presets", None) or [])
    if span is not None:
        if text in presets:
            return text
        try:
            t = float(text)
        except ValueError:
            t = math.nan
        if not span[0] <= t <= span[1]:  # NaN and unparsable text fail here too
            named = f" or one of {', '.join(presets)}" if presets else ""
            raise CodecError(f"--rate {text}: {codec.name} takes a number in [{span[0]:g}, {span[1]:g}]{named}")
        return t
    if text not in codec.settings:
        raise CodecError(f"--rate {text}: {codec.name} has no such rate point; choose from "
                         f"{', '.join(str(s) for s in codec.settings)} (a number only for {HYPERPRIOR})")
    return text


def parse_target(text: str) -> float:
    """``--target-bpp TEXT`` as a positive number of bits per pixel; CodecError naming the flag otherwise."""
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise CodecError(f"--target-bpp {text}: expected a positive number of bits per pixel (e.g. 0.2)")
    return x


def _say(line: str, quiet: bool) -> None:
    """A line on stderr, above the progress bar when there is one."""
    if quiet:
        print(line, file=sys.stderr)
    else:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)


def _written_note(written: list[Path], total: int) -> str:
    if not written:
        return f"no output written of {total}"
    shown = ", ".join(str(p) for p in written[:10]) + (f" and {len(written) - 10} more" if len(written) > 10 else "")
    return f"{len(written)} of {total} outputs written before it: {shown}"


def run_batch(jobs: list[tuple[Path, Path]], step, desc: str, quiet: bool) -> list[Path]:  # type: ignore[no-untyped-def]
    """``step(src, dst)`` for every job; a failure part-way names the outputs already written."""
    keep_freed_memory()  # each image reuses the memory the last one freed (facekit.threads)
    written: list[Path] = []
    try:
        for src, dst in _progress(jobs, desc, quiet):
            step(src, dst)
            written.append(dst)
    except FacekitError as e:
        if len(jobs) > 1:
            raise type(e)(f"{e} ({_written_note(written, len(jobs))})") from e
        raise
    except BaseException:
        if len(jobs) > 1:
            print(f"facekit {desc}: stopped; {_written_note(written, len(jobs))}", file=sys.stderr)
        raise
    return written


def run_compress(args: argparse.Namespace) -> int:
    from .. import container
    from ..codecs.rate import setting_for_budget

    if args.rate is not None and args.target_bpp is not None:
        raise CodecError("--rate and --target-bpp together: give one (--target-bpp chooses each image's rate)")
    target = parse_target(args.target_bpp) if args.target_bpp is not None else None
    rate = args.rate if args.rate is not None else DEFAULT_RATE
    jobs = _targets(collect(args.inputs, IMAGE_SUFFIXES), args.output, SUFFIX)
    codec = compress_codec(args)
    background = getattr(codec, "background", None)
    if target is None and background is not None and rate in getattr(codec, "rate_points", ()) and rate not in codec.settings:
        if args.background is not None:
            raise CodecError(f"--background {background} must be a lower rate point than --rate {rate}")
        raise CodecError(f"--codec {codec.name} codes the background at {background}, so --rate must be "
                         f"above it: {', '.join(codec.settings)}")
    setting = parse_rate(codec, rate) if target is None else None
    totals: dict[str, Any] = {"bits": 0, "pixels": 0, "converted": 0, "settings": []}

    def step(src: Path, dst: Path) -> None:
        notes: list[str] = []
        image = read_image(src, notes.append)
        if notes:
            totals["converted"] += 1
            _say(f"{src}: {notes[0]}", args.quiet)
        chosen = setting
        if target is not None:
            try:
                chosen, _ = setting_for_budget(codec, image, target)
            except CodecError as e:
                raise CodecError(f"--target-bpp on {src}: {e}") from e
        data = codec.encode(image, chosen)
        container.parse_any(data)  # never write a file we could not read back
        atomic_write(dst, data, fsync=True)
        totals["bits"] += 8 * len(data)
        totals["pixels"] += image.shape[0] * image.shape[1]
        totals["settings"].append(chosen)

    run_batch(jobs, step, "compress", args.quiet)
    if not args.quiet:
        converted = f"; {totals['converted']} converted to RGB (see above)" if totals["converted"] else ""
        how = rate if target is None else f"--target-bpp {target:g} (settings {_span(totals['settings'])})"
        print(f"{len(jobs)} image(s) -> {args.output} with {codec.name} {how}: "
              f"{totals['bits'] / max(totals['pixels'], 1):.4f} bpp on average{converted}", file=sys.stderr)
    return 0


def _span(settings: list[Any]) -> str:
    """``"0.31..0.52"`` or ``"q2..q4"``: the settings chosen, lowest to highest."""
    shown = sorted({f"{s:.3g}" if isinstance(s, float) else str(s) for s in settings},
                   key=lambda v: (len(v), v) if v.startswith("q") else (0, float(v)))
    return shown[0] if len(shown) == 1 else f"{shown[0]}..{shown[-1]}"


def run_decompress(args: argparse.Namespace) -> int:
    import io

    from .. import container
    from ..codecs.learned import LearnedCodec
    from ..models.coding_transforms import synthesis_dtype

    synthesis_dtype(args.synthesis)  # an unknown arithmetic: one error before any file is read
    jobs = _targets(collect(args.inputs, (SUFFIX,)), args.output, ".png")
    codecs: dict[tuple[str, bool], Codec] = {}

    def step(src: Path, dst: Path) -> None:
        data = src.read_bytes()
        try:
            if container.file_kind(data) == "hyperprior":  # FKH1: the second generation
                key = (HYPERPRIOR, False)
                if key not in codecs:
                    codecs[key] = get_codec(HYPERPRIOR, folder=args.weights, device=args.device, synthesis=args.synthesis)
            else:
                ident: ModelId = container.parse(data).model_key()
                key = (ident.variant, ident.entropy)
                if key not in codecs:
                    codecs[key] = LearnedCodec(ident.variant, device=args.device, folder=args.weights, entropy=ident.entropy)
            image = codecs[key].decode(data)
        except (CodecError, WeightsError) as e:
            raise type(e)(f"{src}: {e}") from e
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        atomic_write(dst, buf.getvalue(), fsync=True)

    run_batch(jobs, step, "decompress", args.quiet)
    return 0
