"""``facekit-prior/4``: a small network over a wide causal window, run in integer arithmetic.

Beyond Bian et al. (who store the code as PNG) and beyond the count tables of
:class:`~facekit.entropy_models.context.ContextPrior`: a table must bin its few neighbours
coarsely to be fitted on the codes of some 1,500 training images, so it sees little of
a position's surroundings. Here each channel's distribution comes from a two-layer
network over a much wider causal window, in the manner of the context models of learned
image codecs (PixelCNN-style autoregression, Minnen et al. 2018) but small enough to run
on a CPU front by front:

* the inputs are the codes at :data:`SAME` (22 positions of the same channel on earlier
  wavefronts, up to 3 rows up and 3 columns either side) and the 5x5 window around the
  position in every earlier channel (complete when the channel is decoded), each value
  one of ``levels`` plus "not available" off the edge; plus the position's row and
  column, in eighths of the code;
* the first layer is a sum of one learned vector per (input, value): a one-hot linear
  layer; then ReLU, a 64-wide layer, ReLU, and ``levels`` logits.

A range coder needs the decoder to compute the very probabilities the encoder used, on
every machine. So the trained float weights are rounded to integers (``2**12`` scale)
and the network computes only integers, each partial sum small enough (checked when a
prior is loaded) that float32 and float64 add it exactly in any order; shifts floor; the logits are floored to 1/16 nat and turned into probabilities through
a stored integer table of ``2**40 exp(-k/16)`` and one float64 division of integers,
which IEEE arithmetic rounds the same everywhere. Rounding costs under 0.1 % of the rate.

It is fitted after the networks are trained, on the training split's codes and those of
their mirror images (:meth:`NeuralPrior.fit`), and codes the same wavefronts as
``facekit-prior/3`` (:class:`~facekit.entropy_models.range_coded.RangeCodedPrior`), so the
same ROI masks and container serve both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.quantizer import levels
from .range_coded import RangeCodedPrior

#: same-channel inputs (rows, columns from the position): all on earlier fronts (``dj + 2 di < 0``)
SAME = tuple((di, dj) for di in range(-3, 1) for dj in range(-3, 4) if dj + 2 * di < 0)
#: inputs from each earlier channel: the 5x5 window around the position
PREV = tuple((di, dj) for di in range(-2, 3) for dj in range(-2, 3))
#: position inputs: the row and the column in eighths of the code
POSITION_BINS = 8
#: fixed-point scale of the weights, and the logit resolution (1/16 nat) and range of the exp table
SCALE, LOGIT_STEPS, EXP_RANGE = 12, 16, 24


def _n_inputs(c: int) -> int:
    """Code inputs of channel ``c``: the same-channel window, then one window per earlier channel."""
    return len(SAME) + c * len(PREV)


def _first_rows(c: int, n_levels: int) -> int:
    """Rows of channel ``c``'s first layer: ``levels + 1`` per code input, then the position bins."""
    return _n_inputs(c) * (n_levels + 1) + 2 * POSITION_BINS


def exp_table() -> np.ndarray:
    """``round(2**40 exp(-k / 16))`` for k = 0 .. 16 * 24 - 1: every entry at least 1."""
    k = np.arange(LOGIT_STEPS * EXP_RANGE, dtype=np.float64)
    return np.round(2.0**40 * np.exp(-k / LOGIT_STEPS)).astype(np.int64)


class _Net(nn.Module):
    """The float network trained for one channel (what :class:`NeuralPrior` rounds)."""

    def __init__(self, n_inputs: int, rows: int, levels_: int, hidden: int, hidden2: int) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.emb = nn.EmbeddingBag(rows, hidden, mode="sum")
        nn.init.normal_(self.emb.weight, std=0.3 / np.sqrt(n_inputs + 2))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.l2 = nn.Linear(hidden, hidden2)
        self.l3 = nn.Linear(hidden2, levels_)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.emb(idx) + self.b1)
        return self.l3(torch.relu(self.l2(h)))


