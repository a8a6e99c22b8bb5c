"""Resize-then-code: downsample, code with a classical codec, decode and upsample back.

At byte budgets of a few hundred bytes a classical codec does better on a smaller image
(Andreas, Schlett and Busch 2026), and only so does it reach 0.03-0.1 bpp on a 250x250
face. :class:`ResizedCodec` wraps any codec: the image is downsampled by a ``scale`` in
(0, 1] with Lanczos (Pillow's filter widens with the scale, so it also low-passes), coded
by the inner codec, and the decoded small image is upsampled to the original size with
Lanczos (or bicubic). The scale is part of the setting, written ``"SCALE:INNER"`` (e.g.
``"0.5:30"``: half size, inner quality 30; a tuple ``(0.5, 30)`` is also accepted).

The bytes are a 6-byte header (magic ``b"rz"``, original height and width as big-endian
uint16) followed by the inner codec's file, so the rate counts everything the decoder
needs: ``bpp = 8 * len(bytes) / (H * W)`` with H, W the original size.

A rate search (:meth:`ResizedCodec.search_rate` for one image, :meth:`ResizedCodec.match_rate` for a
set; :func:`facekit.codecs.rate.search_setting` and ``match_bpp`` use them) searches the inner
setting at every scale of :attr:`ResizedCodec.scales` and keeps the scale whose result has
the best PSNR at the target rate: the upper envelope over scales.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..errors import BitstreamError, CodecError
from .base import Codec, check_image
from .classic import MAX_PIXELS

MAGIC = b"rz"
HEADER = 6
FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}
#: the scales a rate search tries, largest first
SCALES = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125)
#: smallest side of the downsampled image (OpenJPEG's six resolution levels need 32)
MIN_SIDE = 32


def parse_setting(setting: Any) -> tuple[float, Any]:
    """``(scale, inner setting)`` from ``"0.5:30"``, ``(0.5, 30)`` or ``[0.5, 30]``."""
    if isinstance(setting, str):
        head, sep, tail = setting.partition(":")
        if not sep:
            raise CodecError(f"resized: the setting is 'SCALE:INNER' (e.g. '0.5:30'), got {setting!r}")
        inner: Any = tail
        for conv in (int, float):
            try:
                inner = conv(tail)
                break
            except ValueError:
                pass
        scale_text: Any = head
    elif isinstance(setting, (tuple, list)) and len(setting) == 2:
        scale_text, inner = setting
    else:
        raise CodecError(f"resized: the setting is 'SCALE:INNER' or (scale, inner), got {setting!r}")
    try:
        scale = float(scale_text)
    except (TypeError, ValueError) as e:
        raise CodecError(f"resized: the scale must be a number in (0, 1], got {scale_text!r}") from e
    if not 0 < scale <= 1:
        raise CodecError(f"resized: the scale must be in (0, 1], got {scale}")
    return scale, inner


def format_setting(scale: float, inner: Any) -> str:
    """The setting string ``"SCALE:INNER"`` (what the sweeps and results record)."""
    return f"{scale:g}:{inner:g}" if isinstance(inner, (int, float)) else f"{scale:g}:{inner}"


def small_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The downsampled size: each side scaled and rounded, at least :data:`MIN_SIDE` (or the side)."""
    return (max(min(MIN_SIDE, height), round(height * scale)), max(min(MIN_SIDE, width), round(width * scale)))


