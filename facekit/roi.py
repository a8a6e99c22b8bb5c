"""Region-of-interest coding: spend the bits where the face recogniser will look.

A face recogniser never sees a whole image: it sees the face chip its alignment cuts
out (dlib's ResNet: a 150x150 chip with padding 0.25 around five landmarks, about a
quarter of a 250x250 LFW image). Bian et al. (arXiv:1907.01714) optimise the codec so
that *identity* survives compression; the same goal says the bits spent on the
background are wasted. Region-of-interest (ROI) coding is the classical answer (JPEG
2000 Part 1 has it as "maxshift"); facekit offers it as an encoder-side option:

* :class:`FaceRegionFinder` finds the face on the image being compressed with dlib's
  detector and five landmarks (MTCNN when HOG finds nothing), exactly as the dlib
  recogniser aligns originals, and turns the chip's square, widened by ``margin``
  pixels, into a mask of the cells of a grid (the code's grid for the learned codec,
  pixels for the classical ones). With no face at all, the mask is the whole image:
  the image is coded as without ROI, never cropped by guess.
* :func:`mask_codes` sets the learned code outside the mask to one value per channel
  (the mean of the codes it replaces), which PNG stores in a few bytes per row. The
  decoder is unchanged, so a ROI bitstream is an ordinary bitstream of the same model
  and any facekit decoder reads it; nothing about the region is transmitted.
* :class:`RegionCodec` wraps a classical codec: it flattens the background to its mean
  colour before encoding, the fair ROI baseline for JPEG, JPEG 2000, WebP and AVIF.

The rate of a ROI image is still ``8 * len(bytes) / (H * W)`` over the whole image.
The background of a decoded ROI image is flat, so its whole-image PSNR is low: ROI
codecs are for recognition, not for viewing the scene.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs.base import Codec, check_image

#: side of dlib's face chip, in chip pixels (the ResNet's input)
CHIP_SIZE = 150


@dataclass(frozen=True)
class FaceRegion:
    """Where the recogniser's chip lies in an image: ``matrix`` maps chip (x, y, 1) to image
    pixels; ``None`` when no face was found (``method == "none"``)."""

    matrix: np.ndarray | None
    method: str
    chip: int = CHIP_SIZE


def region_mask(
    region: FaceRegion, shape: Sequence[int], cell: int = 1, margin: float = 4.0
) -> np.ndarray:
    """Boolean ``(ceil(H/cell), ceil(W/cell))`` mask of the grid cells that can touch the chip.

    A cell is kept when its centre lies within the chip square widened by ``margin`` image
    pixels plus half the cell's diagonal (so every cell that overlaps the widened square is
    kept). With no face (``region.matrix is None``) every cell is kept.
    """
    h, w = int(shape[0]), int(shape[1])
    if cell < 1 or h < 1 or w < 1:
        raise ValueError(f"region_mask: cell {cell} and shape {h}x{w} must be positive")
    rows, cols = -(-h // cell), -(-w // cell)
    if region.matrix is None:
        return np.ones((rows, cols), dtype=bool)
    m = np.asarray(region.matrix, dtype=np.float64)
    a, t = m[:, :2], m[:, 2]
    det = float(np.linalg.det(a))
    if not np.isfinite(det) or abs(det) < 1e-12:
        return np.ones((rows, cols), dtype=bool)
    scale = float(np.sqrt(abs(det)))  # image pixels per chip pixel
    ys = np.arange(rows) * cell + (cell - 1) / 2.0
    xs = np.arange(cols) * cell + (cell - 1) / 2.0
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel() - t[0], gy.ravel() - t[1]])
    u = np.linalg.solve(a, pts)  # chip coordinates of the cell centres
    slack = (margin + cell * np.sqrt(2.0) / 2.0) / scale
    lo, hi = -0.5 - slack, region.chip - 0.5 + slack
    inside = (u[0] >= lo) & (u[0] <= hi) & (u[1] >= lo) & (u[1] <= hi)
    return inside.reshape(rows, cols)


def mask_codes(q: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``q`` ``(C, h, w)`` with every cell outside ``keep`` ``(h, w)`` set to one value per channel.

    The value is the rounded mean of the codes it replaces, so the decoder sees a flat code
    of the background's average; a mask that keeps everything returns ``q`` unchanged.
    """
    if q.ndim != 3 or keep.shape != q.shape[1:]:
        raise ValueError(f"mask_codes: codes {q.shape} and mask {keep.shape} do not match")
    drop = ~keep
    if not drop.any():
        return q
    out = q.copy()
    fill = np.rint(q[:, drop].astype(np.float64).mean(axis=1)).astype(q.dtype)
    out[:, drop] = fill[:, None]
    return out


