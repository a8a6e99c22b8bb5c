"""The fuzz targets: what ``tests/test_fuzz.py`` and ``benchmarks/fuzz_report.py`` feed bytes to.

Each :class:`Target` has a ``run(data)`` that either returns (and checks what it got:
a decoder must return an RGB ``uint8`` image no larger than its pixel budget) or lets
facekit's exception out; its ``seeds`` are corpus files to mutate and ``expected`` the
:class:`~facekit.errors.FacekitError` subclass a refusal must be.

Import it with the corpus folder on ``sys.path`` (``from targets import build_targets``).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facekit.errors import BitstreamError, FacekitError, ImageError

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
FKC = ("face.q1.fkc", "face.q3.fkc")
#: ``face.q1.fkc``'s payload in a format-1 container (what facekit wrote before format 2)
FKC_FORMAT1 = "face.q1.format1.fkc"
FKC_ENTROPY = "face.q1-ctx.fkc"
#: classical codec name (``get_codec``) -> its corpus file
CLASSIC_FILES = {
    "jpeg": "face.jpg",
    "jpeg2000": "face.j2k",
    "jpeg2000-pillow": "face-pillow.j2k",
    "webp": "face.webp",
    "avif": "face.avif",
    "png": "face.png",
}
#: issue 29's decoders (HEVC-intra, JPEG XL, resize-then-code) -> their corpus files; a target
#: is built where the codec's package is installed (see :func:`modern_targets`)
MODERN_FILES = {
    "hevc": "face.heic",
    "jpegxl": "face.jxl",
    "webp-resized": "face.webp.rz",
}
#: pixel budget every decoder's output must respect (the classical decoders' MAX_PIXELS)
MAX_PIXELS = 8192 * 8192


class UnexpectedResult(AssertionError):
    """A call returned, but what it returned is wrong (a crash for the fuzz report)."""


@dataclass
class Target:
    name: str
    run: Callable[[bytes], object]
    seeds: list[bytes]
    expected: type[FacekitError] = FacekitError
    #: mutate with ``reseal`` half the time (formats with checksums)
    reseal: bool = False
    notes: str = ""
    others: list[bytes] = field(default_factory=list)


def corpus_files() -> dict[str, bytes]:
    """Every data file of the corpus (not the code, not the metadata)."""
    names = [*FKC, FKC_FORMAT1, FKC_ENTROPY, *CLASSIC_FILES.values(), "face.q1.decoded.png", "face.q3.decoded.png",
             "face.tif", "face.gif", *MODERN_FILES.values()]
    return {n: (HERE / n).read_bytes() for n in names if (HERE / n).exists()}


def entropy_codec():  # type: ignore[no-untyped-def]
    """The ``-entropy`` learned codec on the corpus weights, or None where this facekit lacks it."""
    from facekit.codecs.learned import LearnedCodec

    if not (HERE / FKC_ENTROPY).exists():
        return None
    try:
        return LearnedCodec("mse", folder=WEIGHTS, entropy=True)
    except (TypeError, FacekitError, ImportError):
        return None


def check_image_result(out: object, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        raise UnexpectedResult(f"decoder returned {type(out).__name__} {getattr(out, 'shape', '')}, not RGB uint8")
    if out.shape[0] * out.shape[1] > max_pixels or min(out.shape[:2]) < 1:
        raise UnexpectedResult(f"decoder returned an image of {out.shape}, outside the pixel budget")
    return out


def _learned(codec) -> Callable[[bytes], object]:  # type: ignore[no-untyped-def]
    from facekit import container

    def run(data: bytes) -> object:
        out = check_image_result(codec.decode(data))
        c = container.parse(data)
        if out.shape != (c.height, c.width, 3):
            raise UnexpectedResult(f"decoded {out.shape}, the container declares {c.height}x{c.width}")
        return out

    return run


def _decoder(codec) -> Callable[[bytes], object]:  # type: ignore[no-untyped-def]
    def run(data: bytes) -> object:
        return check_image_result(codec.decode(data))

    return run


def build_targets(names: list[str] | None = None, workdir: Path | None = None) -> dict[str, Target]:
    """The targets (all, or those named), built once: codecs and weights are loaded here."""
    from facekit import container
    from facekit.codecs import get_codec
    from facekit.codecs.learned import LearnedCodec

    files = corpus_files()
    every = list(files.values())
    targets: dict[str, Target] = {}

    def want(name: str) -> bool:
        return names is None or name in names

    if want("container.parse"):
        targets["container.parse"] = Target(
            "container.parse", container.parse, [files[n] for n in (*FKC, FKC_FORMAT1)], BitstreamError, reseal=True
        )
    for name, codec, seeds in (
        ("learned.decode", LearnedCodec("mse", folder=WEIGHTS) if want("learned.decode") else None, (*FKC, FKC_FORMAT1)),
        ("learned-entropy.decode", entropy_codec() if want("learned-entropy.decode") else None, (FKC_ENTROPY,)),
    ):
        if codec is not None:
            targets[name] = Target(name, _learned(codec), [files[n] for n in seeds], BitstreamError, reseal=True)
    for codec_name, fname in CLASSIC_FILES.items():
        name = f"{codec_name}.decode"
        if want(name):
            targets[name] = Target(
                name, _decoder(get_codec(codec_name)), [files[fname]], BitstreamError,
                reseal=codec_name == "png",
            )
    targets.update(modern_targets(files, want))
    if want("cli.compress"):
        targets["cli.compress"] = Target(
            "cli.compress", _cli_compress(workdir),
            [files[n] for n in ("face.png", "face.jpg", "face.webp", "face.tif", "face.gif", FKC[0])]
            + [(HERE / "corpus.json").read_bytes()],
            FacekitError, reseal=True, notes="exit code 0 or 2 with 'facekit: error:'",
        )
    for t in targets.values():
        t.others = every
    return targets


def modern_targets(files: dict[str, bytes], want: Callable[[str], bool]) -> dict[str, Target]:
    """``<codec>.decode`` for each of :data:`MODERN_FILES` whose codec is installed."""
    from facekit.codecs import get_codec
    from facekit.errors import CodecError

    out = {}
    for codec_name, fname in MODERN_FILES.items():
        name = f"{codec_name}.decode"
        if not want(name) or fname not in files:
            continue
        try:
            codec = get_codec(codec_name)
        except CodecError:
            continue
        out[name] = Target(name, _decoder(codec), [files[fname]], BitstreamError)
    return out


def _cli_compress(workdir: Path | None) -> Callable[[bytes], object]:
    """``facekit compress FILE -o OUT`` on the bytes; exit 2 is a refusal, re-raised as ImageError."""
    from facekit.cli import main

    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="facekit-fuzz-cli-"))
    counter = [0]

    def run(data: bytes) -> object:
        counter[0] += 1
        folder = base / f"c{counter[0] % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = (".png", ".jpg", ".webp", ".gif", ".tif")[counter[0] % 5]
        src = folder / f"in{suffix}"
        src.write_bytes(data)
        out = folder / "out.fkc"
        if out.exists():
            out.unlink()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["compress", str(src), "-o", str(out), "--codec", "paper-mse", "--weights", str(WEIGHTS),
                         "--rate", "q1", "--quiet"])
        text = err.getvalue().strip()
        if code == 2:
            if not text.startswith("facekit: error:") or len(text) < 25:
                raise UnexpectedResult(f"exit 2 without a clear message: {text!r}")
            raise ImageError(text.removeprefix("facekit: error:").strip())
        if code != 0:
            raise UnexpectedResult(f"exit code {code}: {text!r}")
        from facekit import container

        container.parse(out.read_bytes())
        return code

    return run


def decode_corpus(device: str = "cpu") -> dict[str, np.ndarray]:
    """Every learned-codec file of the corpus, decoded on ``device``."""
    from facekit.codecs.learned import LearnedCodec

    out = {name: LearnedCodec("mse", folder=WEIGHTS, device=device).decode((HERE / name).read_bytes()) for name in FKC}
    if entropy_codec() is not None:
        codec = LearnedCodec("mse", folder=WEIGHTS, device=device, entropy=True)
        out[FKC_ENTROPY] = codec.decode((HERE / FKC_ENTROPY).read_bytes())
    return out


def digest(image: np.ndarray) -> str:
    """sha256 of an image's shape and pixels."""
    import hashlib

    return hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()
