"""The payload of a range-coded learned-codec file: the bytes between the container's header and its CRC.

Its first byte says what follows:

* ``0`` (:data:`RANGE`): the codes, range-coded with the model's context prior;
* ``1`` (:data:`PNG`): the codes as the paper's PNG (chosen when it is shorter);
* ``2`` (:data:`MASKED`): a face region (ROI): the region's geometry
  (:func:`facekit.codecs.roi.pack_region`), one fill value per channel for the codes outside
  it, then only the codes inside it, range-coded; the decoder rebuilds the mask from the geometry;
* ``3`` (:data:`MASKED_BG`): a face region and a background: the geometry, the face's fill
  values, the background's rate point N (one byte, ``qN``), 4 bytes of its fingerprint, the
  background's fill values, the face stream's length (LEB128), the face stream, then the
  background rate point's codes outside the region, range-coded.

The functions here read and write these layouts; :class:`facekit.codecs.learned.LearnedCodec`
runs the networks around them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..entropy_models import RangeCodedPrior, pack_png, unpack_png
from ..errors import BitstreamError
from .roi import FaceRegion, mask_codes, region_mask, unpack_region

RANGE, PNG, MASKED, MASKED_BG = 0, 1, 2, 3

#: a face region on the code grid: ``(mask of the cells kept, the geometry bytes it is rebuilt from)``
Region = tuple[np.ndarray, bytes]


def leb128(n: int) -> bytes:
    """``n`` >= 0 as an unsigned LEB128 varint (7 bits a byte, high bit: more follow)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb128(data: bytes, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """``(value, position after it)`` of the LEB128 varint at ``data[pos]``; BitstreamError when cut or too long."""
    value = 0
    for k in range(max_bytes):
        if pos + k >= len(data):
            raise BitstreamError("face-and-background payload truncated in a length")
        value |= (data[pos + k] & 0x7F) << (7 * k)
        if not data[pos + k] & 0x80:
            return value, pos + k + 1
    raise BitstreamError("face-and-background payload: a length of more than 5 bytes")


def masked_parts(prior: RangeCodedPrior, q: np.ndarray, region: Region) -> tuple[bytes, bytes]:
    """``(geometry + one fill value per channel, the range-coded codes inside the region)``.

    What a type-2 payload holds after its tag, and what type 3 holds around the background's
    parts; ``q`` is already flattened outside the region.
    """
    keep, geometry = region
    fill = q[:, ~keep][:, 0].astype(np.uint8)
    return geometry + fill.tobytes(), prior.encode(q, mask=keep)


def entropy_payload(prior: RangeCodedPrior, q: np.ndarray, bits: int, region: Region | None = None) -> bytes:
    """The shortest of the context-model stream (type 0, or 2 with a face ``region``) and the PNG (type 1).

    With a ``region`` (``q`` already flattened outside it) only the region's codes are
    range-coded, after the geometry and fill values; the decoded codes are the same either way.
    """
    candidates = [bytes([PNG]) + pack_png(q, bits)]
    if region is None:
        candidates.insert(0, bytes([RANGE]) + prior.encode(q))
    else:
        candidates.insert(0, bytes([MASKED]) + b"".join(masked_parts(prior, q, region)))
    return min(candidates, key=len)


def background_payload(
    prior: RangeCodedPrior,
    q: np.ndarray,
    region: Region,
    background: dict[str, Any],
    qb: np.ndarray,
    image_shape: tuple[int, int],
) -> bytes:
    """Type 3: ``q``'s face-region stream plus ``qb`` (the background rate point's codes) outside the region.

    ``background`` holds the background rate point's ``number`` (N of qN), ``fingerprint``
    (its 4-byte tag), ``prior`` and ``cell`` (its model's downsampling). Its mask is rebuilt
    from the stored geometry, as the decoder will.
    """
    head, face_stream = masked_parts(prior, q, region)
    stored, margin, _ = unpack_region(region[1])
    inside = region_mask(stored, image_shape, cell=background["cell"], margin=margin)[: qb.shape[1], : qb.shape[2]]
    qb = mask_codes(qb, ~inside)  # the background's codes inside the face region: their mean, never coded
    bg_fill = (qb[:, inside][:, 0] if inside.any() else np.zeros(qb.shape[0])).astype(np.uint8)
    bg_stream = background["prior"].encode(qb, mask=~inside)
    return (bytes([MASKED_BG]) + head + bytes([background["number"]]) + background["tag"]
            + bg_fill.tobytes() + leb128(len(face_stream)) + face_stream + bg_stream)


@dataclass(frozen=True)
class Background:
    """The background parts of a type-3 payload."""

    rate: str
    region: FaceRegion
    margin: float
    fill: list[int]
    stream: bytes


def split_background(
    payload: bytes, channels: int, background_channels: Callable[[str, bytes], int]
) -> tuple[bytes, Background | None]:
    """A type-3 payload as the type-2 payload of its face region plus its :class:`Background`.

    Other payloads come back unchanged with ``None``. ``background_channels(rate, tag)``
    checks the background's rate point and 4-byte fingerprint tag (a BitstreamError when the
    codec lacks it or the tag differs) and returns its model's channels. A truncated layout
    is a BitstreamError.
    """
    if not payload or payload[0] != MASKED_BG:
        return payload, None
    body = payload[1:]
    try:
        region, margin, used = unpack_region(body)
    except ValueError as e:
        raise BitstreamError(f"face-and-background payload: {e}") from e
    head = used + channels
    if len(body) < head + 5:
        raise BitstreamError("face-and-background payload truncated before its background rate point")
    cb = background_channels(f"q{body[head]}", body[head + 1 : head + 5])
    pos = head + 5 + cb
    fill = body[head + 5 : pos]
    length, pos = read_leb128(body, pos)
    if len(fill) < cb or pos + length > len(body):
        raise BitstreamError("face-and-background payload truncated")
    face = bytes([MASKED]) + body[:head] + body[pos : pos + length]
    return face, Background(f"q{body[head]}", region, margin, list(fill), body[pos + length :])


def entropy_codes(
    prior: RangeCodedPrior,
    payload: bytes,
    shape: tuple[int, int, int],
    bits: int,
    image_shape: tuple[int, int] | None = None,
    cell: int = 1,
) -> np.ndarray:
    """The codes ``(C, h, w)`` of a type 0, 1 or 2 payload (type 3 is split first: :func:`split_background`)."""
    if not payload:
        raise BitstreamError("empty payload")
    kind, body = payload[0], payload[1:]
    if kind == RANGE:
        return prior.decode(body, shape[1], shape[2])
    if kind == PNG:
        return unpack_png(body, *shape, bits)
    if kind == MASKED:
        try:
            region, margin, used = unpack_region(body)
        except ValueError as e:
            raise BitstreamError(f"face-region payload: {e}") from e
        keep = region_mask(region, image_shape or (shape[1] * cell, shape[2] * cell), cell=cell, margin=margin)
        keep = keep[: shape[1], : shape[2]]
        if keep.shape != shape[1:]:
            raise BitstreamError(f"face-region payload: mask {keep.shape} does not cover the code {shape[1:]}")
        fill = body[used : used + shape[0]]
        if len(fill) < shape[0]:
            raise BitstreamError("face-region payload truncated in its fill values")
        return prior.decode(body[used + shape[0] :], shape[1], shape[2], mask=keep, fill=list(fill))
    raise BitstreamError(f"unknown payload type {kind}")
