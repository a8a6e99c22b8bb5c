"""The paper's lossless coding of the integer codes: the smallest valid PNG that holds them.

Bian et al. (arXiv:1907.01714, Sec. 3) store the quantised compact representation
losslessly as a PNG; the rate is the size of that PNG.

* :func:`pack_png` writes the integers ``(C, h, w)`` as the smallest *valid, lossless*
  PNG it can find: it tries the channel layouts (interleaved gray/gray+alpha/RGB/RGBA
  samples, or the channels tiled into one grayscale image, :func:`tile_shape`), bit
  depth 8 or the packed PNG bit depths 1/2/4, the five PNG row filters plus the usual
  per-row adaptive choice, and zlib strategies at level 9, and keeps the shortest file.
  Only the mandatory chunks are written (IHDR, IDAT, IEND), so the header overhead is
  57 bytes. Any PNG decoder reads the result.
* :func:`unpack_png` checks the PNG's header against the shape it expects *before*
  decompressing anything, then reads the codes back.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from ..errors import BitstreamError
from ..models.quantizer import levels
from ..pngstream import PNG_SIGNATURE, check_png_stream, read_png_header

#: code channels -> PNG colour type (grayscale, gray+alpha, RGB, RGBA), and colour type -> samples per pixel
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_SAMPLES = {0: 1, 4: 2, 2: 3, 6: 4}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filter_rows(raw: np.ndarray, bpp: int) -> list[np.ndarray]:
    """All five PNG filters of every row: ``out[f][row]`` (uint8, without the type byte)."""
    x = raw.astype(np.int16)
    h, n = x.shape
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    upleft = np.zeros_like(x)
    upleft[1:, bpp:] = x[:-1, :-bpp]
    return [
        x.astype(np.uint8),
        ((x - left) & 0xFF).astype(np.uint8),
        ((x - up) & 0xFF).astype(np.uint8),
        ((x - ((left + up) >> 1)) & 0xFF).astype(np.uint8),
        ((x - _paeth(left, up, upleft)) & 0xFF).astype(np.uint8),
    ]


def _scanline_candidates(raw: np.ndarray, bpp: int) -> list[bytes]:
    """Filtered scanline streams: each fixed filter, and the per-row minimum-sum heuristic."""
    filtered = _filter_rows(raw, bpp)
    out = []
    for f, rows in enumerate(filtered):
        lines = np.concatenate([np.full((rows.shape[0], 1), f, np.uint8), rows], axis=1)
        out.append(lines.tobytes())
    # adaptive: per row, the filter whose bytes (as signed) have the smallest absolute sum
    scores = np.stack([np.abs(r.astype(np.int8).astype(np.int32)).sum(axis=1) for r in filtered])
    best = scores.argmin(axis=0)
    lines = np.stack([filtered[f][i] for i, f in enumerate(best)])
    lines = np.concatenate([best.astype(np.uint8)[:, None], lines], axis=1)
    out.append(lines.tobytes())
    return out


def _pack_bits(img: np.ndarray, depth: int) -> np.ndarray:
    """Pack rows of small integers (< 2**depth) MSB-first at ``depth`` bits per sample."""
    h, w = img.shape
    per = 8 // depth
    wp = -(-w // per) * per
    padded = np.zeros((h, wp), np.uint8)
    padded[:, :w] = img
    grouped = padded.reshape(h, wp // per, per).astype(np.uint16)
    shifts = np.array([depth * (per - 1 - i) for i in range(per)], np.uint16)
    return (grouped << shifts).sum(axis=2).astype(np.uint8)


def _layouts(q: np.ndarray) -> list[tuple[str, np.ndarray, int]]:
    """Ways to lay ``(C, h, w)`` codes out as a PNG image: ``(name, pixels, colour type)``."""
    c, h, w = q.shape
    out: list[tuple[str, np.ndarray, int]] = []
    if c == 1:
        out.append(("gray", q.reshape(h, w), 0))
    elif c in _COLOR_TYPES:
        out.append(("interleaved", np.ascontiguousarray(q.transpose(1, 2, 0)), _COLOR_TYPES[c]))
    if c > 1:
        out.append(("rows", q.reshape(c * h, w), 0))
    return out


def tile_shape(channels: int, height: int, width: int) -> tuple[int, int]:
    """Width and height of the grayscale tile that stacks ``channels`` maps vertically."""
    return width, channels * height


def pack_png(q: np.ndarray, bits: int, *, effort: int = 2) -> bytes:
    """The smallest valid lossless PNG holding the codes ``q`` (``(C, h, w)``, values < 2**bits).

    ``effort`` 0 writes one PNG (interleaved or tiled, bit depth 8, adaptive filters,
    level 9); 1 tries every layout, bit depth and filter; 2 also tries zlib strategies.
    """
    q = np.asarray(q)
    if q.ndim != 3 or q.dtype != np.uint8:
        raise ValueError(f"expected uint8 codes (C, h, w), got {q.dtype} {q.shape}")
    if q.size and int(q.max()) >= levels(bits):
        raise ValueError(f"codes exceed {bits} bits")
    strategies = [zlib.Z_DEFAULT_STRATEGY]
    if effort >= 2:
        strategies += [zlib.Z_FILTERED, zlib.Z_RLE, zlib.Z_HUFFMAN_ONLY]
    best: bytes | None = None
    layouts = _layouts(q)
    if effort == 0:
        layouts = layouts[:1]
    for _name, pixels, ctype in layouts:
        samples = _SAMPLES[ctype]
        ih, iw = pixels.shape[0], pixels.shape[1]
        depths = [8]
        if effort >= 1 and ctype == 0 and bits <= 4:
            depths.append(1 if bits == 1 else 2 if bits == 2 else 4)
        for depth in depths:
            rows = pixels.reshape(ih, iw * samples) if depth == 8 else _pack_bits(pixels, depth)
            bpp = samples if depth == 8 else 1
            streams = _scanline_candidates(rows, bpp)
            if effort == 0:
                streams = streams[-1:]
            ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", iw, ih, depth, ctype, 0, 0, 0))
            for stream in streams:
                for strategy in strategies:
                    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 9, strategy)
                    idat = comp.compress(stream) + comp.flush()
                    png = PNG_SIGNATURE + ihdr + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
                    if best is None or len(png) < len(best):
                        best = png
    assert best is not None
    return best


def unpack_png(data: bytes, channels: int, height: int, width: int, bits: int) -> np.ndarray:
    """Read codes ``(channels, height, width)`` back from a PNG written by :func:`pack_png`.

    The PNG's dimensions, bit depth and colour type are checked against the expected
    shape before anything is decompressed (a bitstream cannot make the decoder allocate
    more than the header it was checked against promises).
    """
    head = read_png_header(data)
    candidates = {}
    if channels in _COLOR_TYPES:
        candidates[_COLOR_TYPES[channels]] = (width, height)
    if channels > 1:
        candidates[0] = tile_shape(channels, height, width)
    if head.color_type not in candidates:
        raise BitstreamError(
            f"payload PNG has colour type {head.color_type}, which cannot hold {channels} channels"
        )
    if (head.width, head.height) != candidates[head.color_type]:
        ew, eh = candidates[head.color_type]
        raise BitstreamError(
            f"payload PNG is {head.width}x{head.height}, the header promises {ew}x{eh}"
        )
    if head.bit_depth not in (1, 2, 4, 8) or (head.color_type != 0 and head.bit_depth != 8):
        raise BitstreamError(f"payload PNG has unsupported bit depth {head.bit_depth}")
    check_png_stream(data, BitstreamError, "payload PNG")  # Pillow zero-fills a stream that ends early
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, zlib.error) as e:
        raise BitstreamError(f"payload PNG cannot be decoded (damaged): {e}") from e
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif head.bit_depth in (2, 4):
        arr = arr // np.uint8(255 // ((1 << head.bit_depth) - 1))  # Pillow scales L;2 / L;4 to 0..255
    if arr.dtype != np.uint8:
        raise BitstreamError(f"payload PNG decodes to {arr.dtype}, expected 8-bit codes")
    if head.color_type == 0:
        if arr.shape != (channels * height, width):
            raise BitstreamError(f"payload PNG decodes to shape {arr.shape}")
        q = arr.reshape(channels, height, width)
    else:
        if arr.shape != (height, width, channels):
            raise BitstreamError(f"payload PNG decodes to shape {arr.shape}")
        q = arr.transpose(2, 0, 1)
    if q.size and int(q.max()) >= levels(bits):
        raise BitstreamError(f"payload holds codes above the {bits}-bit range of this model")
    return np.ascontiguousarray(q)
