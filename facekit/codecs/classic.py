"""The classical codecs the paper compares against, and modern ones beyond it.

* **JPEG** (Pillow/libjpeg): quality 1-95, ``optimize=True`` (same pixels, smaller
  Huffman tables: about half the bytes at the lowest rates).
* **JPEG 2000** (OpenJPEG, through glymur or Pillow): the 9/7 irreversible wavelet with
  the colour transform (``mct``), raw codestream (no JP2 boxes). The setting is the
  target rate in bpp; OpenJPEG's compression ratio is ``24 / bpp``. Pillow's writer must
  be given ``mct=1`` or it codes R, G and B separately and looks 2-7 dB worse than it is.
* **WebP** (libwebp): quality 0-100, ``method=6``.
* **AVIF** (libavif/libaom through Pillow >= 11.3): quality 0-100, speed 2 (best effort),
  chroma 4:2:0, one thread, where the Pillow build has it. ``AVIFCodec(speed=6)`` (the
  registry's ``avif-speed6``) is Pillow's default speed, which results before issue 29 used.

Chroma subsampling, compared at equal bpp on 20 LFW faces (``benchmarks/classic_presets.py``):
JPEG 4:2:0 (Pillow's default; 1.5 dB PSNR better than 4:4:4 on average over 0.2-0.57 bpp,
3 dB at 0.2 bpp); AVIF 4:2:0 (a tie with 4:4:4, 32.97 against 33.00 dB over 0.13-0.32 bpp,
and 4:2:0 is ahead at the lowest rate and reaches lower ones); WebP 4:2:0 (lossy WebP has
no other); JPEG 2000 none (4:4:4 with the colour transform).

All of them are measured the same way: ``bpp = 8 * len(bytes) / (H * W)``.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any

import numpy as np
from PIL import Image, features

from ..errors import BitstreamError, CodecError
from ..pngstream import check_png_stream
from .base import Codec, check_image, int_setting

#: refuse to decode anything larger than this (decompression bombs)
MAX_PIXELS = 8192 * 8192


def _pil_decode(data: bytes, fmt: str) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"{fmt}: expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise BitstreamError(f"{fmt}: empty input")
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BitstreamError(f"{fmt}: declared size {im.width}x{im.height} is too large to decode")
            if im.format is not None and fmt.upper() not in (im.format.upper(), "JPEG 2000"):
                if not (fmt == "JPEG2000" and im.format == "JPEG2000"):
                    raise BitstreamError(f"{fmt}: the bytes are a {im.format} file, not {fmt}")
            if im.format == "PNG":  # Pillow zero-fills the rows of a stream that ends early
                check_png_stream(data, BitstreamError, fmt)
            out = np.asarray(im.convert("RGB"))
    except BitstreamError:
        raise
    except (OSError, ValueError, SyntaxError, RuntimeError, EOFError, Image.DecompressionBombError) as e:
        # Pillow's plugins raise several types on damaged input (AVIF: RuntimeError)
        raise BitstreamError(f"{fmt}: cannot decode ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(out)


class JPEGCodec(Codec):
    """Baseline JPEG at quality 1-95 with optimised Huffman tables."""

    name = "jpeg"
    settings = (1, 2, 3, 5, 8, 12, 20, 30, 50, 75, 90)
    setting_range = (1, 95)

    def __init__(self, optimize: bool = True, subsampling: int | None = None) -> None:
        self.optimize = optimize
        self.subsampling = subsampling

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        q = int_setting(self.name, setting, 1, 95)
        buf = io.BytesIO()
        kw: dict[str, Any] = {"quality": q, "optimize": self.optimize}
        if self.subsampling is not None:
            kw["subsampling"] = self.subsampling
        Image.fromarray(image).save(buf, "JPEG", **kw)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "JPEG")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "library": f"libjpeg {features.version('jpg')}"}


class WebPCodec(Codec):
    """WebP (lossy) at quality 0-100, slowest/best method 6."""

    name = "webp"
    settings = (0, 5, 10, 20, 30, 40, 50, 70, 90)
    setting_range = (0, 100)

    def __init__(self, method: int = 6) -> None:
        if not features.check("webp"):
            raise CodecError("this Pillow build has no WebP support")
        self.method = method

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        q = int_setting(self.name, setting, 0, 100)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "WEBP", quality=q, method=self.method)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "WEBP")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "library": f"libwebp {features.version('webp')}"}


class AVIFCodec(Codec):
    """AVIF (AV1 intra) at quality 0-100 through Pillow's AVIF plugin.

    Best effort by default: speed 2, chroma 4:2:0, one encoder thread. On 8 LFW faces
    (250x250, quality 10 and 30) speed 2 codes at 540-580 ms a face for 4-6 % fewer bytes
    and +0.2-0.4 dB over speed 6 (40 ms); speed 1 (1.1-1.5 s) and speed 0 (1.7-2.4 s)
    save under 1.2 % more bytes and gain under 0.06 dB. ``speed=6`` is Pillow's default,
    the setting of the results measured before issue 29; ``threads=None`` lets libaom use
    every core (as Pillow does).
    """

    name = "avif"
    settings = (0, 5, 10, 20, 30, 40, 50, 70, 90)
    setting_range = (0, 100)

    def __init__(self, speed: int = 2, subsampling: str = "4:2:0", threads: int | None = 1) -> None:
        if not avif_available():
            raise CodecError(
                "AVIF is not available: this Pillow build has no AVIF support "
                "(Pillow >= 11.3 wheels include it; or install pillow-avif-plugin)"
            )
        if not 0 <= int(speed) <= 10:
            raise CodecError(f"avif: speed must be 0..10, got {speed!r}")
        if subsampling not in ("4:2:0", "4:2:2", "4:4:4"):
            raise CodecError(f"avif: subsampling must be 4:2:0, 4:2:2 or 4:4:4, got {subsampling!r}")
        self.speed = int(speed)
        self.subsampling = subsampling
        self.threads = threads

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        q = int_setting(self.name, setting, 0, 100)
        buf = io.BytesIO()
        kw: dict[str, Any] = {"quality": q, "speed": self.speed, "subsampling": self.subsampling}
        if self.threads is not None:
            kw["max_threads"] = self.threads
        Image.fromarray(image).save(buf, "AVIF", **kw)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "AVIF")

    def describe(self) -> dict[str, Any]:
        threads = "all cores" if self.threads is None else f"{self.threads} thread(s)"
        return {**super().describe(), "library": f"libavif {features.version('avif')}",
                "preset": f"speed {self.speed}, chroma {self.subsampling}, {threads}"}


class JPEG2000Codec(Codec):
    """JPEG 2000 with OpenJPEG's 9/7 wavelet and colour transform; setting = target bpp.

    ``backend='glymur'`` (default) writes through glymur, ``'pillow'`` through Pillow with
    ``mct=1``; both call OpenJPEG with the same parameters and give the same bytes.
    """

    name = "jpeg2000"
    settings = (0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0)
    setting_range = (0.01, 4.0)
    integer_setting = False

    def __init__(self, backend: str = "glymur") -> None:
        if backend not in ("glymur", "pillow"):
            raise CodecError(f"unknown JPEG 2000 backend {backend!r}; use 'glymur' or 'pillow'")
        if backend == "glymur" and not glymur_available():
            raise CodecError(
                "glymur cannot find the OpenJPEG library (Debian: apt-get install libopenjp2-7; "
                "conda-forge: openjpeg); or use JPEG2000Codec(backend='pillow')"
            )
        self.backend = backend

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        try:
            bpp = float(setting)
        except (TypeError, ValueError) as e:
            raise CodecError(f"jpeg2000: the setting is a target bpp, got {setting!r}") from e
        if not 0.001 <= bpp <= 24:
            raise CodecError(f"jpeg2000: target bpp {bpp} outside 0.001..24")
        ratio = 24.0 / bpp
        if self.backend == "pillow":
            buf = io.BytesIO()
            Image.fromarray(image).save(
                buf, "JPEG2000", quality_mode="rates", quality_layers=[ratio],
                irreversible=True, mct=1, no_jp2=True,
            )
            return buf.getvalue()
        import glymur

        with tempfile.TemporaryDirectory(prefix="facekit-j2k-") as tmp:
            path = os.path.join(tmp, "image.j2k")
            glymur.Jp2k(path, data=image, cratios=[ratio], irreversible=True, mct=True)
            with open(path, "rb") as f:
                return f.read()

    def decode(self, data: bytes) -> np.ndarray:
        if self.backend == "pillow":
            return _pil_decode(data, "JPEG2000")
        if not isinstance(data, (bytes, bytearray)) or len(data) < 2 or bytes(data[:2]) != b"\xff\x4f":
            if isinstance(data, (bytes, bytearray)) and data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
                return _pil_decode(data, "JPEG2000")
            raise BitstreamError("jpeg2000: not a JPEG 2000 codestream (missing SOC marker)")
        import glymur

        with tempfile.TemporaryDirectory(prefix="facekit-j2k-") as tmp:
            path = os.path.join(tmp, "image.j2k")
            with open(path, "wb") as f:
                f.write(bytes(data))
            try:
                j = glymur.Jp2k(path)
                h, w = j.shape[:2]
                if h * w > MAX_PIXELS:
                    raise BitstreamError(f"jpeg2000: declared size {w}x{h} is too large to decode")
                out = j[:]
            except BitstreamError:
                raise
            except Exception as e:  # glymur raises OSError, RuntimeError, IndexError, ...
                raise BitstreamError(f"jpeg2000: cannot decode ({type(e).__name__}: {e})") from e
        if out.ndim == 2:
            out = np.stack([out] * 3, axis=-1)
        if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
            raise BitstreamError(f"jpeg2000: decoded to {out.shape} {out.dtype}, not an 8-bit RGB image")
        return np.ascontiguousarray(out)

    def describe(self) -> dict[str, Any]:
        lib = "unknown"
        if self.backend == "glymur":
            import glymur

            lib = f"OpenJPEG {glymur.version.openjpeg_version} via glymur {glymur.__version__}"
        else:
            lib = f"OpenJPEG {features.version('jpg_2000')} via Pillow"
        return {**super().describe(), "library": lib, "setting": "target bpp (ratio 24/bpp), mct=1"}


class UncompressedCodec(Codec):
    """Lossless PNG: the reference point (``setting`` is ignored)."""

    name = "png"
    settings = (0,)

    def encode(self, image: np.ndarray, setting: Any = 0) -> bytes:
        image = check_image(image)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "PNG", optimize=True)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "PNG")


def avif_available() -> bool:
    """Whether the installed Pillow can write and read AVIF."""
    try:
        return bool(features.check("avif"))
    except (ValueError, AttributeError):
        return False


def glymur_available() -> bool:
    """Whether glymur is installed and found the OpenJPEG library."""
    try:
        import glymur
    except ImportError:
        return False
    return glymur.version.openjpeg_version not in ("0.0.0", "", None)
