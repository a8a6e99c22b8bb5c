"""The hyperprior's GDN layer and the frozen coding forms of its float transforms.

:class:`GDN` is the generalised divisive normalisation of the analysis and synthesis
transforms (Ballé, Laparra & Simoncelli 2016). :class:`Inference` is what
:meth:`facekit.models.hyperprior.FaceHyperprior.freeze` derives from ``g_a``, ``h_a`` and
``g_s`` for coding: the same function, computed channels-last (oneDNN's fastest layout on
one CPU thread) without autograd, GDN element-wise while its ``gamma`` is diagonal (as
training keeps one that starts so: :func:`gdn_op`, :func:`diagonal_gdn`) or else as one matrix product over
the pixels, and each pixel shuffle folded into the convolution before it
(:func:`shuffled_conv`, :func:`shuffle_channels_last`). Nothing here is saved: a coding form
is a pure function of the module's float weights, and its outputs agree with the module's
to float32 rounding.

The transposed convolutions stay transposed convolutions (their sub-pixel forms do more
work). With ``dtype=torch.bfloat16`` the convolutions multiply in bfloat16 (weights and inputs
rounded to 8 significant bits, products summed in float32 by oneDNN, outputs rounded to
bfloat16, then float32 again for GDN): about twice as fast on a CPU with bfloat16 dot products (AVX512-BF16, AMX), where
the convolutions already run near float32's peak; the decoder's synthesis offers it
(:data:`SYNTHESIS`). ``benchmarks/model_complexity.py`` measures
these forms, and the model card in ``results/README.md`` keeps the figures.

Example::

    g_s = FaceHyperprior().g_s
    x_hat = Inference(g_s)(y_hat)       # channels-last, as g_s(y_hat) up to float rounding
    fast = Inference(g_s, torch.bfloat16)(y_hat)   # convolutions in bfloat16, output float32
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CodecError
from .cache import lru_get

#: the arithmetic of a decoder's synthesis (:class:`Inference`'s ``dtype`` for ``g_s``), by name:
#: float32 (the default), or bfloat16 convolutions (the same PSNR to 0.01 dB on LFW faces, pixels
#: that differ from float32's by a few levels; convolutions twice as fast with bfloat16 dot products)
SYNTHESIS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def synthesis_dtype(name: str) -> torch.dtype:
    """The dtype of a :data:`SYNTHESIS` name; one :class:`~facekit.errors.CodecError` for another.

    Example: ``synthesis_dtype("bfloat16")`` -> ``torch.bfloat16``; ``synthesis_dtype("int8")`` raises.
    """
    if name not in SYNTHESIS:
        raise CodecError(f"unknown synthesis arithmetic {name!r}: use {' or '.join(SYNTHESIS)}")
    return SYNTHESIS[name]


class GDN(nn.Module):
    """Generalised divisive normalisation (Ballé et al. 2016): ``x / sqrt(beta + gamma x^2)``,
    or ``x * sqrt(...)`` when ``inverse``; ``beta`` and ``gamma`` kept non-negative by squaring.

    ``gamma`` starts at ``0.1 I``. Its off-diagonal square roots start at ``offdiag_init``: at 0
    their gradient (``2 g dL/dgamma``) is zero, so ``gamma`` stays diagonal for good; a small
    value (CompressAI's pedestal plays this part) lets training couple the channels, as the
    paper's GDN does."""

    def __init__(self, ch: int, inverse: bool = False, offdiag_init: float = 0.0) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        eye = torch.eye(ch)[:, :, None, None]
        self.gamma = nn.Parameter(math.sqrt(0.1) * eye + offdiag_init * (1 - eye))

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 convolution ``(weight, bias)`` that gives the norm from ``x * x``."""
        return self.gamma**2, self.beta**2 + 1e-6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = F.conv2d(x * x, *self.fused())
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


class Inference:
    """A frozen copy of a ``Sequential`` transform for coding: channels-last weights and
    activations (oneDNN's fastest layout on one CPU thread, for the transposed convolutions
    most), GDN element-wise or as one matrix product over the pixels (:func:`gdn_op`), pixel
    shuffles as one copy, no autograd.
    Derived from the module's weights, never saved; the same sums as the module, in another
    order, so outputs agree to float32 rounding. ``dtype``: the convolutions' arithmetic
    (``torch.bfloat16``: inputs, weights and outputs rounded to it; GDN and the output in float32)."""

    def __init__(self, seq: nn.Sequential, dtype: torch.dtype = torch.float32) -> None:
        cl = torch.channels_last
        self.dtype = dtype
        self.ops: list[tuple[Any, ...]] = []
        with torch.inference_mode(False), torch.no_grad():
            for mod in seq:
                if isinstance(mod, nn.ConvTranspose2d):
                    w = mod.weight.detach().to(dtype).contiguous(memory_format=cl)
                    self.ops.append(("tconv", w, mod.bias.detach().to(dtype), mod.stride, mod.padding, mod.output_padding))
                elif isinstance(mod, nn.Conv2d):
                    w = mod.weight.detach().to(dtype).contiguous(memory_format=cl)
                    self.ops.append(("conv", w, mod.bias.detach().to(dtype), mod.stride, mod.padding))
                elif isinstance(mod, GDN):
                    self.ops.append(gdn_op(mod))
                elif isinstance(mod, nn.PixelShuffle):
                    self.ops[-1] = shuffled_conv(self.ops[-1], mod.upscale_factor)
                    self.ops.append(("shuffle", mod.upscale_factor))
                elif isinstance(mod, nn.LeakyReLU):
                    self.ops.append(("lrelu", mod.negative_slope))
                else:
                    raise TypeError(f"no inference form for {type(mod).__name__}")
        self.device = next((p.device for p in seq.parameters()), torch.device("cpu"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (any layout) through the transform; the output is channels-last."""
        return self._run(x, self.ops)

    def pixels(self, x: torch.Tensor, offset: float, height: int, width: int) -> torch.Tensor:
        """``round(clamp(self(x) + offset, 0, 1) * 255)`` cropped to ``height x width``, as uint8
        ``(B, height, width, C)``: the values the float output gives, with a final pixel shuffle
        done by the one copy into uint8 (:func:`shuffled_pixels`)."""
        ops, r = self.ops, 1
        if ops and ops[-1][0] == "shuffle":
            ops, r = ops[:-1], ops[-1][1]
        return shuffled_pixels(self._run(x, ops), r, offset, height, width)

    def _run(self, x: torch.Tensor, ops: list[tuple[Any, ...]]) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        for op in ops:
            if op[0] == "conv":  # .to and .float: no-ops in float32
                x = F.conv2d(x.to(self.dtype), op[1], op[2], op[3], op[4]).float()
            elif op[0] == "tconv":
                x = F.conv_transpose2d(x.to(self.dtype), op[1], op[2], op[3], op[4], op[5]).float()
            elif op[0] == "gdn":
                n, c, h, w = x.shape
                flat = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c)
                norm = torch.addmm(op[2], flat * flat, op[1])
                x = (norm.sqrt_() if op[3] else norm.rsqrt_()).mul_(flat).view(n, h, w, c).permute(0, 3, 1, 2)
            elif op[0] == "gdn_diag":
                x = diagonal_gdn(x, op[1], op[2], op[3])
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


