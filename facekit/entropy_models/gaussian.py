"""Gaussian entropy coding by scale index: one fixed table of quantised distributions.

The second-generation codec (:mod:`facekit.models.hyperprior`) models each latent symbol
as a zero-mean Gaussian, quantised to integers, whose standard deviation is one entry of a
fixed log-spaced table (:data:`SCALES`, 64 values from 0.11 to 256, as CompressAI's
``get_scale_table``). Encoder and decoder never exchange or recompute a float scale: the
networks give an integer *index* into the table, exactly (integer arithmetic,
:mod:`facekit.models.integer`), and the table of integer frequencies behind each index is
built once and checked against a pinned sha256 (:data:`TABLE_SHA256`), so a platform whose
``erf`` rounds differently fails loudly instead of decoding garbage.

Index ``s`` codes symbols in ``[-R_s, R_s]`` (``R_s = ceil(8 sigma_s) + 2``), the outer bins
holding the tails; a symbol in an outer bin is followed by its excess beyond it, coded with
an Exp-Golomb code (an escape, as CompressAI's overflow coding), so no symbol is clipped
below ``R_s + 2**16 - 2``. Each bin's probability is an integer count out of ``2**20`` (at least 1),
so the float64 probabilities handed to ``constriction`` are exact dyadic numbers.

Coding is done in whole-array calls: :func:`encode_symbols` sorts one pass's symbols by
index (a stable sort, which the decoder repeats from the same indices) and codes each
index's symbols with one ``constriction`` call, so a pass costs at most 64 calls, never
one per position. Several passes go into one queue (range) coder in decode order.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import torch

from ..errors import BitstreamError

#: number of scale indices, smallest and largest standard deviation (CompressAI's table)
N_SCALES, SCALE_MIN, SCALE_MAX = 64, 0.11, 256.0
#: the standard deviations: ``SCALE_MIN * (SCALE_MAX / SCALE_MIN) ** (s / (N_SCALES - 1))``
SCALES = np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), N_SCALES))
#: log of the ratio of neighbouring scales
LOG_STEP = math.log(SCALE_MAX / SCALE_MIN) / (N_SCALES - 1)
#: bits of precision of the integer frequencies
PRECISION = 20
#: sha256 of the frequency tables (every index's counts as little-endian int64, in order)
TABLE_SHA256 = "27f443195a6ccf936a2ffaa2745e3d2a8993976ebeb2e6a4728a6f798b6bf507"

if N_SCALES > 256:  # sort_by_index sorts the indices as bytes
    raise RuntimeError(f"N_SCALES = {N_SCALES}: the scale indices must fit in one byte (at most 256 scales)")


def support(index: int) -> int:
    """``R_s``: index ``s`` codes the symbols ``-R_s .. R_s``."""
    return int(math.ceil(8.0 * float(SCALES[index]))) + 2


def _counts(index: int) -> np.ndarray:
    """Integer counts (sum ``2**PRECISION``, each >= 1) of the symbols ``-R .. R`` of index ``index``."""
    r, sigma = support(index), float(SCALES[index])
    edges = (np.arange(-r, r + 2) - 0.5) / (sigma * math.sqrt(2.0))
    cdf = np.array([0.5 * math.erfc(-e) for e in edges])
    cdf[0], cdf[-1] = 0.0, 1.0  # the tails go to the outer bins
    p = np.diff(cdf)
    total = 1 << PRECISION
    free = total - p.size  # one count per bin, the rest shared in proportion to p
    counts = 1 + np.floor(p * free).astype(np.int64)
    counts[int(np.argmax(counts))] += total - int(counts.sum())
    return counts


@functools.lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, ...]:
    """Every index's counts, checked against :data:`TABLE_SHA256`."""
    out = tuple(_counts(s) for s in range(N_SCALES))
    h = hashlib.sha256()
    for c in out:
        h.update(c.astype("<i8").tobytes())
    if h.hexdigest() != TABLE_SHA256:
        raise BitstreamError(
            "this platform computes facekit's Gaussian frequency tables differently "
            f"(sha256 {h.hexdigest()}): its streams would not decode elsewhere"
        )
    return out


@functools.lru_cache(maxsize=N_SCALES)
def _model(index: int):  # type: ignore[no-untyped-def]
    import constriction

    probs = tables()[index].astype(np.float64) / float(1 << PRECISION)  # exact dyadic values
    return constriction.stream.model.Categorical(probs, perfect=False)


#: escapes: the excess ``e`` of a symbol beyond its index's outer bin is Exp-Golomb coded,
#: ``n = floor(log2(e + 1))`` under a fixed model, then ``n`` low bits; ``n`` < ESCAPE_BITS
ESCAPE_BITS = 16


@functools.lru_cache(maxsize=1)
def _supports() -> np.ndarray:
    return np.array([support(s) for s in range(N_SCALES)], np.int64)


