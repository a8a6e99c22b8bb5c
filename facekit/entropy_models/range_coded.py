"""What every range-coded prior shares: the coding order, the range coder, the length check.

Beyond Bian et al. (who store the code as PNG): a *prior* gives each integer code
``q[c, i, j]`` a categorical distribution computed from neighbours the decoder already
knows, and a range coder (``constriction``'s) spends about ``-log2 p`` bits on it.
:class:`RangeCodedPrior` codes channel by channel, and within a channel either row by row
or by anti-diagonal wavefronts ``j + 2 i = t`` (positions on one front are coded in one
step). It can code only the positions a mask keeps (the face region of an ROI codec),
and when decoding it refuses a payload too short for the information of the codes it
claims to hold. Its subclasses supply the distributions:
:class:`~facekit.entropy_models.context.ContextPrior` (count tables) and
:class:`~facekit.entropy_models.neural.NeuralPrior` (integer networks).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ..errors import BitstreamError


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
