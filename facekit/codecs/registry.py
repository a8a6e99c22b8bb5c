"""The codec catalogue: ``get_codec("facekit")``, ``available_codecs()``.

:data:`CATALOGUE` lists the codecs ``facekit codecs`` shows, the recommended one first, each
with its role and one line on what it is for. :data:`HIDDEN` holds further names that
``get_codec`` (and so ``facekit evaluate`` and ``facekit compress``) still accept without
listing them: the spelled-out names of learned codecs that a committed result measured
(``facekit-jointrate-entropy``, ...; :mod:`facekit.codecs.names`), and the short names'
spelled-out forms (``facekit-jointface-entropy`` is ``facekit``). Learned codecs import
torch only when one is built.

The second-generation codec ``facekit-hyperprior`` (:mod:`facekit.codecs.hyperprior`) is listed
after the learned codecs, in a role of its own: it becomes the recommended codec only when its
accuracy curve beats ``facekit``'s. Without its weights, building it is one
:class:`~facekit.errors.WeightsError` naming the command that makes them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CodecError
from .base import Codec
from .names import HYPERPRIOR, HYPERPRIOR_REFINED, VARIANTS, LearnedSpec, canonical_name

__all__ = ["CATALOGUE", "CLASSIC", "CODECS", "HIDDEN", "HYPERPRIOR", "PAPER", "PAPER_MSE", "RECOGNITION_FIRST", "RECOMMENDED", "VARIANTS", "Entry", "available_codecs", "codec_names",
           "entry", "get_codec"]


def _classic(cls_name: str, **kw: Any) -> Callable[..., Codec]:
    def make(**more: Any) -> Codec:
        mod = importlib.import_module("facekit.codecs.classic")
        return getattr(mod, cls_name)(**{**kw, **more})

    return make


def _roi(base: str) -> Callable[..., Codec]:
    def make(margin: float = 4.0, **more: Any) -> Codec:
        from .roi import RegionCodec

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


def _learned(spec: LearnedSpec) -> Callable[..., Codec]:
    def make(**more: Any) -> Codec:
        try:
            mod = importlib.import_module("facekit.codecs.learned")
        except ModuleNotFoundError as e:
            raise CodecError("the learned codec is not part of this installation") from e
        return mod.LearnedCodec.from_spec(spec, **more)

    return make


def _hyperprior(**more: Any) -> Codec:
    try:
        mod = importlib.import_module("facekit.codecs.hyperprior")
    except ModuleNotFoundError as e:
        raise CodecError(f"{HYPERPRIOR} is not part of this installation ({e.name} is missing)") from e
    return mod.HyperpriorCodec.from_store(**more)


def _hyperprior_refined(**more: Any) -> Codec:
    from ..models.refine import STEPS

    return _hyperprior(**{"refine_steps": STEPS, **more})


@dataclass(frozen=True)
class Entry:
    """A codec of the catalogue: its name, its role, one line on what it is for, and how to build it."""

    name: str
    role: str
    about: str
    factory: Callable[..., Codec]


def _learned_entry(name: str, role: str, about: str) -> Entry:
    spec = LearnedSpec.parse(name)
    assert spec is not None and spec.name == name
    return Entry(name, role, about, _learned(spec))


#: the codecs ``facekit codecs`` lists, in this order
CATALOGUE: tuple[Entry, ...] = (
    _learned_entry("facekit", "recommended",
                   "whole image; jointface weights (identity, rate and face-weighted distortion), range-coded"),
    _learned_entry("facekit-roi", "recognition-first",
                   "the face region range-coded at the rate point, the background at q1 beside it"),
    _learned_entry("paper", "the paper's codec",
                   "Bian et al.'s codec trained with a face recogniser (joint weights), PNG payload"),
    _learned_entry("paper-mse", "the paper's codec",
                   "the same network trained for distortion only (mse weights), PNG payload"),
    Entry(HYPERPRIOR, "second generation",
          "one model for every rate t in [0, 1] or q1..q5 (hyperprior, checkerboard context, gain units); "
          "recommended once its accuracy curve beats facekit's", _hyperprior),
    Entry("jpeg", "classical baseline", "JPEG (libjpeg via Pillow), quality setting", _classic("JPEGCodec")),
    Entry("jpeg2000", "classical baseline", "JPEG 2000 (OpenJPEG via glymur), target bpp", _classic("JPEG2000Codec")),
    Entry("webp", "classical baseline", "WebP (libwebp via Pillow), quality setting", _classic("WebPCodec")),
    Entry("avif", "classical baseline", "AVIF (libavif via Pillow), quality setting, best effort (speed 2)",
          _classic("AVIFCodec")),
    Entry("hevc", "classical baseline", "HEVC-intra in HEIF (x265 via pillow-heif), quality setting",
          _module("heif", "HEVCCodec")),
    Entry("jpegxl", "classical baseline", "JPEG XL (libjxl via pillow-jxl-plugin), quality setting, effort 8",
          _module("jxl", "JPEGXLCodec")),
    Entry("jpeg2000-roi", "ROI baseline", "JPEG 2000 of the image with everything outside the face flattened",
          _roi("jpeg2000")),
    Entry("avif-roi", "ROI baseline", "AVIF of the image with everything outside the face flattened", _roi("avif")),
)

#: the recommended whole-image codec: the first of the catalogue, the default of ``facekit compress``
RECOMMENDED = CATALOGUE[0].name
#: the recognition-first codec: the face region coded first, the background at q1
RECOGNITION_FIRST = CATALOGUE[1].name
#: the paper's codec (joint training, the code stored as a PNG), and its distortion-only form
PAPER, PAPER_MSE = CATALOGUE[2].name, CATALOGUE[3].name

#: classical codecs with a resize-then-code form (``<name>-resized``, :mod:`facekit.codecs.resize`)
RESIZABLE = ("jpeg", "jpeg2000", "webp", "avif", "hevc", "jpegxl")

#: learned codecs a committed result measured (results/*.json), spelled out; accepted, not listed
_MEASURED = (
    "facekit-mse", "facekit-mse-entropy", "facekit-joint", "facekit-joint-entropy", "facekit-joint-roi",
    "facekit-jointrate", "facekit-jointrate-entropy", "facekit-jointrate-roi", "facekit-jointrate-entropy-roi",
    "facekit-jointrate-entropy-roi-bg", "facekit-jointface", "facekit-jointface-entropy",
)


def _hidden_learned(name: str) -> Callable[..., Codec]:
    spec = LearnedSpec.parse(name)
    assert spec is not None
    return _learned(spec)


#: names accepted by :func:`get_codec` but not listed: measured learned codecs by their spelled-out
#: names, and JPEG 2000 through Pillow's decoder (the fuzz corpus covers both decoders)
HIDDEN: dict[str, Callable[..., Codec]] = {
    **{name: _hidden_learned(name) for name in _MEASURED},
    "jpeg2000-pillow": _classic("JPEG2000Codec", backend="pillow"),
    "webp-roi": _roi("webp"),
    "png": _classic("UncompressedCodec"),
    "avif-speed6": _classic("AVIFCodec", speed=6, threads=None),
    "avif-speed6-roi": _roi("avif-speed6"),
    HYPERPRIOR_REFINED: _hyperprior_refined,
    **{f"{base}-resized": _resized(base) for base in RESIZABLE},
}

_HIDDEN_ABOUT = {
    "jpeg2000-pillow": "JPEG 2000 through Pillow's OpenJPEG (the fuzz tests cover both decoders)",
    "webp-roi": "WebP of the image with everything outside the face flattened",
    "png": "PNG: the uncompressed image, lossless (a reference, not a rate point)",
    "avif-speed6": "AVIF at Pillow's default speed 6 (the AVIF of results measured before the best-effort preset)",
    "avif-speed6-roi": "avif-speed6 of the image with everything outside the face flattened",
    HYPERPRIOR_REFINED: f"{HYPERPRIOR} with an encoder that refines each latent (10 Adam steps, about 0.4 s a face "
                        "on one thread): fewer bits for the same quality, the same files and decoder",
    **{f"{base}-resized": f"{base} of the image shrunk by a factor, enlarged back after decoding "
       "(resize-then-code; the setting is SCALE:INNER)" for base in RESIZABLE},
}

#: every accepted name -> factory, the catalogue's first
CODECS: dict[str, Callable[..., Codec]] = {**{e.name: e.factory for e in CATALOGUE}, **HIDDEN}

CLASSIC = ("jpeg", "jpeg2000", "webp", "avif", "hevc", "jpegxl")


def codec_names(hidden: bool = False) -> list[str]:
    """The catalogue's names, in order; with ``hidden=True`` the accepted unlisted names after them."""
    return list(CODECS) if hidden else [e.name for e in CATALOGUE]


