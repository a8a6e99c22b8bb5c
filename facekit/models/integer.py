"""Integer convolutions with a float twin for training (Ballé, Johnston & Minnen 2019).

Ballé et al., "Integer Networks for Data Compression with Latent-Variable Models" (ICLR
2019), show that a range decoder fails across machines unless the entropy model's
parameters are computed bit-exactly, and that networks run in integer arithmetic give
that. :class:`IntConv` is such a layer, in two forms that compute the same function:

* the *float twin* (``forward``, for training): weights rounded to multiples of
  ``2**-WEIGHT_BITS`` and biases to ``2**-(ACT_BITS + WEIGHT_BITS)`` with straight-through
  gradients, and outputs floored to multiples of ``2**-ACT_BITS`` (straight-through too),
  then (``relu``) clamped to ``[0, ACT_MAX]``;
* the *integer form* (``forward_int``, for coding, after :meth:`IntConv.freeze`): inputs are
  integers at scale ``2**ACT_BITS``, ``acc = conv(a, W_int) + b_int`` holds integers at scale
  ``2**(ACT_BITS + WEIGHT_BITS)``, and the output is ``floor(acc / 2**WEIGHT_BITS)``, clamped.

The integer form runs on the CPU (a GPU library may pick FFT or Winograd algorithms, which
are not exact) as a float64 convolution of integer-valued tensors. Every product
and partial sum is an integer below ``2**52`` (:meth:`IntConv.freeze` checks the bound
from the weights and the clamped input range), so float64 adds them exactly in any order:
the result does not depend on BLAS's blocking, the thread count, the machine or the
device. Division by a power of two and ``floor`` are exact too.

``upsample=True`` makes the layer a sub-pixel convolution (Shi et al. 2016): the conv
gives ``4 * out`` channels at the input's resolution and a pixel shuffle doubles it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError

#: fixed-point bits of the weights and of the activations; largest activation after ReLU
WEIGHT_BITS, ACT_BITS, ACT_MAX = 8, 8, 64.0
#: the largest integer weight (in units of ``2**-WEIGHT_BITS``)
WEIGHT_INT_MAX = 2**15
#: partial sums stay below this, so float64 adds them exactly in any order
EXACT_BOUND = 2.0**52


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` forward, identity backward."""
    return x + (torch.floor(x) - x).detach()


class _Bound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.lo) & (x <= ctx.hi)
        inward = ((x < ctx.lo) & (grad < 0)) | ((x > ctx.hi) & (grad > 0))
        return grad * (inside | inward).to(grad.dtype), None, None