def clip_symbols(symbols: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Symbols clipped to what a stream can hold: ``R_s`` plus the largest escape (``2**16 - 2``)
    either side; the encoder reconstructs from the clipped values, so both sides agree."""
    r = _supports()[indices] + (1 << ESCAPE_BITS) - 2
    return np.clip(symbols, -r, r)


@functools.lru_cache(maxsize=ESCAPE_BITS + 1)
def _escape_model(bits: int | None = None):  # type: ignore[no-untyped-def]
    import constriction

    if bits is None:  # the number of low bits: P(n) proportional to 2**-(n + 1)
        p = 2.0 ** -np.arange(1, ESCAPE_BITS + 1)
        return constriction.stream.model.Categorical(p / p.sum(), perfect=False)
    return constriction.stream.model.Uniform(1 << bits)


def sort_by_index(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, counts)``: the stable order of ``indices`` (ints in ``[0, N_SCALES)``) by value,
    by a radix sort on bytes (hence :data:`N_SCALES` <= 256, checked at import), and how many
    positions have each index."""
    flat = np.asarray(indices).ravel()
    return np.argsort(flat.astype(np.uint8), kind="stable"), np.bincount(flat, minlength=N_SCALES)


def encode_symbols(encoder, symbols: np.ndarray, indices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Append one pass (``symbols``, int, clipped by :func:`clip_symbols`; ``indices`` in
    ``[0, N_SCALES)``) to a ``constriction`` queue encoder.

    Symbols are sorted by index (stably) and each index's symbols coded in one call, a
    symbol beyond ``+-R_s`` as the outer bin; then the excess of every symbol in an outer bin
    (0 for most), in position order: first all their bit counts in one call, then the low
    bits, one call per count. At most 64 + 17 calls a pass, none per position.
    """
    symbols = np.asarray(symbols, np.int64).ravel()
    indices = np.asarray(indices, np.int64).ravel()
    r = _supports()[indices]
    edge = np.abs(symbols) >= r
    order, counts = sort_by_index(indices)
    s_sorted = (np.clip(symbols, -r, r) + r)[order].astype(np.int32)
    ends = np.cumsum(counts)
    for s in np.flatnonzero(counts).tolist():
        encoder.encode(s_sorted[ends[s] - counts[s] : ends[s]], _model(s))
    excess = np.abs(symbols[edge]) - r[edge] + 1  # >= 1
    if excess.size:
        nbits = np.floor(np.log2(excess)).astype(np.int64)
        encoder.encode(nbits.astype(np.int32), _escape_model())
        for n in np.unique(nbits[nbits > 0]).tolist():
            encoder.encode((excess[nbits == n] - (1 << n)).astype(np.int32), _escape_model(n))


def decode_symbols(decoder, indices: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Read back one pass coded by :func:`encode_symbols` with the same ``indices``; int64 symbols."""
    indices = np.asarray(indices, np.int64)
    flat = indices.ravel()
    order, counts = sort_by_index(flat)
    out_sorted = np.empty(flat.size, np.int64)
    at = 0
    try:
        for s in np.flatnonzero(counts).tolist():
            n = int(counts[s])
            out_sorted[at : at + n] = decoder.decode(_model(s), n)
            at += n
        out = np.empty_like(out_sorted)
        out[order] = out_sorted
        r = _supports()[flat]
        out -= r
        edge = np.abs(out) >= r
        if edge.any():
            nbits = np.asarray(decoder.decode(_escape_model(), int(edge.sum())), np.int64)
            excess = np.left_shift(1, nbits)
            for n in np.unique(nbits[nbits > 0]).tolist():
                excess[nbits == n] += np.asarray(decoder.decode(_escape_model(n), int((nbits == n).sum())), np.int64)
            out[edge] = np.sign(out[edge]) * (r[edge] + excess - 1)
    except (ValueError, RuntimeError, OverflowError, AssertionError) as e:  # constriction asserts on bad data
        raise BitstreamError(f"range-coded latents cannot be decoded (damaged): {e}") from e
    return out.reshape(indices.shape)


def gaussian_likelihood(residual: torch.Tensor, scale: torch.Tensor, bound: float = 1e-9) -> torch.Tensor:
    """Probability of the unit bin around ``residual`` under a zero-mean Gaussian of ``scale`` (training)."""
    s = scale.clamp_min(SCALE_MIN)
    upper = 0.5 * torch.erfc(-(residual + 0.5) / (s * math.sqrt(2.0)))
    lower = 0.5 * torch.erfc(-(residual - 0.5) / (s * math.sqrt(2.0)))
    # for positive residuals the difference of upper tails is more accurate
    upper_t = 0.5 * torch.erfc((residual - 0.5) / (s * math.sqrt(2.0)))
    lower_t = 0.5 * torch.erfc((residual + 0.5) / (s * math.sqrt(2.0)))
    p = torch.where(residual > 0, upper_t - lower_t, upper - lower)
    return p.clamp_min(bound)


def index_to_scale(index: torch.Tensor) -> torch.Tensor:
    """The standard deviation of a (possibly fractional) scale index: ``SCALE_MIN * exp(index * LOG_STEP)``."""
    return SCALE_MIN * torch.exp(index * LOG_STEP)