def flatten_background(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``image`` with every pixel outside ``keep`` ``(H, W)`` set to their mean colour."""
    if keep.shape != image.shape[:2]:
        raise ValueError(f"flatten_background: image {image.shape} and mask {keep.shape} do not match")
    drop = ~keep
    if not drop.any():
        return image
    out = image.copy()
    out[drop] = np.rint(image[drop].astype(np.float64).mean(axis=0)).astype(image.dtype)
    return out


class FaceRegionFinder:
    """Finds the recogniser's face chip on images, with a bounded in-memory cache.

    Uses :class:`facekit.recognition.align.FaceAligner` (dlib HOG + 5 landmarks, MTCNN
    fallback), the alignment of the ``dlib-resnet`` recogniser. Results are cached by the
    sha256 of the pixels, so a sweep over several settings detects each image once per
    process. ``margin`` (image pixels) widens the chip; 4 keeps the decoder's receptive
    field around the chip's edge.
    """

    def __init__(self, margin: float = 4.0, *, use_mtcnn: bool = True, cache_size: int = 20_000) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0 pixels, got {margin}")
        self.margin = float(margin)
        self.use_mtcnn = bool(use_mtcnn)
        self.cache_size = int(cache_size)
        self._aligner: Any = None
        self._cache: OrderedDict[str, FaceRegion] = OrderedDict()
        self._lock = threading.Lock()

    def _get_aligner(self) -> Any:
        if self._aligner is None:
            from .recognition.align import FaceAligner

            self._aligner = FaceAligner(upsample=1, use_mtcnn=self.use_mtcnn)
        return self._aligner

    def find(self, image: np.ndarray) -> FaceRegion:
        """The face region of an RGB uint8 image (cached)."""
        image = check_image(image)
        key = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loc = self._get_aligner().locate_dlib(image, size=CHIP_SIZE)
        region = FaceRegion(matrix=None, method="none") if loc.method == "centre" else FaceRegion(loc.matrix, loc.method)
        with self._lock:
            self._cache[key] = region
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return region

    def mask(self, image: np.ndarray, cell: int = 1) -> np.ndarray:
        """The mask (see :func:`region_mask`) of ``image`` on a grid of ``cell``-pixel cells."""
        return region_mask(self.find(image), image.shape[:2], cell=cell, margin=self.margin)

    def describe(self) -> dict[str, Any]:
        return {
            "finder": "dlib HOG + 5 landmarks" + (", MTCNN fallback" if self.use_mtcnn else ""),
            "chip": f"{CHIP_SIZE}px, padding 0.25",
            "margin_px": self.margin,
            "no_face": "whole image coded",
        }


class RegionCodec(Codec):
    """A classical codec that codes only the face: the background is flattened first.

    The bytes are the base codec's own, so its decoder reads them; settings and their
    meaning are the base codec's. This is the ROI baseline facekit's ROI mode is judged
    against.
    """

    def __init__(self, base: Codec, margin: float = 4.0, finder: FaceRegionFinder | None = None) -> None:
        self.base = base
        self.finder = finder or FaceRegionFinder(margin)
        self.name = f"{base.name}-roi"
        self.settings = tuple(base.settings)
        self.setting_range = base.setting_range
        self.integer_setting = base.integer_setting

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The image the base codec is given: the background outside the face flattened."""
        image = check_image(image)
        return flatten_background(image, self.finder.mask(image, cell=1))

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        return self.base.encode(self.prepare(image), setting)

    def decode(self, data: bytes) -> np.ndarray:
        return self.base.decode(data)

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "name": self.name, "roi": self.finder.describe()}
