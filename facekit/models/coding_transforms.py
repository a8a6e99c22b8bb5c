"""The hyperprior's GDN layer and the frozen coding forms of its float transforms.

:class:`GDN` is the generalised divisive normalisation of the analysis and synthesis
transforms (Ballé, Laparra & Simoncelli 2016). :class:`Inference` is what
:meth:`facekit.models.hyperprior.FaceHyperprior.freeze` derives from ``g_a``, ``h_a`` and
``g_s`` for coding: the same function, computed channels-last (oneDNN's fastest layout on
one CPU thread) without autograd, GDN as one matrix product over the pixels and each pixel
shuffle folded into the convolution before it (:func:`shuffled_conv`,
:func:`shuffle_channels_last`). Nothing here is saved: a coding form is a pure function of
the module's float weights, and its outputs agree with the module's to float32 rounding.

Example::

    g_s = FaceHyperprior().g_s
    x_hat = Inference(g_s)(y_hat)       # channels-last, as g_s(y_hat) up to float rounding
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al. 2016): ``x / sqrt(beta + gamma x^2)``,
    or ``x * sqrt(...)`` when ``inverse``; ``beta`` and ``gamma`` kept non-negative by squaring."""

    def __init__(self, ch: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(math.sqrt(0.1) * torch.eye(ch)[:, :, None, None])

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 convolution ``(weight, bias)`` that gives the norm from ``x * x``."""
        return self.gamma**2, self.beta**2 + 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x * x, *self.fused())
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


class Inference:
    """A frozen copy of a ``Sequential`` transform for coding: channels-last weights and
    activations (oneDNN's fastest layout on one CPU thread, for the transposed convolutions
    most), GDN as one matrix product over the pixels, pixel shuffles as one copy, no autograd.
    Derived from the module's weights, never saved; the same sums as the module, in another
    order, so outputs agree to float32 rounding."""

    def __init__(self, seq: nn.Sequential) -> None:
        cl = torch.channels_last
        self.ops: list[tuple[Any, ...]] = []
        with torch.inference_mode(False), torch.no_grad():
            for mod in seq:
                if isinstance(mod, nn.ConvTranspose2d):
                    w = mod.weight.detach().contiguous(memory_format=cl)
                    self.ops.append(("tconv", w, mod.bias.detach(), mod.stride, mod.padding, mod.output_padding))
                elif isinstance(mod, nn.Conv2d):
                    w = mod.weight.detach().contiguous(memory_format=cl)
                    self.ops.append(("conv", w, mod.bias.detach(), mod.stride, mod.padding))
                elif isinstance(mod, GDN):
                    w, b = mod.fused()
                    self.ops.append(("gdn", w.detach()[:, :, 0, 0].t().contiguous(), b.detach(), mod.inverse))
                elif isinstance(mod, nn.PixelShuffle):
                    self.ops[-1] = shuffled_conv(self.ops[-1], mod.upscale_factor)
                    self.ops.append(("shuffle", mod.upscale_factor))
                elif isinstance(mod, nn.LeakyReLU):
                    self.ops.append(("lrelu", mod.negative_slope))
                else:
                    raise TypeError(f"no inference form for {type(mod).__name__}")
        self.device = self.ops[0][1].device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (any layout) through the transform; the output is channels-last."""
        x = x.contiguous(memory_format=torch.channels_last)
        for op in self.ops:
            if op[0] == "conv":
                x = F.conv2d(x, op[1], op[2], op[3], op[4])
            elif op[0] == "tconv":
                x = F.conv_transpose2d(x, op[1], op[2], op[3], op[4], op[5])
            elif op[0] == "gdn":
                n, c, h, w = x.shape
                flat = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c)
                norm = torch.addmm(op[2], flat * flat, op[1])
                x = (norm.sqrt_() if op[3] else norm.rsqrt_()).mul_(flat).view(n, h, w, c).permute(0, 3, 1, 2)
            elif op[0] == "shuffle":
                x = shuffle_channels_last(x, op[1])
            else:
                x = F.leaky_relu(x, op[1])
        return x


def shuffled_conv(op: tuple[Any, ...], r: int) -> tuple[Any, ...]:
    """A ``conv`` op before a pixel shuffle, its output channels reordered from ``(c, i, j)``
    to ``(i, j, c)`` (``i, j`` the sub-pixel offsets), as :func:`shuffle_channels_last` reads them."""
    if op[0] != "conv":
        raise TypeError("a pixel shuffle follows a convolution in these transforms")
    w, b = op[1], op[2]
    c = w.shape[0] // (r * r)
    w = w.reshape(c, r, r, *w.shape[1:]).permute(1, 2, 0, 3, 4, 5).reshape(w.shape)
    return ("conv", w.contiguous(memory_format=torch.channels_last), b.reshape(c, r, r).permute(1, 2, 0).reshape(-1), *op[3:])


def shuffle_channels_last(x: torch.Tensor, r: int = 2) -> torch.Tensor:
    """The pixel shuffle of a channels-last ``x`` whose channels are ordered ``(i, j, c)``
    (:func:`shuffled_conv`): one copy of ``r * c``-value runs into a channels-last tensor."""
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).reshape(n, h, w, r, r * c // (r * r)).permute(0, 1, 3, 2, 4)
    return v.reshape(n, h * r, w * r, c // (r * r)).permute(0, 3, 1, 2)
