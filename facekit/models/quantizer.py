"""Quantisation of the compact representation, and its lossless storage as PNG.

Bian et al. (arXiv:1907.01714, Sec. 3) quantise the compact representation made by the
compression network to 8 bits and store it losslessly as a PNG; the rate is the size of
that PNG. facekit does the same, with the bit depth ``bits`` of each rate point (1..8):

* :class:`Quantizer` maps the encoder's bounded output ``y`` in ``(0, 1)`` to the
  integers ``q = round(y * (2**bits - 1))``. In training the rounding passes the
  gradient straight through (``mode="ste"``, Bengio et al. 2013; the decoder then sees
  exactly the values it sees at inference) or is replaced by additive uniform noise
  (``mode="noise"``, Ballé et al. 2017). In ``eval`` mode it always rounds, so the
  decoder at inference sees exactly the integers that are stored.
* :func:`pack_png` writes the integers ``(C, h, w)`` as the smallest *valid, lossless*
  PNG it can find: it tries the channel layouts (interleaved gray/gray+alpha/RGB/RGBA
  samples, or the channels tiled into one grayscale image), bit depth 8 or the packed
  PNG bit depths 1/2/4, the five PNG row filters plus the usual per-row adaptive
  choice, and zlib strategies at level 9, and keeps the shortest file. Only the
  mandatory chunks are written (IHDR, IDAT, IEND), so the header overhead is 57 bytes.
  Any PNG decoder reads the result; :func:`unpack_png` checks its header against the
  shape it expects *before* decompressing anything.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import BitstreamError
from ..pngstream import PNG_SIGNATURE, PngHeader, check_png_stream, read_png_header  # noqa: F401 (re-exported)

#: PNG colour type -> samples per pixel (grayscale, gray+alpha, RGB, RGBA)
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_SAMPLES = {0: 1, 4: 2, 2: 3, 6: 4}


def levels(bits: int) -> int:
    """Number of quantisation levels for a bit depth: ``2**bits``."""
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bit depth must be 1..8, got {bits}")
    return 1 << int(bits)


class Quantizer(nn.Module):
    """Uniform scalar quantiser of ``y`` in ``[0, 1]`` to ``2**bits`` levels.

    ``forward(y)`` returns ``y_hat`` in ``[0, 1]`` (the dequantised value the decoder
    sees); :meth:`quantize` returns the integer codes stored in the bitstream and
    :meth:`dequantize` maps them back, exactly as ``forward`` does in ``eval`` mode.
    """

    def __init__(self, bits: int, mode: str = "ste") -> None:
        super().__init__()
        if mode not in ("ste", "noise"):
            raise ValueError(f"quantiser mode must be 'ste' or 'noise', got {mode!r}")
        self.bits = int(bits)
        self.scale = float(levels(bits) - 1)
        self.mode = mode

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode!r}"

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y.clamp(0.0, 1.0)
        if not self.training:
            return torch.round(y * self.scale) / self.scale
        if self.mode == "noise":
            noise = torch.empty_like(y).uniform_(-0.5, 0.5)
            return (y * self.scale + noise).clamp(0.0, self.scale) / self.scale
        y_q = torch.round(y * self.scale) / self.scale
        return y + (y_q - y).detach()

    def quantize(self, y: torch.Tensor) -> torch.Tensor:
        """Integer codes ``round(clamp(y, 0, 1) * (2**bits - 1))`` as ``uint8``."""
        return torch.round(y.detach().float().clamp(0.0, 1.0) * self.scale).to(torch.uint8)

    def dequantize(self, q: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Codes back to ``[0, 1]``: ``q / (2**bits - 1)``."""
        return q.to(dtype) / self.scale


# --------------------------------------------------------------------------- PNG


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


# --------------------------------------------------------------------------- context model


