"""Codecs behind one interface (:class:`Codec`); see :func:`get_codec`."""

from .base import Codec, Encoded, bits_per_pixel, check_image
from .rate import match_bpp, search_setting
from .registry import CLASSIC, CODECS, available_codecs, codec_names, get_codec

__all__ = [
    "CLASSIC",
    "CODECS",
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
