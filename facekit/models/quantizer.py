"""Quantisation of the compact representation to integer codes.

Bian et al. (arXiv:1907.01714, Sec. 3) quantise the compact representation made by the
compression network to 8 bits; facekit does the same with the bit depth ``bits`` of each
rate point (1..8). :class:`Quantizer` maps the encoder's bounded output ``y`` in ``(0, 1)``
to the integers ``q = round(y * (2**bits - 1))``. In training the rounding passes the
gradient straight through (``mode="ste"``, Bengio et al. 2013; the decoder then sees
exactly the values it sees at inference) or is replaced by additive uniform noise
(``mode="noise"``, Ballé et al. 2017). In ``eval`` mode it always rounds, so the decoder
at inference sees exactly the integers that are stored. How the integers become bytes is
the business of :mod:`facekit.entropy_models`.
"""

from __future__ import annotations

import torch
from torch import nn


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