def bound(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``clamp(x, lo, hi)`` whose gradient still flows where it would bring ``x`` back into
    the range (Ballé's lower bound), so an entry past the edge is not stuck there."""
    return _Bound.apply(x, lo, hi)


class IntConv(nn.Module):
    """A ``k x k`` convolution (stride 1, same padding) that runs bit-exactly once frozen.

    ``in_max`` is the largest absolute input value (real units) the layer will see; the
    caller clamps to it. ``relu`` clamps the output to ``[0, ACT_MAX]``; otherwise it is
    clamped to ``[-out_max, out_max]``.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, *, relu: bool = True, upsample: bool = False,
                 in_max: float = ACT_MAX, out_max: float = 2.0**20) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.relu, self.upsample = cin, cout, k, relu, upsample
        self.in_max, self.out_max = float(in_max), float(out_max)
        n_out = 4 * cout if upsample else cout
        self.weight = nn.Parameter(torch.empty(n_out, cin, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))
        # derived from the float weights by freeze() (a pure function of them), so not saved
        self.register_buffer("weight_int", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("bias_int", torch.zeros(0, dtype=torch.int64), persistent=False)
        self._w64 = self._b64 = torch.zeros(0, dtype=torch.float64)  # the same integers as float64, on the CPU

    def extra_repr(self) -> str:
        return f"{self.cin}, {self.cout}, k={self.k}, relu={self.relu}, upsample={self.upsample}"

    @property
    def frozen(self) -> bool:
        return self.weight_int.numel() > 0

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """The float twin: ``a`` in real units (on the ``2**-ACT_BITS`` grid); output likewise."""
        w = round_ste(self.weight * 2**WEIGHT_BITS).clamp(-WEIGHT_INT_MAX, WEIGHT_INT_MAX) / 2**WEIGHT_BITS
        b = round_ste(self.bias * 2 ** (ACT_BITS + WEIGHT_BITS)) / 2 ** (ACT_BITS + WEIGHT_BITS)
        a = a.clamp(-self.in_max, self.in_max)
        pre = F.conv2d(a, w, b, padding=self.k // 2)
        if self.upsample:
            pre = F.pixel_shuffle(pre, 2)
        out = floor_ste(pre * 2**ACT_BITS) / 2**ACT_BITS
        return out.clamp(0.0, ACT_MAX) if self.relu else out.clamp(-self.out_max, self.out_max)

    def unfreeze(self) -> None:
        """Forget the integer weights (the float weights are about to change)."""
        self.weight_int = self.weight_int.new_zeros(0)
        self.bias_int = self.bias_int.new_zeros(0)
        self._w64 = self._b64 = torch.zeros(0, dtype=torch.float64)

    @torch.no_grad()
    def freeze(self) -> None:
        """Round the weights to the integers the integer form uses, and check the exactness bound."""
        w = torch.round(self.weight.detach().double() * 2**WEIGHT_BITS).clamp(-WEIGHT_INT_MAX, WEIGHT_INT_MAX)
        b = torch.round(self.bias.detach().double() * 2 ** (ACT_BITS + WEIGHT_BITS))
        self.weight_int = w.to(torch.int64)
        self.bias_int = b.to(torch.int64)
        self._w64, self._b64 = w.cpu(), b.cpu()
        self.check_bound()

    def check_bound(self) -> None:
        """Refuse integer weights whose partial sums could reach :data:`EXACT_BOUND`."""
        a_max = self.in_max * 2**ACT_BITS
        worst = float((self.weight_int.abs().double().flatten(1).sum(1) * a_max + self.bias_int.abs().double()).max())
        if worst >= EXACT_BOUND:
            raise WeightsError(f"integer layer {self.extra_repr()}: partial sums up to {worst:.3g} are not exact in float64")

    def forward_int(self, a: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """The integer form: ``a`` float64 integers at scale ``2**ACT_BITS``; returns the same kind.

        With ``where`` (bool ``(H, W)``; not for ``upsample``), only those output positions are
        computed (one matrix product over their patches); the others are left at 0.
        """
        if not self.frozen or self._w64.numel() == 0:
            raise WeightsError("an integer layer must be frozen (its weights rounded) before coding")
        lim = self.in_max * 2**ACT_BITS
        a = a.double().cpu().clamp(-lim, lim)
        if where is not None and not self.upsample:
            b, _, h, w = a.shape
            keep = where.cpu().reshape(-1)
            cols = F.unfold(a, self.k, padding=self.k // 2)[:, :, keep]  # (B, Cin k k, n)
            acc = torch.zeros(b, self._w64.shape[0], h * w, dtype=torch.float64)
            acc[:, :, keep] = self._w64.flatten(1) @ cols + self._b64[:, None]
            acc = acc.view(b, -1, h, w)
        else:
            acc = F.conv2d(a, self._w64, self._b64, padding=self.k // 2)
        if self.upsample:
            acc = F.pixel_shuffle(acc, 2)
        out = torch.floor(acc / 2**WEIGHT_BITS)
        if self.relu:
            return out.clamp(0.0, ACT_MAX * 2**ACT_BITS)
        return out.clamp(-self.out_max * 2**ACT_BITS, self.out_max * 2**ACT_BITS)
