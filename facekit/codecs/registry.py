"""Codecs by name: ``get_codec('jpeg2000')``, ``available_codecs()``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import CodecError
from .base import Codec

#: the trained variants of the learned codec (weights ``<variant>-q<N>``): mse: distortion only
#: (phase one); joint: + identity term (phase two); jointrate: + identity term + rate term of
#: the context prior, for the entropy-coded variant; jointface: as jointrate, with the squared
#: error of the background (outside the recogniser's face chip) weighted down. Here, not in the torch-using
#: ``facekit.codecs.learned``, so that command lines can offer them without loading torch.
VARIANTS = ("mse", "joint", "jointrate", "jointface")


def _classic(cls_name: str, **kw: Any) -> Callable[..., Codec]:
    def make(**more: Any) -> Codec:
        mod = importlib.import_module("facekit.codecs.classic")
        return getattr(mod, cls_name)(**{**kw, **more})

    return make


def _roi(base: str) -> Callable[..., Codec]:
    def make(margin: float = 4.0, **more: Any) -> Codec:
        from ..roi import RegionCodec

        return RegionCodec(get_codec(base, **more), margin=margin)

    return make


def _module(module: str, cls_name: str) -> Callable[..., Codec]:
    def make(**more: Any) -> Codec:
        return getattr(importlib.import_module(f"facekit.codecs.{module}"), cls_name)(**more)

    return make


def _resized(base: str) -> Callable[..., Codec]:
    def make(upsample: str = "lanczos", **more: Any) -> Codec:
        from .resize import ResizedCodec

        return ResizedCodec(get_codec(base, **more), upsample=upsample)

    return make


def _learned(variant: str, entropy: bool = False, roi: bool = False, background: str | None = None) -> Callable[..., Codec]:
    def make(**more: Any) -> Codec:
        try:
            mod = importlib.import_module("facekit.codecs.learned")
        except ModuleNotFoundError as e:
            raise CodecError("the learned codec is not part of this installation") from e
        if entropy:
            more.setdefault("entropy", True)
        if roi:
            more.setdefault("roi", True)
        if background is not None:
            more.setdefault("background", background)
        return mod.LearnedCodec(variant=variant, **more)

    return make


#: name -> factory; learned codecs import torch only when asked for
CODECS: dict[str, Callable[..., Codec]] = {
    "png": _classic("UncompressedCodec"),
    "jpeg": _classic("JPEGCodec"),
    "jpeg2000": _classic("JPEG2000Codec"),
    "jpeg2000-pillow": _classic("JPEG2000Codec", backend="pillow"),
    "webp": _classic("WebPCodec"),
    "avif": _classic("AVIFCodec"),
    # every variant (VARIANTS) as PNG, range-coded (-entropy: the context prior,
    # facekit.models.quantizer), region of interest (-roi: only the face the recogniser looks
    # at, facekit.roi), both (-entropy-roi: only the face region's codes, range-coded), and
    # that with the background's codes at the lowest rate point q1 as a second stream (-entropy-roi-bg)
    **{
        f"facekit-{variant}{suffix}": _learned(variant, entropy=entropy, roi=roi, background=background)
        for suffix, entropy, roi, background in (("", False, False, None), ("-entropy", True, False, None),
                                                 ("-roi", False, True, None), ("-entropy-roi", True, True, None),
                                                 ("-entropy-roi-bg", True, True, "q1"))
        for variant in VARIANTS
    },
    "jpeg-roi": _roi("jpeg"),
    "jpeg2000-roi": _roi("jpeg2000"),
    "webp-roi": _roi("webp"),
    "avif-roi": _roi("avif"),
    # issue 29: the strongest classical yardsticks (HEVC-intra, JPEG XL, resize-then-code)
    "avif-speed6": _classic("AVIFCodec", speed=6, threads=None),
    "hevc": _module("heif", "HEVCCodec"),
    "jpegxl": _module("jxl", "JPEGXLCodec"),
    **{f"{base}-resized": _resized(base) for base in ("jpeg", "jpeg2000", "webp", "avif", "hevc", "jpegxl")},
}

CLASSIC = ("jpeg", "jpeg2000", "webp", "avif")


def codec_names() -> list[str]:
    return list(CODECS)


def get_codec(name: str, **kwargs: Any) -> Codec:
    """Build the codec called ``name``; an unknown or unavailable one is a clear CodecError."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; known codecs: {', '.join(CODECS)}")
    return CODECS[name](**kwargs)


def available_codecs() -> dict[str, dict[str, Any]]:
    """``{name: {"available": bool, ...describe() or "reason"}}`` for every known codec."""
    out: dict[str, dict[str, Any]] = {}
    for name in CODECS:
        try:
            codec = get_codec(name)
            out[name] = {"available": True, **codec.describe()}
        except Exception as e:  # report, never hide: the reason is shown to the user
            out[name] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
    return out
