"""facekit: deep image compression for face recognition.

A reproducible kit for Bian et al., "A Deep Image Compression Framework for Face
Recognition" (arXiv:1907.01714): a learned codec whose compact 8-bit representation is
stored by PNG, trained first for distortion and then jointly with a face recogniser, and
judged by LFW verification accuracy at equal bits per pixel against classical codecs.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    BitstreamError,
    CodecError,
    DataError,
    FacekitError,
    ImageError,
    RecognizerError,
    WeightsError,
)

__all__ = [
    "BitstreamError",
    "CodecError",
    "DataError",
    "FacekitError",
    "ImageError",
    "RecognizerError",
    "WeightsError",
    "__version__",
]
