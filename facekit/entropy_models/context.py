"""Count-table context priors: the range coder's model as counts of symbols per context.

Beyond Bian et al. (who store the code as PNG): :class:`ContextPrior` codes each integer
``q[c, i, j]`` with the categorical distribution of its *context*, a few causal
neighbours each binned to a few levels (plus "not available" off the edge). The tables
are counts over the training codes with add-``alpha`` smoothing, fitted after the
networks are trained; three layouts (``facekit-prior/1`` to ``/3``) are described on the
class. Coding, the wavefront order and the length check come from
:class:`~facekit.entropy_models.range_coded.RangeCodedPrior`.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..models.quantizer import levels
from .range_coded import RangeCodedPrior


class ContextPrior(RangeCodedPrior):
    """A fitted context model of the code plus range coding: the ``-entropy`` variants.

    Beyond Bian et al. (who store the code as PNG): each integer ``q[c, i, j]`` is coded
    with a categorical distribution chosen by a causal context of neighbours, each binned
    to a few levels (plus "not available"). Three layouts exist:

    * ``facekit-prior/1`` (``left=False``): the one above, the mean of the two diagonally
      above, and the same position in the previous channel, ``bins`` levels each. A row's
      contexts depend only on rows above and earlier channels, so it decodes row by row.
    * ``facekit-prior/2`` (``left=True``): the same three plus the left neighbour, each
      with its own number of bins. A position then depends on its row's left part, so it
      decodes by anti-diagonal wavefronts (``j + 2 i`` constant: every neighbour used lies
      on an earlier front). On LFW's training split the left neighbour saves 5-11 % of the
      bits (largest at q4).
    * ``facekit-prior/3`` (``neighbours=...``): any neighbours of :data:`OFFSETS`, each
      with its own bins, chosen on the training codes by :meth:`select` (greedy forward
      selection scored on a held-out fifth of them). It decodes by the same wavefronts:
      every same-channel neighbour lies on an earlier front, and earlier channels are
      complete. Its probabilities back off along the neighbours' order (most useful
      first): the distribution of a context is its counts plus ``beta`` times the
      distribution of the context of its first ``k - 1`` neighbours, down to the channel's
      symbol counts (interpolated smoothing in the manner of PPM and Witten-Bell), so rich
      contexts seen a few times do not fall back to a uniform guess. On LFW's test images
      it codes the jointrate codes in 1-13 % fewer bytes than ``/2`` (most at q4, whose 16
      levels ``/2`` binned to 8).

    ``facekit-prior/4`` is not a table: :class:`~facekit.entropy_models.neural.NeuralPrior`
    computes each distribution with small integer networks over a wider causal window,
    and shares this class's coder and length check through :class:`RangeCodedPrior`.

    The tables are maximum-likelihood counts over the training codes with add-``alpha``
    smoothing (and, for ``/3``, the back-off above); they are fitted after the networks
    are trained. Coding uses ``constriction``'s range coder; probabilities are computed in
    float64 from integer counts, so every machine builds the same fixed-point tables.
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

    def code_lengths(self) -> np.ndarray:
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
        bins: Any = self.bins if not self.left else self.bins_per
        layout: tuple[Any, ...] = (self.format, self.bits, bins, self.alpha, self.counts.shape)
        if self.general:
            layout += (self.neighbours, self.beta)
        h = hashlib.sha256(repr(layout).encode())
        h.update(self.counts.astype("<i8").tobytes())
        return h.hexdigest()
