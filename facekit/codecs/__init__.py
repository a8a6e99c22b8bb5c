"""Codecs behind one interface (:class:`Codec`): :func:`get_codec` builds one by its catalogue name."""

from .base import Codec, Encoded, bits_per_pixel, check_image
from .rate import match_bpp, search_setting
from .registry import (
    CATALOGUE,
    CLASSIC,
    CODECS,
    PAPER,
    PAPER_MSE,
    RECOGNITION_FIRST,
    RECOMMENDED,
    available_codecs,
    codec_names,
    get_codec,
)

__all__ = [
    "CATALOGUE",
    "CLASSIC",
    "CODECS",
    "PAPER",
    "PAPER_MSE",
    "RECOGNITION_FIRST",
    "RECOMMENDED",
    "Codec",
    "Encoded",
    "available_codecs",
    "bits_per_pixel",
    "check_image",
    "codec_names",
    "get_codec",
    "match_bpp",
    "search_setting",
]
