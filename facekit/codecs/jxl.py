"""JPEG XL (libjxl, through ``pillow-jxl-plugin``): lossy VarDCT at quality 0-100.

* **Preset**: effort 8 by default (issue 29's best effort is 7-9). On 20 LFW faces at
  0.19-0.38 bpp (``benchmarks/classic_presets.py``) efforts 7 / 8 / 9 give a mean PSNR of
  30.92 / 31.36 / 31.37 dB at equal bpp, encoding in 29 / 205 / 455 ms a face: effort 9
  buys 0.01 dB for twice the time.
* **Chroma**: none subsampled (4:4:4): lossy JPEG XL codes the XYB colour space at full
  resolution and the plugin offers no subsampling.
* **File**: a bare codestream (no ISOBMFF container), one thread for encode and decode.
  Quality 0 is libjxl's largest distance (25), about 0.14 bpp on a 250x250 LFW face.

The decoder reads the codestream's size header first and refuses a declared size over the
pixel budget before libjxl allocates anything.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import BitstreamError, CodecError
from .base import Codec, check_image, int_setting
from .classic import MAX_PIXELS

CODESTREAM = b"\xff\x0a"
CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
#: width = height * num / den for the size header's ratio field 1..7
RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}
#: channels per pixel of the decoder's 8-bit modes
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


def jxl_module() -> Any:
    """The ``pillow_jxl`` module, or a CodecError that says how to install it."""
    try:
        import pillow_jxl
    except ImportError as e:
        raise CodecError("JPEG XL needs the pillow-jxl-plugin package (pip install pillow-jxl-plugin)") from e
    return pillow_jxl


def jxl_available() -> bool:
    try:
        jxl_module()
    except CodecError:
        return False
    return True


def library_version() -> str:
    """``libjxl Y via pillow-jxl-plugin X``: the libjxl version from the wheel's SBOM (its
    ``jpegxl-src`` component), else from :data:`LIBJXL`."""
    import json
    from importlib import metadata

    try:
        dist = metadata.distribution("pillow-jxl-plugin")
    except metadata.PackageNotFoundError:
        return "pillow-jxl-plugin (version unknown)"
    lib = LIBJXL.get(dist.version)
    for f in dist.files or ():
        if "sboms" in str(f) and str(f).endswith(".json"):
            try:
                sbom = json.loads(f.read_text() or "{}")
            except (OSError, ValueError):
                continue
            lib = next((c.get("version") for c in sbom.get("components", []) if c.get("name") == "jpegxl-src"), lib)
    return f"libjxl {lib or '(version unknown)'} via pillow-jxl-plugin {dist.version}"


#: the libjxl each pillow-jxl-plugin release bundles, where its wheel has no SBOM
LIBJXL = {"1.3.8": "0.12.0"}


class _Bits:
    """LSB-first bit reader (JPEG XL's order)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> int:
        v = 0
        for i in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise BitstreamError("jpegxl: the size header is cut short")
            v |= ((self.data[byte] >> (self.pos & 7)) & 1) << i
            self.pos += 1
        return v

    def u32_size(self) -> int:
        return 1 + self.read((9, 13, 18, 30)[self.read(2)])


def codestream_of(data: bytes) -> bytes:
    """The start of the codestream: the bytes themselves, or the first ``jxlc``/``jxlp`` box's."""
    if data[:2] == CODESTREAM:
        return data
    if data[:12] != CONTAINER:
        raise BitstreamError("jpegxl: not a JPEG XL file (no codestream or container signature)")
    i = 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        head = 8
        if size == 1:
            if i + 16 > len(data):
                break
            size, head = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif size == 0:
            size = len(data) - i
        if size < head:
            raise BitstreamError(f"jpegxl: box {kind!r} declares {size} bytes, less than its header")
        if kind == b"jbrd":
            raise BitstreamError("jpegxl: a JPEG-reconstruction file (jbrd box): not one this codec writes")
        if kind == b"jxlc":
            return data[i + head : i + size]
        if kind == b"jxlp":
            return data[i + head + 4 : i + size]
        i += size
    raise BitstreamError("jpegxl: the container holds no codestream box")


def declared_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the codestream's size header, read without decoding."""
    cs = codestream_of(data)
    if cs[:2] != CODESTREAM:
        raise BitstreamError("jpegxl: the codestream does not start with its signature")
    b = _Bits(cs[2:])
    small = b.read(1)
    height = 8 * (1 + b.read(5)) if small else b.u32_size()
    ratio = b.read(3)
    if ratio:
        num, den = RATIOS[ratio]
        width = height * num // den
    else:
        width = 8 * (1 + b.read(5)) if small else b.u32_size()
    return width, height


class JPEGXLCodec(Codec):
    """JPEG XL (VarDCT, effort 8, no chroma subsampling, one thread) at quality 0-100."""

    name = "jpegxl"
    settings = (0, 5, 10, 20, 30, 40, 50, 70)
    setting_range = (0, 99)

    def __init__(self, effort: int = 8, threads: int = 1) -> None:
        self._jxl = jxl_module()
        if not 1 <= int(effort) <= 10:
            raise CodecError(f"jpegxl: effort must be 1..10, got {effort!r}")
        if threads < 1:
            raise CodecError(f"jpegxl: threads must be at least 1, got {threads}")
        self.effort = int(effort)
        self.threads = threads

    def _num_threads(self) -> int:
        return 0 if self.threads == 1 else self.threads  # 0: the plugin's "no parallel runner"

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        q = int_setting(self.name, setting, 0, 99)  # 100 is lossless
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "JXL", quality=q, effort=self.effort, num_threads=self._num_threads(),
                                    use_container=False)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"jpegxl: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise BitstreamError("jpegxl: empty input")
        w, h = declared_size(data)
        if w * h > MAX_PIXELS:
            raise BitstreamError(f"jpegxl: declared size {w}x{h} is too large to decode")
        try:
            out = self._jxl.Decoder(num_threads=self._num_threads())(data)
        except BaseException as e:  # libjxl errors are OSError/RuntimeError; a Rust panic is a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit, MemoryError)):
                raise
            raise BitstreamError(f"jpegxl: cannot decode ({type(e).__name__}: {e})") from e
        jpeg, info, pixels = out[0], out[1], out[2]
        if jpeg:
            raise BitstreamError("jpegxl: a JPEG-reconstruction file: not one this codec writes")
        mode = str(info.mode)
        if mode not in MODES:
            raise BitstreamError(f"jpegxl: decoded pixel format {mode!r} is not 8-bit grey or RGB")
        iw, ih = int(info.width), int(info.height)
        if iw * ih > MAX_PIXELS or iw < 1 or ih < 1 or len(pixels) != iw * ih * MODES[mode]:
            raise BitstreamError(f"jpegxl: decoded {len(pixels)} bytes for a {iw}x{ih} {mode} image")
        arr = np.frombuffer(pixels, np.uint8).reshape(ih, iw, MODES[mode])
        if mode in ("L", "LA"):
            arr = np.repeat(arr[..., :1], 3, axis=2)
        return np.ascontiguousarray(arr[..., :3])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "library": library_version(),
                "preset": f"effort {self.effort}, VarDCT (XYB, no chroma subsampling), {self.threads} thread(s)"}
