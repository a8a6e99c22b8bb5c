"""Gaussian entropy coding by scale index: one fixed table of quantised distributions.

The second-generation codec (:mod:`facekit.models.hyperprior`) models each latent symbol
as a zero-mean Gaussian, quantised to integers, whose standard deviation is one entry of a
fixed log-spaced table (:data:`SCALES`, 64 values from 0.11 to 256, as CompressAI's
``get_scale_table``). Encoder and decoder never exchange or recompute a float scale: the
networks give an integer *index* into the table, exactly (integer arithmetic,
:mod:`facekit.models.integer`), and the table of integer frequencies behind each index is
built once and checked against a pinned sha256 (:data:`TABLE_SHA256`), so a platform whose
``erf`` rounds differently fails loudly instead of decoding garbage.

Index ``s`` codes symbols in ``[-R_s, R_s]`` (``R_s = ceil(8 sigma_s) + 2``); the encoder
clips a residual beyond that (and reconstructs from the clipped value, so encoder and
decoder agree). Each bin's probability is an integer count out of ``2**20`` (at least 1),
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


def clip_symbols(symbols: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Symbols clipped to the support of their index (what the encoder codes and reconstructs from)."""
    r = np.array([support(s) for s in range(N_SCALES)], np.int64)[indices]
    return np.clip(symbols, -r, r)


def encode_symbols(encoder, symbols: np.ndarray, indices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Append one pass (``symbols``, int, already clipped; ``indices`` in ``[0, N_SCALES)``) to a
    ``constriction`` queue encoder: one call per index in use."""
    symbols = np.asarray(symbols, np.int64).ravel()
    indices = np.asarray(indices, np.int64).ravel()
    order = np.argsort(indices, kind="stable")
    s_sorted, i_sorted = symbols[order], indices[order]
    used, starts = np.unique(i_sorted, return_index=True)
    ends = np.append(starts[1:], len(i_sorted))
    for s, a, b in zip(used.tolist(), starts.tolist(), ends.tolist(), strict=True):
        encoder.encode((s_sorted[a:b] + support(s)).astype(np.int32), _model(s))


def decode_symbols(decoder, indices: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Read back one pass coded by :func:`encode_symbols` with the same ``indices``; int64 symbols."""
    indices = np.asarray(indices, np.int64)
    flat = indices.ravel()
    order = np.argsort(flat, kind="stable")
    used, counts = np.unique(flat[order], return_counts=True)
    out_sorted = np.empty(flat.size, np.int64)
    at = 0
    try:
        for s, n in zip(used.tolist(), counts.tolist(), strict=True):
            out_sorted[at : at + n] = np.asarray(decoder.decode(_model(s), n), np.int64) - support(s)
            at += n
    except (ValueError, RuntimeError, OverflowError, AssertionError) as e:  # constriction asserts on bad data
        raise BitstreamError(f"range-coded latents cannot be decoded (damaged): {e}") from e
    out = np.empty_like(out_sorted)
    out[order] = out_sorted
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
