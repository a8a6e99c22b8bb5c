"""Is a PNG's image data complete? Checked before Pillow decodes it.

Pillow decodes a PNG whose ``IDAT`` zlib stream ends early without an error, filling
the missing rows with zeros: a damaged file would silently become a different image.
:func:`check_png_stream` walks the chunks, inflates the image data in bounded pieces
(never holding more than 1 MiB of it) and refuses a stream that holds fewer, or more,
bytes than the header promises. Used by the PNG codec, the learned codec's PNG payload
and ``facekit compress``'s image reader.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

from .errors import BitstreamError, FacekitError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: samples per pixel of each PNG colour type
SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 passes: (x0, y0, dx, dy)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@dataclass(frozen=True)
class PngHeader:
    """The fields of a PNG's IHDR chunk."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int


def read_png_header(data: bytes, error: type[FacekitError] = BitstreamError, what: str = "payload PNG") -> PngHeader:
    """Parse and check the signature and IHDR of a PNG without decompressing anything."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE:
        raise error(f"{what}: not a PNG (bad signature or shorter than a PNG header)")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise error(f"{what} does not start with a valid IHDR chunk")
    body = data[16:29]
    (crc,) = struct.unpack(">I", data[29:33])
    if zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF != crc:
        raise error(f"{what} header fails its CRC")
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", body)
    if comp != 0 or filt != 0 or interlace not in (0, 1):
        raise error(f"{what} uses an unknown compression, filter or interlace method")
    return PngHeader(w, h, depth, ctype, interlace)


def expected_data_size(width: int, height: int, bit_depth: int, color_type: int, interlace: int) -> int:
    """Bytes of filtered scanlines (one filter byte a row) an image of this header holds."""
    if color_type not in SAMPLES:
        raise BitstreamError(f"PNG colour type {color_type} is not a valid PNG colour type")
    bits = bit_depth * SAMPLES[color_type]
    if not interlace:
        return height * (1 + math.ceil(width * bits / 8))
    total = 0
    for x0, y0, dx, dy in ADAM7:
        pw, ph = math.ceil(max(0, width - x0) / dx), math.ceil(max(0, height - y0) / dy)
        if pw and ph:
            total += ph * (1 + math.ceil(pw * bits / 8))
    return total


def check_png_stream(data: bytes, error: type[FacekitError] = BitstreamError, what: str = "PNG") -> None:
    """Raise ``error`` unless the image data of the PNG ``data`` inflates to exactly its declared size."""
    data = bytes(data)
    head = read_png_header(data, error, what)
    width, height, interlace = head.width, head.height, head.interlace
    try:
        expected = expected_data_size(width, height, head.bit_depth, head.color_type, interlace)
    except BitstreamError as e:
        raise error(f"{what}: {e}") from None
    idat, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    inflater = zlib.decompressobj()
    total, pending = 0, b"".join(idat)
    try:
        while total <= expected:
            out = inflater.decompress(pending, 1 << 20)
            total += len(out)
            pending = inflater.unconsumed_tail
            if inflater.eof or (not out and not pending):
                break
    except zlib.error as e:
        raise error(f"{what}: image data is damaged ({e})") from None
    if total < expected:
        rows = f"; about {total * height // max(expected, 1)} of {height} rows" if not interlace else ""
        raise error(f"{what}: image data ends early: {total} of the {expected} bytes its header promises{rows} "
                    "(truncated or damaged file)")
    if total > expected:
        raise error(f"{what}: image data holds more than the {expected} bytes its header promises (damaged file)")
