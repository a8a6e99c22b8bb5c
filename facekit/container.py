"""The file format of the learned codec: a small, strictly parsed container around the PNG.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic b"FKC\\x89"
    4       1     format version (1)
    5       1     length n of the model name (1..64)
    6       n     model name, ASCII (e.g. "mse-q3": variant and rate point)
    6+n     6     first 6 bytes of the sha256 fingerprint of the model's weights
    12+n    2     image height (1..8192)
    14+n    2     image width  (1..8192)
    16+n    4     payload length m
    20+n    m     payload (the PNG holding the quantised code)
    20+n+m  4     CRC32 of every byte before it

The container bytes are what :class:`facekit.codecs.learned.LearnedCodec` returns from
``encode``, so the rate counts these 24 + n bytes too. :func:`parse` refuses anything
that is not exactly such a file (wrong magic, unknown version, truncation, trailing
bytes, a CRC mismatch, absurd dimensions) with a :class:`~facekit.errors.BitstreamError`
that names the problem; :func:`check_model` refuses bytes made by other weights.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import BitstreamError

MAGIC = b"FKC\x89"
VERSION = 1
HASH_BYTES = 6
#: largest image side a container may declare (a decompression-bomb guard)
MAX_SIDE = 8192
MAX_NAME = 64
_FIXED = len(MAGIC) + 1 + 1 + HASH_BYTES + 2 + 2 + 4 + 4


@dataclass(frozen=True)
class Container:
    """The parsed fields of a container."""

    model: str
    model_hash: bytes
    height: int
    width: int
    payload: bytes
    version: int = VERSION

    @property
    def overhead(self) -> int:
        """Bytes of the container around the payload."""
        return _FIXED + len(self.model.encode("ascii"))


def model_hash(fingerprint: str | bytes) -> bytes:
    """The first :data:`HASH_BYTES` bytes of a hex (or raw) sha256 fingerprint."""
    raw = bytes.fromhex(fingerprint) if isinstance(fingerprint, str) else bytes(fingerprint)
    if len(raw) < HASH_BYTES:
        raise ValueError(f"fingerprint too short: {len(raw)} bytes")
    return raw[:HASH_BYTES]


def pack(model: str, fingerprint: str | bytes, height: int, width: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in a container (see the module docstring for the layout)."""
    name = model.encode("ascii")
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"model name must be 1..{MAX_NAME} ASCII bytes, got {model!r}")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ValueError(f"image {width}x{height} exceeds the container's {MAX_SIDE}x{MAX_SIDE} limit")
    body = (
        MAGIC
        + struct.pack(">BB", VERSION, len(name))
        + name
        + model_hash(fingerprint)
        + struct.pack(">HHI", height, width, len(payload))
        + payload
    )
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def parse(data: bytes) -> Container:
    """Parse and check a container; :class:`BitstreamError` naming the problem otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError(
            f"not a facekit learned-codec file (wrong magic {data[:4]!r}, expected {MAGIC!r})"
        )
    if len(data) < 6:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the container header")
    version, n = data[4], data[5]
    if version != VERSION:
        raise BitstreamError(f"unknown container format version {version} (this facekit reads version {VERSION})")
    header_end = 6 + n + HASH_BYTES + 8
    if len(data) < header_end + 4:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the {header_end + 4}-byte header")
    height, width, length = struct.unpack(">HHI", data[6 + n + HASH_BYTES : header_end])
    expected = header_end + length + 4
    if len(data) < expected:
        raise BitstreamError(f"truncated: {len(data)} bytes, the header promises {expected}")
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected trailing bytes after the container")
    (crc,) = struct.unpack(">I", data[-4:])
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise BitstreamError("CRC32 mismatch: the file is damaged (bit flips or an edited byte)")
    if not 1 <= n <= MAX_NAME:
        raise BitstreamError(f"bad model-name length {n}")
    try:
        model = data[6 : 6 + n].decode("ascii")
    except UnicodeDecodeError as e:
        raise BitstreamError("model name is not ASCII") from e
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BitstreamError(
            f"absurd image size {width}x{height} (limit {MAX_SIDE}x{MAX_SIDE}): refusing to decode"
        )
    return Container(
        model=model,
        model_hash=data[6 + n : 6 + n + HASH_BYTES],
        height=height,
        width=width,
        payload=data[header_end : header_end + length],
        version=version,
    )


def check_model(container: Container, model: str, fingerprint: str | bytes) -> None:
    """Refuse a container made by another model, or by other weights of the same model."""
    if container.model != model:
        raise BitstreamError(
            f"bitstream was made by model {container.model!r}, not {model!r}: decode it with that model"
        )
    want = model_hash(fingerprint)
    if container.model_hash != want:
        raise BitstreamError(
            f"bitstream was made by other weights of {model!r} (weights hash {container.model_hash.hex()}, "
            f"these weights are {want.hex()}): decode it with the weights that encoded it"
        )
