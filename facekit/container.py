"""The file format of the learned codec: a small, strictly parsed container around the payload.

Format version 2 (what :func:`pack` writes; all integers big-endian)::

    offset  size  field
    0       2     magic b"FK"
    2       1     format version (2)
    3       1     model id: variant, rate point and payload kind in one byte (see below),
                  or 255 when the model's name follows
   (4       1     length n of the model name (1..64), then n bytes of ASCII name: only
                  when the id is 255)
    4       4     first 4 bytes of the sha256 fingerprint of the model's weights (and prior)
    8       2     image height (1..8192)
    10      2     image width  (1..8192)
    12      m     payload (the PNG or range-coded stream): everything up to the CRC
    12+m    4     CRC32 of every byte before it

The model id of a shipped model ``"<variant>-q<N>"`` (``-ctx`` when range-coded;
:class:`facekit.codecs.names.ModelId`) is ``32 * v + 16 * entropy + (N - 1)``, where ``v``
is the variant's place in :data:`ID_VARIANTS` (a list only ever appended to) and ``N`` is 1..16.
So a stored image pays 16 bytes for its header and check: about 0.002 bpp on a 250x250
face, against 40 for format version 1 (below), which spelled the model's name out and
stored the payload's length. At the lowest rate points a face takes 300-600 bytes, so
the header is part of the rate that every comparison counts (``8 * len(file) / (H * W)``).

Format version 1 (still read, never written)::

    0  4  magic b"FKC\\x89" | 4  1  version (1) | 5  1  name length n | 6  n  model name
    6+n  6  weights hash | 12+n  2  height | 14+n  2  width | 16+n  4  payload length m
    20+n  m  payload | 20+n+m  4  CRC32

The container bytes are what :class:`facekit.codecs.learned.LearnedCodec` returns from
``encode``. :func:`parse` refuses anything that is not exactly such a file (wrong magic,
unknown version, truncation, trailing bytes, a CRC mismatch, absurd dimensions) with a
:class:`~facekit.errors.BitstreamError` that names the problem; :func:`check_model`
refuses bytes made by other weights.

The second-generation codec (:mod:`facekit.codecs.hyperprior`) writes files of its own,
told apart by their magic (:func:`file_kind`; :func:`parse_any` parses either kind)::

    0   4  magic b"FKH1" | 4  2  height | 6  2  width (uint16, little-endian; 1..4096)
    8   4  first 4 bytes of the sha256 fingerprint of the model | 12  m  model string

where the model string (:meth:`facekit.models.hyperprior.FaceHyperprior.compress`;
:func:`pack_hyperprior_stream`, :func:`parse_hyperprior_stream`) is ``CRC32 (4 bytes) | t
(uint16) | range-coded words`` (little-endian, the words' trailing zero bytes left out): its
CRC32 covers the image size too, so a damaged, truncated or mis-sized string fails it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .codecs.names import VARIANTS, ModelId
from .errors import BitstreamError, CodecError

MAGIC = b"FK"
VERSION = 2
HASH_BYTES = 4
#: variants with a one-byte model id, by their place in the id; only ever appended to
ID_VARIANTS = VARIANTS
#: the model id that says "the model's name follows"
NAMED = 255
#: largest image side a container may declare (a decompression-bomb guard)
MAX_SIDE = 8192
MAX_NAME = 64
#: bytes of a version-2 container besides its payload (magic, version, id, hash, size, CRC)
OVERHEAD = len(MAGIC) + 1 + 1 + HASH_BYTES + 2 + 2 + 4

MAGIC_V1 = b"FKC\x89"
#: the magic of a second-generation (facekit-hyperprior) file
HYPERPRIOR_MAGIC = b"FKH1"
#: bytes of an FKH1 file before its model string (magic, height, width, fingerprint)
HYPERPRIOR_HEADER = len(HYPERPRIOR_MAGIC) + 2 + 2 + HASH_BYTES
#: largest image side of an FKH1 file: what its model decodes (a decompression-bomb guard too)
HYPERPRIOR_MAX_SIDE = 4096
HASH_BYTES_V1 = 6
_FIXED_V1 = len(MAGIC_V1) + 1 + 1 + HASH_BYTES_V1 + 2 + 2 + 4 + 4


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
        if self.version == 1:
            return _FIXED_V1 + len(self.model.encode("ascii"))
        return OVERHEAD + (0 if model_id(self.model) is not None else 1 + len(self.model.encode("ascii")))

    def model_key(self) -> ModelId:
        """The recorded model as a :class:`~facekit.codecs.names.ModelId`; BitstreamError when it names none."""
        try:
            return ModelId.parse(self.model)
        except CodecError as e:
            raise BitstreamError(f"bitstream names an unknown model {self.model!r}") from e


def _as_id(model: str | ModelId) -> ModelId | None:
    if isinstance(model, ModelId):
        return model
    try:
        return ModelId.parse(model)
    except CodecError:
        return None


def model_id(model: str | ModelId) -> int | None:
    """The one-byte id of a model (``"jointrate-q2-ctx"`` -> 82), or None if it has none."""
    ident = _as_id(model)
    if ident is None or ident.variant not in ID_VARIANTS or not 1 <= ident.number <= 16:
        return None
    return 32 * ID_VARIANTS.index(ident.variant) + 16 * ident.entropy + ident.number - 1


def model_from_id(ident: int) -> str:
    """The model name of a one-byte id; :class:`BitstreamError` for an id no model has."""
    v, entropy, n = ident >> 5, (ident >> 4) & 1, (ident & 15) + 1
    if v >= len(ID_VARIANTS):
        raise BitstreamError(f"unknown model id {ident} (no variant {v}): made by a newer facekit?")
    return ModelId(ID_VARIANTS[v], f"q{n}", bool(entropy)).name


def model_hash(fingerprint: str | bytes, size: int = HASH_BYTES) -> bytes:
    """The first ``size`` bytes of a hex (or raw) sha256 fingerprint."""
    raw = bytes.fromhex(fingerprint) if isinstance(fingerprint, str) else bytes(fingerprint)
    if len(raw) < size:
        raise ValueError(f"fingerprint too short: {len(raw)} bytes")
    return raw[:size]


def pack(model: str | ModelId, fingerprint: str | bytes, height: int, width: int, payload: bytes) -> bytes:
    """Wrap ``payload`` in a version-2 container (see the module docstring for the layout)."""
    name = str(model).encode("ascii")
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"model name must be 1..{MAX_NAME} ASCII bytes, got {model!r}")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ValueError(f"image {width}x{height} exceeds the container's {MAX_SIDE}x{MAX_SIDE} limit")
    ident = model_id(model)
    head = bytes([ident]) if ident is not None else bytes([NAMED, len(name)]) + name
    body = MAGIC + bytes([VERSION]) + head + model_hash(fingerprint) + struct.pack(">HH", height, width) + payload
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def payload_start(data: bytes) -> int | None:
    """Offset of the payload in container bytes of either format; None if ``data`` is neither.

    The header's length, read from its own fields (format 1: the name's length; format 2:
    whether the model id is followed by a name); the bytes need not be that long.
    """
    if data[: len(MAGIC_V1)] == MAGIC_V1 and len(data) >= 6:
        return 6 + data[5] + HASH_BYTES_V1 + 8
    if data[: len(MAGIC)] == MAGIC and len(data) >= 4 and data[2] == VERSION:
        if data[3] != NAMED:
            return 4 + HASH_BYTES + 4
        return 5 + data[4] + HASH_BYTES + 4 if len(data) >= 5 else None
    return None


def pack_format1(model: str | ModelId, fingerprint: str | bytes, height: int, width: int, payload: bytes) -> bytes:
    """The format-1 container of ``payload``, as facekit wrote it before format 2.

    Only for comparing with files and measurements made before format 2 (the tests, and
    ``benchmarks/recontainer.py``); :func:`pack` writes format 2.
    """
    name = str(model).encode("ascii")
    body = (
        MAGIC_V1 + bytes([1, len(name)]) + name + model_hash(fingerprint, HASH_BYTES_V1)
        + struct.pack(">HHI", height, width, len(payload)) + payload
    )
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def _check_crc(data: bytes) -> None:
    (crc,) = struct.unpack(">I", data[-4:])
    if zlib.crc32(data[:-4]) & 0xFFFFFFFF != crc:
        raise BitstreamError("CRC32 mismatch: the file is damaged or truncated (bit flips, an edited byte, missing or trailing bytes)")


def _check_size(height: int, width: int, limit: int = MAX_SIDE) -> None:
    if not (1 <= height <= limit and 1 <= width <= limit):
        raise BitstreamError(
            f"absurd image size {width}x{height} (limit {limit}x{limit}): refusing to decode"
        )


def _name(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise BitstreamError("model name is not ASCII") from e


def parse(data: bytes) -> Container:
    """Parse and check a container (format 2, or 1); :class:`BitstreamError` naming the problem otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[: len(HYPERPRIOR_MAGIC)] == HYPERPRIOR_MAGIC:
        raise BitstreamError("a facekit-hyperprior file (magic FKH1), not a learned-codec container: "
                             "decode it with facekit-hyperprior")
    if data[: len(MAGIC_V1)] == MAGIC_V1:
        return _parse_v1(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError(
            f"not a facekit learned-codec file (wrong magic {data[:4]!r}, expected {MAGIC!r})"
        )
    if len(data) < 4:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the container header")
    if data[2] != VERSION:
        raise BitstreamError(f"unknown container format version {data[2]} (this facekit reads versions 1 and {VERSION})")
    header_end = payload_start(data)
    if header_end is None:  # a named model, cut before its name's length
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the container header")
    at = header_end - HASH_BYTES - 4  # where the weights hash starts
    if len(data) < header_end + 4:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the {header_end + 4}-byte header and check")
    _check_crc(data)
    if data[3] == NAMED:
        if not 1 <= data[4] <= MAX_NAME:
            raise BitstreamError(f"bad model-name length {data[4]}")
        model = _name(data[5:at])
    else:
        model = model_from_id(data[3])
    height, width = struct.unpack(">HH", data[at + HASH_BYTES : header_end])
    _check_size(height, width)
    return Container(
        model=model,
        model_hash=data[at : at + HASH_BYTES],
        height=height,
        width=width,
        payload=data[header_end:-4],
        version=VERSION,
    )


def _parse_v1(data: bytes) -> Container:
    """A format-1 container (written by facekit before format 2)."""
    if len(data) < 6:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the container header")
    version, n = data[4], data[5]
    if version != 1:
        raise BitstreamError(f"unknown container format version {version} (this facekit reads versions 1 and {VERSION})")
    header_end = payload_start(data)
    assert header_end is not None  # the magic matched and the name's length is there
    if len(data) < header_end + 4:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the {header_end + 4}-byte header")
    height, width, length = struct.unpack(">HHI", data[6 + n + HASH_BYTES_V1 : header_end])
    expected = header_end + length + 4
    if len(data) < expected:
        raise BitstreamError(f"truncated: {len(data)} bytes, the header promises {expected}")
    if len(data) > expected:
        raise BitstreamError(f"{len(data) - expected} unexpected trailing bytes after the container")
    _check_crc(data)
    if not 1 <= n <= MAX_NAME:
        raise BitstreamError(f"bad model-name length {n}")
    model = _name(data[6 : 6 + n])
    _check_size(height, width)
    return Container(
        model=model,
        model_hash=data[6 + n : 6 + n + HASH_BYTES_V1],
        height=height,
        width=width,
        payload=data[header_end : header_end + length],
        version=1,
    )


def check_model(container: Container, model: str | ModelId, fingerprint: str | bytes) -> None:
    """Refuse a container made by another model, or by other weights of the same model."""
    model = str(model)
    if container.model != model:
        raise BitstreamError(
            f"bitstream was made by model {container.model!r}, not {model!r}: decode it with that model"
        )
    want = model_hash(fingerprint, len(container.model_hash))
    if container.model_hash != want:
        raise BitstreamError(
            f"bitstream was made by other weights of {model!r} (weights hash {container.model_hash.hex()}, "
            f"these weights are {want.hex()}): decode it with the weights that encoded it"
        )


@dataclass(frozen=True)
class HyperpriorFile:
    """The parsed header of an FKH1 file: image size, the model's fingerprint prefix, the model string."""

    height: int
    width: int
    model_hash: bytes
    stream: bytes


def file_kind(data: bytes) -> str | None:
    """Which facekit file ``data`` is, by its magic: ``"container"`` (the learned codecs, format 1
    or 2), ``"hyperprior"`` (FKH1), or None.

    Example: ``file_kind(open("face.fkc", "rb").read())`` -> ``"hyperprior"``.
    """
    head = bytes(data[:4])
    if head == HYPERPRIOR_MAGIC:
        return "hyperprior"
    if head == MAGIC_V1 or head[: len(MAGIC)] == MAGIC:
        return "container"
    return None


def pack_hyperprior(fingerprint: str | bytes, height: int, width: int, stream: bytes) -> bytes:
    """An FKH1 file: the header (see the module docstring) and the model's string ``stream``."""
    if not (1 <= height <= HYPERPRIOR_MAX_SIDE and 1 <= width <= HYPERPRIOR_MAX_SIDE):
        raise ValueError(f"image {width}x{height} exceeds the format's {HYPERPRIOR_MAX_SIDE}x{HYPERPRIOR_MAX_SIDE} limit")
    return HYPERPRIOR_MAGIC + struct.pack("<HH", height, width) + model_hash(fingerprint) + bytes(stream)


def parse_hyperprior(data: bytes) -> HyperpriorFile:
    """The header of an FKH1 file; :class:`BitstreamError` for a wrong magic, a cut header or an absurd size.

    The model string is checked by the model itself (its CRC32 covers the size as well).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[: len(HYPERPRIOR_MAGIC)] != HYPERPRIOR_MAGIC:
        raise BitstreamError(f"not a facekit-hyperprior file (wrong magic {data[:4]!r}, expected {HYPERPRIOR_MAGIC!r})")
    if len(data) < HYPERPRIOR_HEADER:
        raise BitstreamError(f"truncated: {len(data)} bytes, shorter than the {HYPERPRIOR_HEADER}-byte FKH1 header")
    at = len(HYPERPRIOR_MAGIC)
    height, width = struct.unpack("<HH", data[at : at + 4])
    _check_size(height, width, HYPERPRIOR_MAX_SIDE)
    return HyperpriorFile(height, width, data[at + 4 : HYPERPRIOR_HEADER], data[HYPERPRIOR_HEADER:])


def pack_hyperprior_stream(t16: int, words: np.ndarray, height: int, width: int) -> bytes:
    """A model string: the stored rate ``t16`` and the range coder's uint32 ``words`` of one
    ``height x width`` image, under a CRC32 that covers the image size too."""
    body = struct.pack("<H", t16) + np.asarray(words).astype("<u4").tobytes().rstrip(b"\x00")
    return struct.pack("<I", zlib.crc32(struct.pack("<II", height, width) + body)) + body


def parse_hyperprior_stream(data: bytes, height: int, width: int) -> tuple[int, np.ndarray]:
    """``(t16, words)`` of a model string after its CRC check; :class:`BitstreamError` when it is
    damaged, cut, or was made for another image size. The words end with the stripped zero
    bytes and then zeros (what a range decoder reads past the end)."""
    if len(data) < 6:
        raise BitstreamError(f"hyperprior stream of {len(data)} bytes is too short (truncated)")
    crc, body = struct.unpack("<I", data[:4])[0], data[4:]
    if zlib.crc32(struct.pack("<II", height, width) + body) != crc:
        raise BitstreamError("hyperprior stream fails its CRC32 check (truncated, damaged, or another image size)")
    raw = body[2:] + b"\x00" * ((-(len(body) - 2)) % 4 + 8)
    return struct.unpack("<H", body[:2])[0], np.frombuffer(raw, dtype="<u4").astype(np.uint32)


def parse_any(data: bytes) -> Container | HyperpriorFile:
    """Parse either kind of facekit file, told apart by its magic (:func:`file_kind`).

    Example: ``parse_any(data).height``; a :class:`BitstreamError` names the problem otherwise.
    """
    if isinstance(data, bytes | bytearray | memoryview) and file_kind(data) == "hyperprior":
        return parse_hyperprior(data)
    return parse(data)
