"""Codecs behind one interface (:class:`Codec`); see :func:`get_codec`."""

from .base import Codec, Encoded, bits_per_pixel, check_image

__all__ = ["Codec", "Encoded", "bits_per_pixel", "check_image"]