def resample(image: np.ndarray, height: int, width: int, method: Any) -> np.ndarray:
    """``image`` resized to ``height x width`` (per channel, 8-bit, Pillow's filter)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), method))


class ResizedCodec(Codec):
    """``inner`` on an image downsampled by the setting's scale, upsampled back after decoding."""

    integer_setting = False
    setting_range = None

    def __init__(self, inner: Codec, upsample: str = "lanczos", scales: Sequence[float] = SCALES,
                 name: str | None = None) -> None:
        if upsample not in FILTERS:
            raise CodecError(f"resized: upsample must be one of {', '.join(FILTERS)}, got {upsample!r}")
        if not scales or not all(0 < s <= 1 for s in scales):
            raise CodecError(f"resized: scales must be in (0, 1], got {scales!r}")
        self.inner = inner
        self.upsample = upsample
        self.scales = tuple(sorted(scales, reverse=True))
        self.name = name or f"{inner.name}-resized"
        lo = list(inner.settings)[:3] or [None]
        self.settings = tuple(format_setting(s, q) for s in (0.25, 0.5) for q in lo)

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        h, w = image.shape[:2]
        if h > 0xFFFF or w > 0xFFFF:
            raise CodecError(f"{self.name}: images up to 65535 pixels a side, got {w}x{h}")
        scale, inner = parse_setting(setting)
        sh, sw = small_size(h, w, scale)
        small = resample(image, sh, sw, Image.Resampling.LANCZOS)
        return MAGIC + struct.pack(">HH", h, w) + self.inner.encode(small, inner)

    def decode(self, data: bytes) -> np.ndarray:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise BitstreamError(f"{self.name}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < HEADER:
            raise BitstreamError(f"{self.name}: {len(data)} bytes is shorter than the {HEADER}-byte header")
        if data[:2] != MAGIC:
            raise BitstreamError(f"{self.name}: not a resized-codec file (magic {data[:2]!r}, expected {MAGIC!r})")
        h, w = struct.unpack(">HH", data[2:HEADER])
        if h < 1 or w < 1 or h * w > MAX_PIXELS:
            raise BitstreamError(f"{self.name}: declared size {w}x{h} is too large to decode or empty")
        small = self.inner.decode(data[HEADER:])
        if small.ndim != 3 or small.shape[2] != 3 or small.shape[0] > h or small.shape[1] > w:
            raise BitstreamError(f"{self.name}: the inner image {small.shape} does not fit the declared {w}x{h}")
        return np.ascontiguousarray(resample(small, h, w, FILTERS[self.upsample]))

    def at_scale(self, scale: float) -> Codec:
        """This codec with the scale fixed: a codec over the inner settings (for the rate search)."""
        return _AtScale(self, scale)

    def search_rate(self, image: np.ndarray, target_bpp: float, iters: int = 12) -> tuple[str, float]:
        """The best ``(setting, bpp)`` for one image at ``target_bpp``: see :meth:`match_rate`."""
        return self.match_rate([image], target_bpp, iters)

    def match_rate(self, images: Sequence[np.ndarray], target_bpp: float, iters: int = 12) -> tuple[str, float]:
        """One setting for ``images``: at every scale the inner setting whose mean bpp is at most
        (and closest to) ``target_bpp``, then the scale with the best mean PSNR among those
        within the target (the lowest rate if none is)."""
        from ..metrics import psnr  # imports torch: only here, not when the codec is built
        from .rate import match_bpp

        images = [check_image(im) for im in images]
        best: tuple[bool, float, str, float] | None = None
        for scale in self.scales:
            codec = self.at_scale(scale)
            inner, bpp = match_bpp(codec, images, target_bpp, iters)
            setting = format_setting(scale, inner)
            ok = bpp <= target_bpp
            quality = float(np.mean([psnr(im, self.decode(self.encode(im, setting))) for im in images])) if ok else -bpp
            key = (ok, quality, setting, bpp)
            if best is None or key[:2] > best[:2]:
                best = key
        assert best is not None
        return best[2], best[3]

    def describe(self) -> dict[str, Any]:
        inner = self.inner.describe()
        return {
            **super().describe(),
            "library": inner.get("library", "?"),
            "inner": {k: v for k, v in inner.items() if k != "settings"},
            "resize": f"Lanczos down, {self.upsample} up; scales {list(self.scales)}; setting 'SCALE:INNER'",
        }


class _AtScale(Codec):
    """A :class:`ResizedCodec` at one scale, with the inner codec's settings and range."""

    def __init__(self, outer: ResizedCodec, scale: float) -> None:
        self.outer = outer
        self.scale = scale
        self.name = f"{outer.name}@{scale:g}"
        self.settings = tuple(outer.inner.settings)
        self.setting_range = outer.inner.setting_range
        self.integer_setting = outer.inner.integer_setting

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        return self.outer.encode(image, (self.scale, setting))

    def decode(self, data: bytes) -> np.ndarray:
        return self.outer.decode(data)

