"""facekit's own exception types.

Every failure that a user can cause (bad input, a missing data set, a damaged file,
a download that breaks) ends in a subclass of :class:`FacekitError` whose message
names the problem. Nothing falls back silently to something that changes results.
"""

from __future__ import annotations


class FacekitError(Exception):
    """Base class of every error facekit raises on purpose."""


class DataError(FacekitError):
    """A data set is missing, incomplete or does not match its checksums."""


class DownloadError(DataError):
    """A download failed, was truncated, or did not match its sha256."""


class ChecksumError(DataError):
    """A file's sha256 differs from the expected one."""


class CodecError(FacekitError):
    """A codec is unknown, unavailable, or was given bad input."""


class ImageError(CodecError):
    """An image has the wrong shape, dtype or value range."""


class BitstreamError(CodecError):
    """Compressed bytes are truncated, damaged, or made by another model."""


class WeightsError(FacekitError):
    """Model weights are missing, tampered with, or do not fit the model."""


class RecognizerError(FacekitError):
    """A face recogniser cannot be built or run (e.g. weights unavailable offline)."""


class AlignmentError(FacekitError):
    """Landmarks could not be found or do not define a valid transform."""


class TrainingError(FacekitError):
    """A training run cannot start or resume (bad checkpoint, wrong config)."""
