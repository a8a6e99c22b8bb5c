"""facekit: deep image compression for face recognition.

A reproducible kit for Bian et al., "A Deep Image Compression Framework for Face
Recognition" (arXiv:1907.01714): a learned codec whose compact 8-bit representation is
stored by PNG, trained first for distortion and then jointly with a face recogniser, and
judged by LFW verification accuracy at equal bits per pixel against classical codecs.

Importing facekit sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it, before
any module imports torch, so that torch's idle threads sleep instead of spinning on a busy
machine (see :mod:`facekit.threads`).
"""

from __future__ import annotations

from .threads import use_default_wait_policy

use_default_wait_policy()  # before torch loads OpenMP, which reads the variable once

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
