"""One interface for every codec, classical or learned.

As in CompressAI's evaluation, the rate is counted from the real bytes a codec writes,
headers included, the same way for every codec::

    bpp = 8 * len(data) / (H * W)

Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import CodecError, ImageError


def bits_per_pixel(data: bytes, height: int, width: int) -> float:
    """``8 * len(data) / (height * width)``: the whole file, headers included."""
    return 8.0 * len(data) / float(height * width)


def check_image(image: Any, *, min_size: int = 8) -> np.ndarray:
    """Validate an RGB image: a ``uint8`` array ``(H, W, 3)``; a clear error otherwise."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim == 2:
        raise ImageError(
            f"grayscale image of shape {image.shape}: facekit codecs take RGB (H, W, 3); "
            "convert it with np.stack([img]*3, -1) or PIL's .convert('RGB')"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB image of shape (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected dtype uint8, got {image.dtype}")
    if image.shape[0] < min_size or image.shape[1] < min_size:
        raise ImageError(f"image {image.shape[1]}x{image.shape[0]} is smaller than {min_size}x{min_size}")
    return np.ascontiguousarray(image)


def int_setting(name: str, setting: Any, lo: int, hi: int) -> int:
    """An integer quality setting of codec ``name`` in ``lo..hi``; a clear CodecError otherwise."""
    try:
        q = int(setting)
    except (TypeError, ValueError) as e:
        raise CodecError(f"{name}: the setting is an integer quality {lo}..{hi}, got {setting!r}") from e
    if q != setting and not (isinstance(setting, float) and float(q) == setting):
        raise CodecError(f"{name}: quality must be an integer, got {setting!r}")
    if not lo <= q <= hi:
        raise CodecError(f"{name}: quality {q} outside {lo}..{hi}")
    return q


@dataclass(frozen=True)
class Encoded:
    """Bytes plus what was asked for and what it costs."""

    data: bytes
    setting: Any
    height: int
    width: int

    @property
    def bpp(self) -> float:
        return bits_per_pixel(self.data, self.height, self.width)


class Codec(ABC):
    """A lossy image codec: ``encode(image, setting) -> bytes``, ``decode(bytes) -> image``.

    ``settings`` is the default sweep, ordered from lowest to highest quality (so bpp
    grows along it). ``setting_range`` is the interval a rate search may explore.
    """

    name: str = "codec"
    settings: Sequence[Any] = ()
    #: (low, high) of a numeric quality setting for rate search, or None if discrete
    setting_range: tuple[float, float] | None = None
    #: whether the setting is an integer
    integer_setting: bool = True
    #: named settings (``{"q2": 0.25}``) a codec may accept; none by default
    presets: Mapping[str, Any] = MappingProxyType({})

    @abstractmethod
    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """Compress an RGB uint8 image at ``setting``."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress bytes to an RGB uint8 ``(H, W, 3)`` image."""

    def encode_batch(self, images: Sequence[np.ndarray], setting: Any) -> list[bytes]:
        """Compress several images at one setting (one at a time here; the learned codec
        runs equal-sized images through its network as one batch)."""
        return [self.encode(im, setting) for im in images]

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        """Decompress several byte strings (one at a time here; see :meth:`encode_batch`)."""
        return [self.decode(d) for d in datas]

    def roundtrip(self, image: np.ndarray, setting: Any) -> tuple[np.ndarray, float]:
        """Encode and decode; returns the decoded image and its bpp."""
        image = check_image(image)
        data = self.encode(image, setting)
        return self.decode(data), bits_per_pixel(data, image.shape[0], image.shape[1])

    def describe(self) -> dict[str, Any]:
        """Name, version of the library behind it, and the default settings."""
        return {"name": self.name, "settings": list(self.settings)}

    def normalise_setting(self, setting: Any) -> Any:
        """The setting a results point stores, checked: a preset name (:attr:`presets`) as its value, and,
        where the setting is continuous (``integer_setting`` False with a ``setting_range``), a number (or a
        number written as text, as the CLI's ``--rate`` takes it) as a float inside ``setting_range``; a
        CodecError otherwise (NaN included). Any other setting is returned as it is (the codec checks it).

        Example: ``get_codec("jpeg").normalise_setting(50)`` -> 50, ``get_codec("jpeg2000").normalise_setting(1)``
        -> 1.0; a codec with its own rate parsing overrides this.
        """
        if isinstance(setting, str) and setting in self.presets:
            setting = self.presets[setting]
        if self.integer_setting or self.setting_range is None:
            return setting
        if isinstance(setting, bool) or not isinstance(setting, str | int | float | np.integer | np.floating):
            raise CodecError(f"{self.name}: the setting is a number in {list(self.setting_range)}, got {setting!r}")
        try:
            value = float(setting)
        except ValueError:
            raise CodecError(f"{self.name}: the setting is a number in {list(self.setting_range)}, "
                             f"got {setting!r}") from None
        lo, hi = self.setting_range
        if not lo <= value <= hi:  # also refuses NaN
            raise CodecError(f"{self.name}: setting {setting!r} outside {lo}..{hi}")
        return value

    def weights_record(self) -> dict[str, Any] | None:
        """What identifies the stored weights behind the codec (``{"sha256", "fingerprint", "file", "phase"}``),
        for a codec with one stored model (it overrides this); None here."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