def shuffled_pixels(x: torch.Tensor, r: int, offset: float, height: int, width: int) -> torch.Tensor:
    """uint8 ``(B, height, width, C)`` pixels ``round(clamp(v + offset, 0, 1) * 255)`` of ``v``, the
    pixel shuffle (factor ``r``) of a channels-last ``x`` whose channels are ordered ``(i, j, c)``
    (:func:`shuffled_conv`), cropped: the arithmetic on ``x`` in place, then the shuffle and the crop
    in the copy to uint8 (the values are integers in ``[0, 255]``, so the copy is exact)."""
    n, c, h, w = x.shape
    hr, wr, ch = -(-height // r), -(-width // r), c // (r * r)
    if hr > h or wr > w:
        raise ValueError(f"a {height}x{width} crop of a {h * r}x{w * r} image")
    v = x.add(offset).clamp_(0, 1).mul_(255).round_().permute(0, 2, 3, 1)[:, :hr, :wr].unflatten(3, (r, r, ch))
    out = torch.empty(n, hr * r, wr * r, ch, dtype=torch.uint8, device=x.device)
    out.view(n, hr, r, wr, r, ch).copy_(v.transpose(2, 3))
    return out[:, :height, :width]


def gdn_op(mod: GDN) -> tuple[Any, ...]:
    """The coding form of a GDN layer: ``("gdn", gamma^T, beta, inverse)``, one matrix product
    over the pixels, or ``("gdn_diag", ChannelRows(gamma), ChannelRows(beta), inverse)`` when
    ``gamma`` is diagonal, as it stays in training when it starts so (the gradient of an
    off-diagonal ``g`` in ``g**2`` is zero at zero): element-wise, a few times faster. Both
    forms agree with the training form (the module) to float32 rounding, not bit for bit (a
    BLAS may fuse the bias into its last multiply-add, or order the sums otherwise). The
    bitstream's decoding does not depend on them: ``g_a`` runs only in the encoder, before
    the rounding, and ``g_s`` only in the decoder, after the entropy decoding."""
    w, b = (v.detach() for v in mod.fused())
    w = w[:, :, 0, 0]
    diag = torch.diagonal(w)
    if bool(torch.equal(w, torch.diag_embed(diag))):
        return ("gdn_diag", ChannelRows(diag), ChannelRows(b), mod.inverse)
    return ("gdn", w.t().contiguous(), b, mod.inverse)


class ChannelRows:
    """A per-channel vector repeated along image rows of a channels-last tensor (``(W * C,)``
    for width ``W``), so that broadcasting it runs over long contiguous rows; kept for a few widths."""

    def __init__(self, v: torch.Tensor) -> None:
        self.v = v.contiguous()
        self._rows: OrderedDict[int, torch.Tensor] = OrderedDict()

    def row(self, width: int) -> torch.Tensor:
        return lru_get(self._rows, width, lambda: self.v.repeat(width))


def diagonal_gdn(x: torch.Tensor, gamma: ChannelRows, beta: ChannelRows, inverse: bool) -> torch.Tensor:
    """GDN with a diagonal ``gamma`` on a channels-last ``x``: ``x * sqrt(beta + gamma x^2)``
    (``inverse``) or ``x / sqrt(...)``, computed as ``(x * x) * gamma + beta`` in that order (the
    matrix product's floats); returns a channels-last tensor."""
    n, c, h, w = x.shape
    rows = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n * h, w * c)
    norm = torch.mul(rows, rows).mul_(gamma.row(w)).add_(beta.row(w))
    out = norm.sqrt_() if inverse else norm.rsqrt_()
    return out.mul_(rows).view(n, h, w, c).permute(0, 3, 1, 2)