class NeuralPrior(RangeCodedPrior):
    """Per-channel integer networks giving each position's distribution from its causal window."""

    FORMAT = "facekit-prior/4"
    HIDDEN, HIDDEN2 = 96, 64

    def __init__(self, bits: int, layers: Sequence[dict[str, np.ndarray]], table: np.ndarray | None = None) -> None:
        self.bits = int(bits)
        self.levels = levels(self.bits)
        self.layers = [{k: np.ascontiguousarray(np.asarray(v, np.int64)) for k, v in lay.items()} for lay in layers]
        self.table = np.asarray(exp_table() if table is None else table, np.int64)
        if not self.layers:
            raise ValueError("a neural prior needs one network per channel")
        want = exp_table()
        if self.table.shape != want.shape or np.abs(self.table - want).max() > 1 or self.table.min() < 1:
            raise ValueError("the probability table is not 2**40 exp(-k/16)")
        for c, lay in enumerate(self.layers):
            n_in = self.n_inputs(c)
            emb, b1, w2, b2, w3, b3 = (lay.get(k) for k in ("emb", "b1", "w2", "b2", "w3", "b3"))
            if any(v is None for v in (emb, b1, w2, b2, w3, b3)):
                raise ValueError(f"channel {c}'s network lacks a layer")
            h = emb.shape[1] if emb.ndim == 2 else -1
            if (
                emb.shape != (self.rows(c), h) or b1.shape != (h,) or w2.ndim != 2 or w2.shape[0] != h
                or b2.shape != (w2.shape[1],) or w3.shape != (w2.shape[1], self.levels) or b3.shape != (self.levels,)
                or n_in < 1
            ):
                raise ValueError(f"channel {c}'s network has the wrong shapes")
            # every partial sum must stay exact (see _rows): bound the worst case of each layer
            def top(a: np.ndarray) -> int:
                return int(np.abs(a.astype(np.float64)).max(initial=0))

            a1 = top(emb) * (n_in + 2) + top(b1)
            a2 = a1 * int(np.abs(w2.astype(np.float64)).sum(0).max(initial=0)) + top(b2)
            a3 = (a2 >> SCALE) * int(np.abs(w3.astype(np.float64)).sum(0).max(initial=0)) + top(b3)
            if a1 >= 2**24 or max(a2, a3) >= 2**53:
                raise ValueError(f"channel {c}'s weights are too large for exact arithmetic (float32 / float64 sums of integers)")

    # --- layout -------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return len(self.layers)

    @property
    def format(self) -> str:
        return self.FORMAT

    def offsets(self, c: int) -> list[tuple[int, int, int]]:
        """The code inputs of channel ``c`` as (channels back, rows, columns)."""
        return [(0, di, dj) for di, dj in SAME] + [(b, di, dj) for b in range(1, c + 1) for di, dj in PREV]

    def n_inputs(self, c: int) -> int:
        return _n_inputs(c)

    def rows(self, c: int) -> int:
        """Rows of channel ``c``'s first layer: ``levels + 1`` per code input, then the position bins."""
        return _first_rows(c, self.levels)

    def describe(self) -> str:
        return (
            f"integer network per channel ({len(SAME)} same-channel inputs on earlier fronts, the 5x5 window of "
            f"each earlier channel, row and column in eighths; {self.HIDDEN}-{self.HIDDEN2} ReLU)"
        )

    # --- inputs -------------------------------------------------------------------------
    def _gather(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Channel ``c``'s inputs as arrays: source channel, row and column offsets, row shift (cached)."""
        cache: dict[int, tuple[np.ndarray, ...]] = self.__dict__.setdefault("_gather_cache", {})
        if c not in cache:
            off = np.array(self.offsets(c), np.int64).reshape(-1, 3)
            cache[c] = (c - off[:, 0], off[:, 1], off[:, 2], np.arange(len(off), dtype=np.int64) * (self.levels + 1))
        return cache[c]  # type: ignore[return-value]

    def inputs(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """``(n, inputs + 2)`` first-layer row indices of positions ``(ii, jj)`` of channel ``c``.

        A window position off the code reads "not available" (value ``levels``). This runs
        once per decoding step, so it gathers straight from ``q`` (clipped, then masked)
        rather than from a padded copy of it.
        """
        h, w = q.shape[1], q.shape[2]
        ch, di, dj, shift = self._gather(c)
        ii = np.asarray(ii, np.int64)
        jj = np.asarray(jj, np.int64)
        ri, rj = ii[:, None] + di, jj[:, None] + dj
        inside = (ri >= 0) & (ri < h) & (rj >= 0) & (rj < w)
        vals = q[ch, np.clip(ri, 0, h - 1), np.clip(rj, 0, w - 1)].astype(np.int64)
        idx = np.where(inside, vals, self.levels) + shift
        base = len(shift) * (self.levels + 1)
        pos = np.stack([base + (ii * POSITION_BINS) // h, base + POSITION_BINS + (jj * POSITION_BINS) // w], 1)
        return np.concatenate([idx, pos], 1)

    # --- probabilities ------------------------------------------------------------------
    def _rows(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """The integer network's probabilities, computed fast and still exactly.

        Every value the network computes is an integer, and the bounds checked in
        ``__init__`` keep each partial sum of the first layer below 2**24 and of the
        others below 2**53. So the first layer runs as a float32 ``embedding_bag`` and the
        others as float64 matrix products: each addition is exact whatever order a
        library or a CPU sums in, and the result equals :meth:`_rows_int64` bit for bit.
        """
        idx = torch.from_numpy(self.inputs(np.asarray(q), c, ii, jj))
        emb, b1, w2, b2, w3, b3 = self._float_layers(c)
        with torch.no_grad():
            h1 = torch.relu(nn.functional.embedding_bag(idx, emb, mode="sum") + b1).double()
            h2 = torch.floor(torch.relu(h1 @ w2 + b2) * 2.0**-SCALE)
            z = torch.floor((h2 @ w3 + b3) * 2.0 ** -(2 * SCALE - 4)).numpy().astype(np.int64)  # 1/16 nat
        return self._probabilities(z)

    def _rows_int64(self, q: np.ndarray, c: int, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        """The same probabilities in plain int64 arithmetic (the reference :meth:`_rows` is tested against)."""
        idx = self.inputs(np.asarray(q), c, ii, jj)
        lay = self.layers[c]
        h1 = np.maximum(lay["emb"][idx].sum(1) + lay["b1"], 0)
        h2 = np.maximum(h1 @ lay["w2"] + lay["b2"], 0) >> SCALE
        return self._probabilities((h2 @ lay["w3"] + lay["b3"]) >> (2 * SCALE - 4))

    def _probabilities(self, z: np.ndarray) -> np.ndarray:
        """Rows of logits in 1/16 nat as ``table[max - z] / sum``: a ratio of integers, rounded once."""
        k = np.minimum(z.max(1, keepdims=True) - z, len(self.table) - 1)
        t = self.table[k]
        return t / t.sum(1, keepdims=True)

    def _float_layers(self, c: int) -> tuple[torch.Tensor, ...]:
        cache = self.__dict__.setdefault("_floats", {})
        if c not in cache:
            lay = self.layers[c]
            cache[c] = (
                torch.from_numpy(lay["emb"].astype(np.float32)), torch.from_numpy(lay["b1"].astype(np.float32)),
                *(torch.from_numpy(lay[k].astype(np.float64)) for k in ("w2", "b2", "w3", "b3")),
            )
        return cache[c]

    # --- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        codes: Sequence[np.ndarray],
        bits: int,
        *,
        steps: int = 3000,
        batch: int = 4096,
        lr: float = 3e-3,
        seed: int = 0,
        log: Any = None,
    ) -> NeuralPrior:
        """Train one network per channel on training codes (each ``(C, h, w)``), then round it.

        Adam with a one-cycle learning rate, ``steps`` batches of ``batch`` positions drawn
        from all the codes (seeded), cross-entropy of the true code. Records the training
        loss in ``prior.training``.
        """
        codes = [np.asarray(q) for q in codes]
        if not codes:
            raise ValueError("no codes to fit a neural prior on")
        shape = codes[0].shape
        if len(shape) != 3 or any(q.shape != shape for q in codes):
            raise ValueError("the codes must all be (C, h, w) of one shape")
        n_levels = levels(bits)
        if max(int(q.max()) for q in codes) >= n_levels:
            raise ValueError(f"codes above {n_levels - 1} do not fit {bits} bits")
        probe = cls(bits, [cls._zero_layers(c, n_levels) for c in range(shape[0])])
        ii, jj = (a.ravel() for a in np.indices(shape[1:]))
        stacked = np.stack(codes)
        layers, record = [], []
        gen = torch.Generator().manual_seed(seed)
        t0 = time.time()
        for c in range(shape[0]):
            x = torch.from_numpy(np.concatenate([probe.inputs(q, c, ii, jj).astype(np.int32) for q in stacked]))
            y = torch.from_numpy(stacked[:, c].reshape(-1).astype(np.int64))
            torch.manual_seed(seed + c)
            net = _Net(probe.n_inputs(c), probe.rows(c), n_levels, cls.HIDDEN, cls.HIDDEN2)
            opt = torch.optim.Adam(net.parameters(), lr)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
            tail: list[float] = []
            for s in range(steps):
                pick = torch.randint(0, len(y), (batch,), generator=gen)
                loss = nn.functional.cross_entropy(net(x[pick]), y[pick])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if s >= steps - max(1, steps // 10):
                    tail.append(float(loss.detach()))
            layers.append(cls._rounded(net))
            record.append({"channel": c, "positions": len(y), "final_loss_bits": round(float(np.mean(tail) / np.log(2)), 4)})
            if log is not None:
                log(f"channel {c}: {record[-1]['final_loss_bits']} bits a position, {time.time() - t0:.0f} s")
        prior = cls(bits, layers)
        prior.training = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "channels": record}
        return prior

    @classmethod
    def _zero_layers(cls, c: int, n_levels: int) -> dict[str, np.ndarray]:
        return {
            "emb": np.zeros((_first_rows(c, n_levels), 1), np.int64), "b1": np.zeros(1, np.int64), "w2": np.zeros((1, 1), np.int64),
            "b2": np.zeros(1, np.int64), "w3": np.zeros((1, n_levels), np.int64), "b3": np.zeros(n_levels, np.int64),
        }

    @staticmethod
    def _rounded(net: _Net) -> dict[str, np.ndarray]:
        """The float network as integers: weights at ``2**12``, second biases at ``2**24``."""
        def r(t: torch.Tensor, scale: int) -> np.ndarray:
            return np.round(t.detach().double().numpy() * 2.0**scale).astype(np.int64)

        return {
            "emb": r(net.emb.weight, SCALE), "b1": r(net.b1, SCALE),
            "w2": r(net.l2.weight.T, SCALE), "b2": r(net.l2.bias, 2 * SCALE),
            "w3": r(net.l3.weight.T, SCALE), "b3": r(net.l3.bias, 2 * SCALE),
        }

    # --- storage ------------------------------------------------------------------------
    KEYS = ("emb", "b1", "w2", "b2", "w3", "b3")

    def state(self) -> dict[str, Any]:
        """What a prior file stores: int32 layers (checked to fit) and the exp table."""
        layers = []
        for lay in self.layers:
            if any(np.abs(lay[k]).max(initial=0) >= 2**31 for k in self.KEYS):
                raise ValueError("a layer does not fit int32")
            layers.append({k: torch.from_numpy(lay[k].astype(np.int32)) for k in self.KEYS})
        return {"format": self.FORMAT, "bits": self.bits, "layers": layers, "table": torch.from_numpy(self.table)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> NeuralPrior:
        if state.get("format") != cls.FORMAT:
            raise ValueError(f"not a {cls.FORMAT} state")
        layers = [{k: lay[k].numpy().astype(np.int64) for k in cls.KEYS} for lay in state["layers"]]
        return cls(state["bits"], layers, state["table"].numpy())

    def digest(self) -> str:
        """sha256 of the integer networks and the table: bitstreams name the prior they were coded with."""
        h = hashlib.sha256(repr((self.FORMAT, self.bits, SAME, PREV, POSITION_BINS, SCALE, LOGIT_STEPS)).encode())
        for lay in self.layers:
            for k in self.KEYS:
                h.update(repr((k, lay[k].shape)).encode())
                h.update(lay[k].astype("<i8").tobytes())
        h.update(self.table.astype("<i8").tobytes())
        return h.hexdigest()