class RangeCodedPrior:
    """What every range-coded prior shares: the wavefront order, the coder, the length check.

    A subclass gives the categorical distribution of each position from its causal
    neighbours (:meth:`_rows`, float64 probabilities that every machine computes bit for
    bit alike) and ``bits``, ``levels``, ``channels``, ``format``, ``digest``, ``state`` and
    ``describe``; coding goes channel by channel, front by front (:func:`_coding_steps`),
    so every neighbour a position reads is known to the decoder when it gets there.
    """

    bits: int
    levels: int
    left = True

    @property
    def channels(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _rows(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """``(n, levels)`` probabilities of positions ``(ii, jj)`` of channel ``c`` of codes ``q``."""
        raise NotImplementedError  # pragma: no cover

    def steps(self, height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The decoding order: positions ``(rows, cols)`` decoded together, step by step."""
        return _coding_steps(self.left, int(height), int(width))

    def bits_estimate(self, q: np.ndarray) -> float:
        """Ideal code length of ``q`` in bits under the model (no coder overhead)."""
        return self._sum_bits(q, floor=False)

    @staticmethod
    def _coder():  # type: ignore[no-untyped-def]
        try:
            import constriction
        except ImportError as e:  # pragma: no cover - optional dependency
            raise BitstreamError("the -entropy variants need the 'constriction' package (pip install constriction)") from e
        return constriction

    def _coded_steps(self, height: int, width: int, mask: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The positions of each step that are coded (those ``mask`` keeps), empty steps left out."""
        steps = self.steps(height, width)
        if mask is not None:
            steps = [(ii[keep], jj[keep]) for ii, jj in steps for keep in [mask[ii, jj]]]
        return [(ii, jj) for ii, jj in steps if ii.size]

    def _coded(self, q: np.ndarray, mask: np.ndarray | None):  # type: ignore[no-untyped-def]
        """``(probabilities, symbols)`` of each coding step, in decode's order (all of a channel's at once)."""
        coded = self._coded_steps(q.shape[1], q.shape[2], mask)
        for c in range(q.shape[0]):
            if not coded:
                continue
            rows = self._rows(q, c, np.concatenate([ii for ii, _ in coded]), np.concatenate([jj for _, jj in coded]))
            at = 0
            for ii, jj in coded:
                yield rows[at : at + ii.size], q[c, ii, jj]
                at += ii.size

    @staticmethod
    def _bits_of(rows: np.ndarray, sym: np.ndarray, floor: bool = True) -> float:
        """``-log2 p`` of ``sym`` summed over one step (floored at 2**-20, as the coder's check counts)."""
        p = rows[np.arange(len(sym)), np.asarray(sym, np.int64)]
        return float(-np.log2(np.maximum(p, 2.0**-20) if floor else p).sum())

    def encode(self, q: np.ndarray, mask: np.ndarray | None = None) -> bytes:
        """Range-code ``q`` (``(C, h, w)`` uint8) channel by channel, in :meth:`steps` order.

        With ``mask`` (``(h, w)`` bool), only the positions it keeps are coded; the others
        must be known to the decoder (:meth:`decode`'s ``fill``) and serve as context only.
        """
        q = np.asarray(q)
        if q.ndim != 3 or q.shape[0] != self.channels or (q.size and int(q.max()) >= self.levels):
            raise ValueError(f"codes of shape {q.shape} do not fit this {self.channels}-channel {self.bits}-bit prior")
        mask = self._check_mask(mask, q.shape[1:])
        cs = self._coder()
        spent = 0.0  # what information() counts, summed in decode's order, from the same probabilities
        syms, rows = [], []
        for p, sym in self._coded(q, mask):
            syms.append(sym)
            rows.append(p)
            spent += self._bits_of(p, sym)
        enc = cs.stream.queue.RangeEncoder()
        if syms:  # one call: a queue coder's output depends only on the sequence of symbols
            enc.encode(np.concatenate(syms).astype(np.int32), cs.stream.model.Categorical(perfect=False), np.concatenate(rows))
        raw = enc.get_compressed().astype("<u4").tobytes()
        # The decoder reads zeros past the end, so trailing zero bytes need not be stored,
        # but only down to the length that decode's information check accepts: a stream
        # whose last rows code to zero bits (a long run of the symbol at the bottom of its
        # range) would otherwise look too short for what it holds.
        need = self._min_length(spent)
        data = raw.rstrip(b"\x00")
        if len(data) < need:
            data = raw[:need] + b"\x00" * max(0, need - len(raw))
        return data

    #: decode refuses a payload of ``n`` bytes once the codes it has decoded carry more than
    #: ``8 * n * _SLACK + _BASE_BITS`` bits of information under the model
    _SLACK, _BASE_BITS = 1.01, 64.0

    def information(self, q: np.ndarray, mask: np.ndarray | None = None) -> float:
        """Information of ``q`` in bits as :meth:`decode`'s check counts it (step by step, floored)."""
        return self._sum_bits(q, self._check_mask(mask, np.shape(q)[1:]))

    def _sum_bits(self, q: np.ndarray, mask: np.ndarray | None = None, *, floor: bool = True) -> float:
        """``-log2 p`` of every symbol of ``q`` (where ``mask`` keeps), summed step by step in decode's order."""
        spent = 0.0
        for p, sym in self._coded(np.asarray(q), mask):
            spent += self._bits_of(p, sym, floor)
        return spent

    @staticmethod
    def _check_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != tuple(shape):
            raise ValueError(f"the mask must be bool of shape {tuple(shape)}, got {mask.dtype} {mask.shape}")
        return mask

    @classmethod
    def _min_length(cls, spent: float) -> int:
        """Fewest payload bytes whose budget holds ``spent`` bits, plus one byte of slack."""
        return max(0, math.ceil((spent - cls._BASE_BITS) / (8 * cls._SLACK))) + 1

    def decode(
        self,
        data: bytes,
        height: int,
        width: int,
        mask: np.ndarray | None = None,
        fill: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Codes ``(C, height, width)`` back from :meth:`encode`'s bytes.

        With ``mask``, only the positions it keeps are read from ``data``; the others take
        ``fill`` (one value per channel), as the encoder's codes held them.

        A range decoder reads zeros once its data runs out, so it would turn any payload
        into codes of any declared size. Here the information of the codes decoded so far
        (``-log2 p`` under the model, probabilities floored at 2**-20 so it never exceeds
        the coder's code length) is checked after every step against the payload's size; a
        payload too short for what it claims to hold is refused as soon as that shows.
        :meth:`encode` drops trailing zero bytes only down to the length this check needs
        (:meth:`information`), so every stream it writes passes.
        """
        cs = self._coder()
        mask = self._check_mask(mask, (height, width))
        pad = (-len(data)) % 4
        words = np.frombuffer(bytes(data) + b"\x00" * (pad + 8), dtype="<u4").astype(np.uint32)
        model = cs.stream.model.Categorical(perfect=False)
        q = np.zeros((self.channels, height, width), np.uint8)
        if mask is not None:
            fill = np.asarray(fill if fill is not None else [], dtype=np.int64)
            if fill.shape != (self.channels,) or (fill < 0).any() or (fill >= self.levels).any():
                raise BitstreamError(f"a masked stream needs {self.channels} fill values below {self.levels}, got {fill.tolist()}")
            q[:, ~mask] = fill.astype(np.uint8)[:, None]
        budget = 8 * len(data) * self._SLACK + self._BASE_BITS
        spent = 0.0
        try:
            dec = cs.stream.queue.RangeDecoder(words)
            coded = self._coded_steps(height, width, mask)
            for c in range(self.channels):
                for ii, jj in coded:
                    rows = self._rows(q, c, ii, jj)
                    sym = dec.decode(model, rows)
                    q[c, ii, jj] = sym
                    spent += self._bits_of(rows, sym)
                    if spent > budget:
                        raise BitstreamError(
                            f"range-coded payload ran out: {len(data)} bytes cannot hold the "
                            f"{self.channels}x{height}x{width} codes it claims (truncated or forged)"
                        )
        except (ValueError, RuntimeError, OverflowError, AssertionError) as e:  # constriction asserts on bad data
            raise BitstreamError(f"range-coded payload cannot be decoded (damaged): {e}") from e
        return q



class ContextPrior(RangeCodedPrior):
    """A fitted context model of the code plus range coding: the ``-entropy`` variants.

    Beyond Bian et al. (who store the code as PNG): each integer ``q[c, i, j]`` is coded
    with a categorical distribution chosen by a causal context of neighbours, each binned
    to a few levels (plus "not available"). Two layouts exist:

    * ``facekit-prior/1`` (``left=False``): the one above, the mean of the two diagonally
      above, and the same position in the previous channel, ``bins`` levels each. A row's
      contexts depend only on rows above and earlier channels, so it decodes row by row.
    * ``facekit-prior/2`` (``left=True``, what :func:`facekit.train.fit_prior` fits): the
      same three plus the left neighbour, each with its own number of bins. A position
      then depends on its row's left part, so it decodes by anti-diagonal wavefronts
      (``j + 2 i`` constant: every neighbour used lies on an earlier front). On LFW's
      training split the left neighbour saves 5-11 % of the bits (largest at q4).
    * ``facekit-prior/3`` (``neighbours=...``, what :func:`facekit.train.fit_prior` fits
      since format 2 of the container): any neighbours of :data:`OFFSETS`, each with its
      own bins, chosen on the training codes by :meth:`select` (greedy forward selection
      scored on a held-out fifth of them). It decodes by the same wavefronts: every
      same-channel neighbour lies on an earlier front, and earlier channels are complete.
      Its probabilities back off along the neighbours' order (most useful first): the
      distribution of a context is its counts plus ``beta`` times the distribution of the
      context of its first ``k - 1`` neighbours, down to the channel's symbol counts
      (interpolated smoothing in the manner of PPM and Witten-Bell), so rich contexts
      seen a few times do not fall back to a uniform guess. On LFW's test images it codes
      the jointrate codes in 1-13 % fewer bytes than ``/2`` (most at q4, whose 16 levels
      ``/2`` binned to 8).
    * ``facekit-prior/4`` is not a table: :class:`facekit.models.neural_prior.NeuralPrior`
      computes each distribution with small integer networks over a wider causal window,
      and shares this class's coder and length check through :class:`RangeCodedPrior`.

    The tables are maximum-likelihood counts over the training codes with add-``alpha``
    smoothing (and, for ``/3``, the back-off above); they are fitted after the networks
    are trained. Coding uses
    ``constriction``'s range coder; probabilities are computed in float64 from integer
    counts, so every machine builds the same fixed-point tables.
    """

    FORMAT = "facekit-prior/1"
    FORMAT_LEFT = "facekit-prior/2"
    FORMAT_NEIGHBOURS = "facekit-prior/3"
    #: the neighbours a ``facekit-prior/3`` context may read, as (channels back, rows, columns)
    #: from the coded position; same-channel ones lie on earlier wavefronts (``dj + 2 di < 0``)
    OFFSETS = {
        "up": (0, -1, 0), "left": (0, 0, -1), "upright": (0, -1, 1), "upleft": (0, -1, -1),
        "upup": (0, -2, 0), "leftleft": (0, 0, -2), "upupright": (0, -2, 1),
        "prev": (1, 0, 0), "prev_right": (1, 0, 1), "prev_down": (1, 1, 0), "prev_left": (1, 0, -1),
        "prev_up": (1, -1, 0), "prev2": (2, 0, 0),
    }
    #: :meth:`select`'s defaults: the largest table (channels x contexts x levels), the
    #: back-off weight, and the smallest relative saving for which a neighbour is added
    SELECT_CAP, SELECT_BETA, SELECT_MIN_GAIN = 2_000_000, 4.0, 0.002
    #: neighbours of each layout, in the order of the mixed-radix context index
    NEIGHBOURS = {False: ("up", "diag", "prev"), True: ("up", "left", "diag", "prev")}
    #: bins per neighbour a ``left`` prior tries, finest first (capped at the number of levels)
    LEFT_BINS = ((8, 8, 6, 3), (8, 8, 4, 2), (6, 6, 4, 2), (4, 4, 4, 2), (4, 4, 2, 2), (2, 2, 2, 2))

    def __init__(
        self,
        counts: np.ndarray,
        bits: int,
        bins: int | Sequence[int],
        alpha: float = 0.5,
        *,
        left: bool = False,
        neighbours: Sequence[str] | None = None,
        beta: float = 0.0,
    ) -> None:
        counts = np.asarray(counts, dtype=np.int64)
        self.bits, self.alpha, self.beta = int(bits), float(alpha), float(beta)
        self.levels = levels(bits)
        self.general = neighbours is not None
        self.left = bool(left) or self.general
        if self.general:
            self.neighbours = tuple(str(n) for n in neighbours)  # type: ignore[union-attr]
            unknown = [n for n in self.neighbours if n not in self.OFFSETS]
            if unknown or len(set(self.neighbours)) != len(self.neighbours):
                raise ValueError(f"neighbours {self.neighbours} must be distinct names of {sorted(self.OFFSETS)}")
            if not self.beta >= 0:
                raise ValueError(f"beta must be >= 0, got {beta}")
        else:
            if self.beta:
                raise ValueError("beta (back-off) needs a facekit-prior/3 layout (neighbours=...)")
            self.neighbours = self.NEIGHBOURS[self.left]
        per = self._per_neighbour(bins, len(self.neighbours))
        if (
            len(per) != len(self.neighbours) or (per and min(per) < 1)
            or (not self.left and len(set(per)) != 1)
        ):
            raise ValueError(f"bins {bins!r} do not fit the neighbours {self.neighbours}")
        self.bins_per = per
        k = int(np.prod([b + 1 for b in per]))
        if counts.ndim != 3 or counts.shape[1:] != (k, self.levels) or (counts < 0).any():
            raise ValueError(f"context counts must be (C, {k}, {self.levels}) non-negative, got {counts.shape}")
        self.counts = counts
        self.probs = self._probabilities()

    def _probabilities(self) -> np.ndarray:
        """``(C, K, L)`` float64 probabilities from the integer counts (add-``alpha``; ``/3``: back-off)."""
        if not (self.general and self.beta > 0):
            smoothed = self.counts.astype(np.float64) + self.alpha
            return smoothed / smoothed.sum(axis=2, keepdims=True)
        c_count, n = self.counts.shape[0], len(self.bins_per)
        full = self.counts.reshape((c_count, *[b + 1 for b in self.bins_per], self.levels))
        top = full.sum(axis=tuple(range(1, n + 1)), keepdims=True).astype(np.float64)
        p = (top + self.alpha) / (top.sum(axis=-1, keepdims=True) + self.alpha * self.levels)
        for k in range(1, n + 1):  # the context of the first k neighbours backs off to that of k - 1
            nk = full.sum(axis=tuple(range(k + 1, n + 1)), keepdims=True).astype(np.float64)
            p = (nk + self.beta * p) / (nk.sum(axis=-1, keepdims=True) + self.beta)
        return np.ascontiguousarray(np.broadcast_to(p, full.shape).reshape(self.counts.shape))

    @classmethod
    def _per_neighbour(cls, bins: int | Sequence[int], count: int) -> tuple[int, ...]:
        """``bins`` as one number per neighbour of the layout."""
        if np.ndim(bins) == 0:
            return (int(bins),) * count  # type: ignore[arg-type]
        return tuple(int(b) for b in bins)  # type: ignore[union-attr]

    @property
    def bins(self) -> int:
        """The finest binning of any neighbour (all of them, for a ``facekit-prior/1`` prior)."""
        return max(self.bins_per)

    @property
    def format(self) -> str:
        if self.general:
            return self.FORMAT_NEIGHBOURS
        return self.FORMAT_LEFT if self.left else self.FORMAT

    @property
    def channels(self) -> int:
        return int(self.counts.shape[0])

    def describe(self) -> str:
        """The context in words, for manifests."""
        words = {"up": "up", "left": "left", "diag": "mean of the two diagonal-up", "prev": "previous channel"}
        if not self.left:
            return f"{', '.join(words[n] for n in self.neighbours)}; {self.bins} bins each"
        text = ", ".join(f"{words.get(n, n)} ({b} bins)" for n, b in zip(self.neighbours, self.bins_per, strict=True))
        return text + (f"; back-off {self.beta:g}" if self.general else "")

    @classmethod
    def default_bins(cls, bits: int, channels: int, max_entries: int | None = None, *, left: bool = False) -> Any:
        """The finest binning whose table stays under ``max_entries`` (default 100,000; ``left``: 250,000).

        ``left=False``: one number for all three neighbours (8, 6 or 4 levels, else 2);
        ``left=True``: a tuple, one per neighbour, from :attr:`LEFT_BINS`.
        """
        n = levels(bits)
        cap = max_entries if max_entries is not None else (250_000 if left else 100_000)
        if left:
            for cand in cls.LEFT_BINS:
                per = tuple(min(b, n) for b in cand)
                if int(np.prod([b + 1 for b in per])) * n * channels <= cap:
                    return per
            return tuple(min(2, n) for _ in cls.LEFT_BINS[0])
        for b in (8, 6, 4):
            b = min(b, n)
            if (b + 1) ** 3 * n * channels <= cap:
                return b
        return 2

    def _rows(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        return self.probs[c, self.contexts_at(q, c, ii, jj)]

    def _log_p(self) -> np.ndarray:
        """``(C, K, L)`` code lengths in bits, floored as the coder's length check counts them."""
        return -np.log2(np.maximum(self.probs, 2.0**-20))

    def contexts_at(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """Context indices of positions ``(ii, jj)`` of channel ``c`` (their causal neighbours only)."""
        h, w = q.shape[1], q.shape[2]
        na = self.levels  # "not available"
        index = np.zeros(ii.shape, np.int64)
        for name, b in zip(self.neighbours, self.bins_per, strict=True):
            if name == "diag":
                r = np.maximum(ii - 1, 0)
                pair = q[c, r, np.maximum(jj - 1, 0)].astype(np.int64) + q[c, r, np.minimum(jj + 1, w - 1)]
                v = np.where(ii > 0, pair // 2, na)
            else:  # up, left, prev, and the other offsets of facekit-prior/3
                dc, di, dj = self.OFFSETS[name]
                r, s = ii + di, jj + dj
                ok = (r >= 0) & (r < h) & (s >= 0) & (s < w)
                if c - dc < 0:
                    v = np.full(ii.shape, na)
                else:
                    v = np.where(ok, q[c - dc, np.clip(r, 0, h - 1), np.clip(s, 0, w - 1)], na)
            v = np.asarray(v, np.int64)
            index = index * (b + 1) + self._bin(v, b, na)
        return index

    @staticmethod
    def _bin(values: np.ndarray, bins: int, levels: int) -> np.ndarray:
        """A neighbour's values (``levels`` for "not available") as bins ``0..bins-1``, ``bins`` for not available."""
        return np.where(values >= levels, bins, (values * bins) // levels)

    def contexts(self, q: np.ndarray) -> np.ndarray:
        """Context index of every position of codes ``(C, h, w)``."""
        q = np.asarray(q)
        ii, jj = np.indices(q.shape[1:])
        return np.stack([self.contexts_at(q, c, ii, jj) for c in range(q.shape[0])])

    @classmethod
    def fit(
        cls,
        codes: Sequence[np.ndarray],
        bits: int,
        bins: int | Sequence[int] | None = None,
        alpha: float = 0.5,
        *,
        left: bool = False,
        neighbours: Sequence[str] | None = None,
        beta: float = 0.0,
    ) -> ContextPrior:
        """Count the contexts and symbols of training codes (each ``(C, h, w)`` uint8).

        ``neighbours`` (with ``bins``, one per neighbour, and ``beta``) fits a
        ``facekit-prior/3`` layout; :meth:`select` chooses them.
        """
        if not codes:
            raise ValueError("no codes to fit a context prior on")
        c_count = codes[0].shape[0]
        n_nb = len(neighbours) if neighbours is not None else len(cls.NEIGHBOURS[left])
        if bins is None:
            if neighbours is not None:
                raise ValueError("a facekit-prior/3 layout needs its bins (one per neighbour)")
            bins = cls.default_bins(bits, c_count, left=left)
        k = int(np.prod([b + 1 for b in cls._per_neighbour(bins, n_nb)]))
        n_levels = levels(bits)
        counts = np.zeros((c_count, k, n_levels), np.int64)
        proto = cls(counts, bits, bins, alpha, left=left, neighbours=neighbours, beta=beta)
        for q in codes:
            ctx = proto.contexts(q)
            for c in range(c_count):
                flat = ctx[c].ravel() * n_levels + q[c].astype(np.int64).ravel()
                counts[c] += np.bincount(flat, minlength=k * n_levels).reshape(k, n_levels)
        return cls(counts, bits, bins, alpha, left=left, neighbours=neighbours, beta=beta)

    @classmethod
    def select(
        cls,
        codes: Sequence[np.ndarray],
        bits: int,
        *,
        cap: int | None = None,
        beta: float | None = None,
        min_gain: float | None = None,
        holdout: float = 0.2,
        seed: int = 0,
        alpha: float = 0.5,
    ) -> ContextPrior:
        """Choose a ``facekit-prior/3`` context on training codes, then fit it on all of them.

        Greedy forward selection: starting from no neighbour, add the neighbour of
        :data:`OFFSETS` and the number of bins (the levels up to 16, or a half or a quarter of
        that) that most shortens the ideal code length of a held-out ``holdout``
        share of the codes (chosen by ``seed``) under a prior fitted on the rest; stop when
        the best addition saves less than ``min_gain`` of it, or when every addition would
        make the table (channels x contexts x levels) larger than ``cap``. Only the
        training codes are seen. The chosen order is the back-off order. The search is
        recorded in ``prior.selection`` (neighbours, bins and held-out bytes per code after
        each step).
        """
        cap = int(cap if cap is not None else cls.SELECT_CAP)
        beta = float(beta if beta is not None else cls.SELECT_BETA)
        min_gain = float(min_gain if min_gain is not None else cls.SELECT_MIN_GAIN)
        codes = [np.asarray(q) for q in codes]
        if len(codes) < 2:
            raise ValueError("selecting a context needs at least two training codes (one to hold out)")
        c_count, n_levels = codes[0].shape[0], levels(bits)
        order = np.random.default_rng(seed).permutation(len(codes))
        n_val = min(len(codes) - 1, max(1, int(round(holdout * len(codes)))))
        val, fit = [codes[i] for i in order[:n_val]], [codes[i] for i in order[n_val:]]
        names = [n for n, (dc, _, _) in cls.OFFSETS.items() if dc < c_count]
        top_bins = min(n_levels, 16)
        options = sorted({top_bins, max(1, top_bins // 2), max(1, top_bins // 4)})

        def raw(group: list[np.ndarray], name: str, c: int) -> np.ndarray:
            probe = cls(np.zeros((1, n_levels + 1, n_levels), np.int64), bits, [n_levels], neighbours=[name])
            out = []
            for q in group:
                ii, jj = np.indices(q.shape[1:])
                out.append(probe.contexts_at(q, c, ii, jj).ravel())  # the raw value, n_levels if unavailable
            return np.concatenate(out).astype(np.int16)

        feats = {
            (g, c, n): raw(grp, n, c) for g, grp in (("fit", fit), ("val", val)) for c in range(c_count) for n in names
        }
        syms = {
            (g, c): np.concatenate([q[c].astype(np.int64).ravel() for q in grp])
            for g, grp in (("fit", fit), ("val", val)) for c in range(c_count)
        }

        def extend(state: tuple[np.ndarray, np.ndarray, int, np.ndarray], c: int, name: str, b: int):  # type: ignore[no-untyped-def]
            """A channel's context indices (fit, held out), table size and held-out probabilities, one neighbour on."""
            i_fit, i_val, k, p = state
            v_fit, v_val = feats["fit", c, name], feats["val", c, name]
            i_fit = i_fit * (b + 1) + cls._bin(v_fit, b, n_levels)
            i_val = i_val * (b + 1) + cls._bin(v_val, b, n_levels)
            k *= b + 1
            s_fit, s_val = syms["fit", c], syms["val", c]
            cnt = np.bincount(i_fit * n_levels + s_fit, minlength=k * n_levels).reshape(k, n_levels)
            return i_fit, i_val, k, (cnt[i_val, s_val] + beta * p) / (cnt.sum(axis=1)[i_val] + beta)

        def held_out_bytes(states: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]) -> float:
            return sum(float(-np.log2(st[3]).sum()) for st in states) / 8 / len(val)

        states = []  # per channel, for the neighbours chosen so far (none: the channel's symbol counts)
        for c in range(c_count):
            s_fit, s_val = syms["fit", c], syms["val", c]
            top = np.bincount(s_fit, minlength=n_levels).astype(np.float64)
            p0 = ((top + alpha) / (top.sum() + alpha * n_levels))[s_val]
            states.append((np.zeros_like(s_fit), np.zeros_like(s_val), 1, p0))
        spec: list[tuple[str, int]] = []
        best = held_out_bytes(states)
        trace = [{"neighbours": [], "bins": [], "held_out_bytes": round(best, 2)}]
        while True:
            size = states[0][2] * n_levels * c_count
            trials = [
                (held_out_bytes([extend(st, c, n, b) for c, st in enumerate(states)]), n, b)
                for n in names if n not in {m for m, _ in spec}
                for b in options if size * (b + 1) <= cap
            ]
            if not trials:
                break
            score, n, b = min(trials)
            if score > best * (1 - min_gain):
                break
            best, spec = score, [*spec, (n, b)]
            states = [extend(st, c, n, b) for c, st in enumerate(states)]
            trace.append({"neighbours": [m for m, _ in spec], "bins": [x for _, x in spec], "held_out_bytes": round(best, 2)})
        prior = cls.fit(codes, bits, [b for _, b in spec], alpha, neighbours=[n for n, _ in spec], beta=beta)
        prior.selection = trace
        return prior

    def state(self) -> dict[str, Any]:
        """What a prior file stores (tensors and plain values, for ``weights_only`` loading).

        A ``facekit-prior/2`` table is mostly zeros, so its counts are stored zlib-compressed
        (as a uint8 tensor) with their shape.
        """
        state: dict[str, Any] = {"format": self.format, "bits": self.bits, "alpha": self.alpha}
        if not self.left:
            return {**state, "bins": self.bins, "counts": torch.from_numpy(self.counts.astype(np.int32))}
        packed = zlib.compress(self.counts.astype("<i4").tobytes(), 9)
        if self.general:
            state.update(neighbours=list(self.neighbours), beta=self.beta)
        return {
            **state,
            "bins": list(self.bins_per),
            "counts_shape": list(self.counts.shape),
            "counts_zlib": torch.frombuffer(bytearray(packed), dtype=torch.uint8),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ContextPrior:
        fmt = state.get("format")
        if fmt == cls.FORMAT:
            return cls(state["counts"].numpy().astype(np.int64), state["bits"], state["bins"], state["alpha"])
        if fmt not in (cls.FORMAT_LEFT, cls.FORMAT_NEIGHBOURS):
            raise ValueError(f"not a {cls.FORMAT}, {cls.FORMAT_LEFT} or {cls.FORMAT_NEIGHBOURS} state")
        shape = tuple(int(s) for s in state["counts_shape"])
        size = int(np.prod(shape)) * 4
        unpack = zlib.decompressobj()
        try:
            raw = unpack.decompress(state["counts_zlib"].numpy().tobytes(), size + 1)
        except zlib.error as e:
            raise ValueError(f"the packed counts are damaged: {e}") from e
        if len(raw) != size or not unpack.eof or unpack.unused_data:
            raise ValueError(f"the packed counts hold {len(raw)} bytes, not the {size} of shape {shape}")
        counts = np.frombuffer(raw, "<i4").reshape(shape).astype(np.int64)
        if fmt == cls.FORMAT_NEIGHBOURS:
            return cls(counts, state["bits"], state["bins"], state["alpha"], neighbours=state["neighbours"], beta=state["beta"])
        return cls(counts, state["bits"], state["bins"], state["alpha"], left=True)

    def digest(self) -> str:
        """sha256 of the tables: bitstreams name the prior they were coded with."""
        import hashlib

        bins: Any = self.bins if not self.left else self.bins_per
        layout: tuple[Any, ...] = (self.format, self.bits, bins, self.alpha, self.counts.shape)
        if self.general:
            layout += (self.neighbours, self.beta)
        h = hashlib.sha256(repr(layout).encode())
        h.update(self.counts.astype("<i8").tobytes())
        return h.hexdigest()


@functools.lru_cache(maxsize=64)
def _coding_steps(left: bool, height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rows top to bottom, or (``left``) the fronts ``j + 2 i = t`` for t = 0, 1, ...

    On a front, the left neighbour ``(i, j-1)`` and the up-right one ``(i-1, j+1)`` lie
    on front ``t - 1``, the one above on ``t - 2`` and the up-left on ``t - 3``.
    """
    if not left:
        cols = np.arange(width)
        out = [(np.full(width, i), cols) for i in range(height)]
    else:
        fronts = [np.arange(max(0, -(-(t - width + 1) // 2)), min(height - 1, t // 2) + 1) for t in range(width + 2 * (height - 1))]
        out = [(ii, t - 2 * ii) for t, ii in enumerate(fronts)]
    for ii, jj in out:  # shared by every caller through the cache: read-only
        ii.setflags(write=False)
        jj.setflags(write=False)
    return out