def get_codec(name: str, **kwargs: Any) -> Codec:
    """Build the codec called ``name``; an unknown or unavailable one is a clear CodecError."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; known codecs: {', '.join(codec_names())}")
    return CODECS[name](**kwargs)


def entry(name: str) -> Entry | None:
    """The catalogue entry of a name, the short name of a spelled-out one's too; None for unlisted names."""
    want = canonical_name(name)
    return next((e for e in CATALOGUE if e.name == want), None)


def available_codecs(hidden: bool = False) -> dict[str, dict[str, Any]]:
    """``{name: {"available": bool, "role", "about", ...describe() or "reason"}}``, catalogue order.

    ``hidden=True`` adds the accepted unlisted names (role ``"alias of <name>"`` or ``"unlisted"``).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in codec_names(hidden):
        e = entry(name)
        if e is not None and e.name == name:
            about = {"role": e.role, "about": e.about}
        elif e is not None:
            about = {"role": f"alias of {e.name}", "about": e.about}
        else:
            spec = LearnedSpec.parse(name)
            about = {"role": "unlisted", "about": spec.about if spec is not None else _HIDDEN_ABOUT.get(name, "")}
        try:
            codec = get_codec(name)
            out[name] = {"available": True, **about, **codec.describe()}
        except Exception as err:  # report, never hide: the reason is shown to the user
            out[name] = {"available": False, **about, "reason": f"{type(err).__name__}: {err}"}
    return out
