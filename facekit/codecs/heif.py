"""HEVC intra in a HEIF file (x265 to write, libde265 to read, both through ``pillow-heif``).

* **Preset**: x265 ``slower`` (issue 29's best effort; libheif's default, ``slow``, gives
  within 0.5 % of its bytes and 0.03 dB of its PSNR on four 250x250 LFW faces at quality
  30), libheif's default tune (``ssim``), 8 bits, quality 0-100 (libheif maps it to x265's
  CRF).
* **Chroma**: 4:2:0 by default (``chroma=444`` for the other). On 20 LFW faces
  (``benchmarks/classic_presets.py``) 4:2:0 gives 25.8 / 30.1 / 33.7 / 37.0 dB PSNR at
  0.10 / 0.17 / 0.27 / 0.44 bpp against 4:4:4's 23.3 / 29.5 / 33.4 / 37.0: better at
  every rate below ~0.45 bpp (4:4:4 wins only above, 40.9 against 40.4 dB at 0.71 bpp).
* **Threads**: one (x265's pool limited to one thread and one frame thread), so timings are
  those of one core (two threads gave the same bytes on five LFW faces at two qualities).

The rate is the whole HEIF file, container boxes and parameter sets included (about 400
bytes: a flat 32x32 image codes to 432), counted like every other codec:
``bpp = 8 * len(bytes) / (H * W)``. Quality 0 is about 0.10 bpp on a 250x250 LFW face.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..errors import BitstreamError, CodecError
from .base import Codec, check_image, int_setting
from .classic import MAX_PIXELS

#: x265 presets from fastest to slowest
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


def heif_module() -> Any:
    """The ``pillow_heif`` module, or a CodecError that says how to install it."""
    try:
        import pillow_heif
    except ImportError as e:
        raise CodecError("HEVC-intra needs the pillow-heif package (pip install pillow-heif)") from e
    return pillow_heif


def hevc_available() -> bool:
    """Whether pillow-heif is installed with an HEVC encoder."""
    try:
        info = heif_module().libheif_info()
    except (CodecError, AttributeError):
        return False
    return bool(info.get("HEIF"))


class HEVCCodec(Codec):
    """HEVC-intra (HEIF, x265 preset ``slower``, chroma 4:2:0, one thread) at quality 0-100."""

    name = "hevc"
    settings = (0, 10, 20, 30, 40, 50, 60, 70)
    setting_range = (0, 100)

    def __init__(self, preset: str = "slower", chroma: int = 420, threads: int = 1) -> None:
        mod = heif_module()
        if not hevc_available():
            raise CodecError("this pillow-heif build has no HEVC encoder (libheif without x265)")
        if preset not in PRESETS:
            raise CodecError(f"hevc: unknown x265 preset {preset!r}; one of {', '.join(PRESETS)}")
        if chroma not in (420, 422, 444):
            raise CodecError(f"hevc: chroma must be 420, 422 or 444, got {chroma!r}")
        if threads < 1:
            raise CodecError(f"hevc: threads must be at least 1, got {threads}")
        self._heif = mod
        self.preset = preset
        self.chroma = chroma
        self.threads = threads

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        q = int_setting(self.name, setting, 0, 100)
        h, w = image.shape[:2]
        heif = self._heif.from_bytes(mode="RGB", size=(w, h), data=image.tobytes())
        params = {"preset": self.preset, "x265:pools": str(self.threads), "x265:frame-threads": "1"}
        buf = io.BytesIO()
        try:
            heif.save(buf, quality=q, chroma=self.chroma, enc_params=params)
        except (RuntimeError, ValueError) as e:
            raise CodecError(f"hevc: the encoder failed ({type(e).__name__}: {e})") from e
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"hevc: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 12:
            raise BitstreamError(f"hevc: {len(data)} bytes is too short for a HEIF file")
        if data[4:8] != b"ftyp":
            raise BitstreamError("hevc: not a HEIF file (no 'ftyp' box at the start)")
        try:
            if not self._heif.is_supported(data):
                raise BitstreamError("hevc: not a HEIF file this decoder reads")
            heif = self._heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            w, h = heif.size
            if w * h > MAX_PIXELS or w < 1 or h < 1:
                raise BitstreamError(f"hevc: declared size {w}x{h} is too large to decode")
            out = np.asarray(heif.to_pillow().convert("RGB"))
        except BitstreamError:
            raise
        except Exception as e:  # libheif raises RuntimeError, ValueError, KeyError, ... on damaged input
            raise BitstreamError(f"hevc: cannot decode ({type(e).__name__}: {e})") from e
        if out.ndim != 3 or out.shape[2] != 3 or out.shape[0] * out.shape[1] > MAX_PIXELS:
            raise BitstreamError(f"hevc: decoded to {out.shape}, not an RGB image within the pixel budget")
        return np.ascontiguousarray(out)

    def describe(self) -> dict[str, Any]:
        info = self._heif.libheif_info()
        return {
            **super().describe(),
            "library": f"libheif {self._heif.libheif_version()} ({info.get('HEIF', '?')}) "
            f"via pillow-heif {self._heif.__version__}",
            "preset": f"x265 preset {self.preset}, chroma {_chroma(self.chroma)}, {self.threads} thread(s)",
        }


def _chroma(c: int) -> str:
    return {420: "4:2:0", 422: "4:2:2", 444: "4:4:4"}[c]
