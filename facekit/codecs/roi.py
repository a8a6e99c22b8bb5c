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
  pixels for the classical ones). With no face at all (or an image under 20 pixels a
  side), the mask is the whole image: the image is coded as without ROI, never cropped by guess.
* :func:`mask_codes` sets the learned code outside the mask to one value per channel
  (the mean of the codes it replaces), which PNG stores in a few bytes per row. The
  decoder is unchanged, so a ROI bitstream is an ordinary bitstream of the same model
  and any facekit decoder reads it; nothing about the region is transmitted.
* With the range coder (:mod:`facekit.codecs.payload`) the background costs almost
  nothing: the stream carries the chip's geometry (:func:`pack_region`, 31 bytes) and one
  fill value per channel, and only the codes inside the mask are range-coded; the decoder
  rebuilds the mask with :func:`region_mask`, which uses only correctly rounded
  arithmetic so that every machine finds the same cells. The decoded image is the one
  the PNG ROI stream gives. ``facekit-roi`` adds a second stream: the rest of the image
  at the lowest rate point q1, so its background is a low-rate image instead of a flat one.
* :class:`RegionCodec` wraps a classical codec: it flattens the background to its mean
  colour before encoding, the fair ROI baseline for JPEG, JPEG 2000, WebP and AVIF.

The rate of a ROI image is still ``8 * len(bytes) / (H * W)`` over the whole image.
Without a coded background the background of a decoded ROI image is flat, so its
whole-image PSNR is low: such codecs are for recognition, not for viewing the scene.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Codec, check_image

#: side of dlib's face chip, in chip pixels (the ResNet's input)
CHIP_SIZE = 150
#: images with a shorter side hold no face the detectors can find (MTCNN's smallest face is
#: 20 pixels): they are coded whole, without running a detector
MIN_FACE_SIDE = 20


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
    if m.shape != (2, 3):
        raise ValueError(f"region_mask: the chip matrix must be 2x3, got {m.shape}")
    a00, a01, t0, a10, a11, t1 = (float(v) for v in m.ravel())
    det = a00 * a11 - a01 * a10
    if not np.isfinite(det) or abs(det) < 1e-12:
        return np.ones((rows, cols), dtype=bool)
    scale = float(np.sqrt(abs(det)))  # image pixels per chip pixel
    ys = np.arange(rows) * cell + (cell - 1) / 2.0
    xs = np.arange(cols) * cell + (cell - 1) / 2.0
    gx, gy = np.meshgrid(xs, ys)
    dx, dy = gx - t0, gy - t1
    # chip coordinates of the cell centres by the explicit 2x2 inverse: only correctly rounded
    # elementwise operations, so every machine finds the same mask from the same matrix (a
    # range-coded ROI bitstream's decoder rebuilds it from the geometry it carries)
    u0 = (a11 * dx - a01 * dy) / det
    u1 = (a00 * dy - a10 * dx) / det
    slack = (margin + cell * np.sqrt(2.0) / 2.0) / scale
    lo, hi = -0.5 - slack, region.chip - 0.5 + slack
    inside = (u0 >= lo) & (u0 <= hi) & (u1 >= lo) & (u1 <= hi)
    return inside


#: byte widths of the floats a region's geometry is stored with (:func:`pack_region`)
_GEOMETRY_WIDTHS = {4: "<f4", 8: "<f8"}


def pack_region(region: FaceRegion, margin: float, width: int = 4) -> bytes:
    """The geometry :func:`region_mask` needs, as bytes: what a range-coded ROI stream carries.

    Layout: one byte ``width`` (4 or 8: float32 or float64), the chip matrix row by row and
    ``margin`` as seven little-endian floats of that width, then the chip side as a uint16;
    31 bytes at float32. A face was found, so ``region.matrix`` is not ``None``.
    """
    if region.matrix is None:
        raise ValueError("pack_region: no face region to pack")
    if width not in _GEOMETRY_WIDTHS or not 1 <= int(region.chip) <= 0xFFFF:
        raise ValueError(f"pack_region: width {width} (use 4 or 8) or chip {region.chip} out of range")
    values = np.append(np.asarray(region.matrix, dtype=np.float64).ravel(), float(margin))
    return bytes([width]) + values.astype(_GEOMETRY_WIDTHS[width]).tobytes() + int(region.chip).to_bytes(2, "little")


def unpack_region(data: bytes) -> tuple[FaceRegion, float, int]:
    """``(region, margin, bytes used)`` back from the start of ``data`` (see :func:`pack_region`).

    Raises ``ValueError`` on a truncated, non-finite or degenerate geometry.
    """
    if not data or data[0] not in _GEOMETRY_WIDTHS:
        raise ValueError("region geometry: unknown float width" if data else "region geometry: missing")
    width = data[0]
    n = 1 + 7 * width + 2
    if len(data) < n:
        raise ValueError(f"region geometry truncated: {len(data)} of {n} bytes")
    values = np.frombuffer(data[1 : 1 + 7 * width], dtype=_GEOMETRY_WIDTHS[width]).astype(np.float64)
    chip = int.from_bytes(data[n - 2 : n], "little")
    matrix, margin = values[:6].reshape(2, 3), float(values[6])
    det = matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0]
    if not np.isfinite(values).all() or margin < 0 or chip < 1 or not abs(det) >= 1e-12:
        raise ValueError("region geometry is not a face region (non-finite, degenerate or negative margin)")
    return FaceRegion(matrix, "stored", chip), margin, n


def region_geometry(region: FaceRegion, keep: np.ndarray, shape: Sequence[int], cell: int, margin: float) -> bytes:
    """The shortest :func:`pack_region` bytes from which :func:`region_mask` rebuilds ``keep`` exactly.

    float32 is tried first; float64 (exact) where rounding to float32 moves a cell across the
    chip's edge, so a decoder always finds the encoder's mask.
    """
    for width in (4, 8):
        data = pack_region(region, margin, width)
        back, m, _ = unpack_region(data)
        if np.array_equal(region_mask(back, shape, cell, m)[: keep.shape[0], : keep.shape[1]], keep):
            return data
    raise ValueError("region_geometry: the mask cannot be rebuilt from its geometry")  # pragma: no cover


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
            from ..recognition.align import FaceAligner

            self._aligner = FaceAligner(upsample=1, use_mtcnn=self.use_mtcnn)
        return self._aligner

    def find(self, image: np.ndarray) -> FaceRegion:
        """The face region of an RGB uint8 image (cached); no face in images under :data:`MIN_FACE_SIDE` a side."""
        image = check_image(image)
        if min(image.shape[:2]) < MIN_FACE_SIDE:
            return FaceRegion(matrix=None, method="none")
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

    def clear_cache(self) -> None:
        """Forget every face found so far (the next :meth:`find` of each image detects again)."""
        with self._lock:
            self._cache.clear()

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
