"""Peak signal-to-noise ratio, with one convention for the whole kit.

``PSNR = 10 log10(peak² / MSE)`` in dB, capped at :data:`MAX_PSNR` (100 dB): identical
images (MSE 0) give 100 dB, never ``inf``, so that averages over images and JSON files
stay finite. A cap of 100 dB is far above any lossy codec here (8-bit rounding alone gives
about 59 dB). :func:`psnr` takes numpy arrays (``uint8`` images, peak 255 by default);
:func:`psnr_torch` takes tensors in ``[0, 1]`` and keeps the graph, for training logs.

Example::

    from facekit.metrics import psnr
    psnr(original, decoded)          # uint8 (H, W, 3) arrays -> dB
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: the PSNR of identical images, and the largest PSNR facekit reports (dB)
MAX_PSNR = 100.0


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB of a mean squared error at ``peak``, capped at :data:`MAX_PSNR`."""
    if mse <= peak * peak * 10.0 ** (-MAX_PSNR / 10.0):
        return MAX_PSNR
    return float(10.0 * math.log10(peak * peak / mse))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two images of the same shape (over ``mask``'s pixels if given).

    Args:
        a, b: images, e.g. ``uint8 (H, W, 3)``; compared in float64.
        peak: the largest pixel value (255 for ``uint8``, 1 for images in ``[0, 1]``).
        mask: optional boolean ``(H, W)`` array: only those pixels count.
    """
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    return psnr_from_mse(float(np.mean(diff * diff)), peak)


def psnr_from_mse_torch(mse: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """:func:`psnr_from_mse` for a tensor of mean squared errors (element-wise)."""
    return 10.0 * torch.log10(peak * peak / mse.clamp_min(peak * peak * 10.0 ** (-MAX_PSNR / 10.0)))


def psnr_torch(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of tensors ``(N, C, H, W)``, capped at :data:`MAX_PSNR`."""
    return psnr_from_mse_torch((x_hat.float() - x.float()).pow(2).flatten(1).mean(dim=1), data_range)


def rate_and_psnr(codec: Any, images: Sequence[np.ndarray], setting: Any) -> dict[str, float]:
    """Mean bpp (whole files, headers included) and PSNR of one codec setting over ``images``.

    ``{"bpp", "psnr", "psnr_std"}``; each image is encoded, the bytes counted, and decoded.
    """
    bpps, psnrs = [], []
    for im in images:
        data = codec.encode(im, setting)
        bpps.append(8.0 * len(data) / (im.shape[0] * im.shape[1]))
        psnrs.append(psnr(im, codec.decode(data)))
    return {"bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "psnr_std": float(np.std(psnrs))}
