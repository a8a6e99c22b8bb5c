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
  integers at scale ``2**in_bits`` (``ACT_BITS``, or fewer where the inputs lie on a coarser
  grid, as the context's latents in 1/16 steps do), ``acc = conv(a, W_int) + b_q`` with
  ``b_q = floor(b_int / 2**(ACT_BITS - in_bits))``, and the output is
  ``floor(acc / 2**(WEIGHT_BITS - ACT_BITS + in_bits))``, clamped: the integers
  ``floor((conv(a, W_int) * 2**(ACT_BITS - in_bits) + b_int) / 2**WEIGHT_BITS)``, at scale ``2**ACT_BITS``.

The integer form's activations are float32 tensors of integers, all below ``2**24`` in
magnitude (the constructor checks ``in_max`` and ``out_max``), so float32 holds them exactly.
A layer runs on the CPU (a GPU library may pick FFT or Winograd algorithms, which are not
exact) as one matrix product of integer weights and input patches (gathered by
:func:`patch_index` and :func:`patch_rows`), bias included (:meth:`WeightMatrix.product`):
in float32 where every partial sum is bound to stay below ``2**24`` (checked on each call:
``max |input| * sum |w| + max |b_q|``, or where that is too coarse, each patch's
``sum |input| * max |w|`` over its inputs, plus ``max |b_q|``), else in float64, below ``2**52``
(:meth:`IntConv.freeze` checks it from the weights and the clamped input range). Every product and partial sum is
then an exactly represented integer, so the result does not depend on the order of the sums:
not on BLAS's blocking, the thread count, the machine or the device. Division by a power of
two and ``floor`` are exact too. float64 always where torch may multiply float32 in bfloat16
or TF32 (:func:`ieee_float32_matmul`).

Where only some output positions are needed, or some kernel taps or input channels only
ever read zeros (the checkerboard context reads the anchors alone; the anchors' entropy
parameters have no context), the patches hold just those (:meth:`IntConv.forward_int_rows`):
the terms left out are products with zero, so the sums, and the bound above, are unchanged.

``upsample=True`` makes the layer a sub-pixel convolution (Shi et al. 2016): the conv
gives ``4 * out`` channels at the input's resolution and a pixel shuffle doubles it.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .cache import lru_get

#: fixed-point bits of the weights and of the activations; largest activation after ReLU
WEIGHT_BITS, ACT_BITS, ACT_MAX = 8, 8, 64.0
#: the largest integer weight (in units of ``2**-WEIGHT_BITS``)
WEIGHT_INT_MAX = 2**15
#: partial sums stay below this, so float64 adds them exactly in any order
EXACT_BOUND = 2.0**52
#: integers below this in magnitude are exact in float32, and so are sums that stay below it
FLOAT32_EXACT = 2.0**24

#: oneDNN's environment variables that may let it multiply float32 in bfloat16 or TF32
FPMATH_ENV = ("ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE")


def ieee_float32_matmul() -> bool:
    """Whether :meth:`WeightMatrix.product` may multiply in float32: whether torch's float32
    matrix product on the CPU is IEEE float32, so that integers whose partial sums stay below
    :data:`FLOAT32_EXACT` come out exact.

    Why: the entropy parameters come from these products, and a range decoder fails unless
    the encoder and the decoder compute them bit for bit alike on every machine (Ballé,
    Johnston & Minnen 2019, integer networks). A product in bfloat16 or TF32 rounds its
    inputs, so the answer is no (float64, exact everywhere) when any of these holds:

    * torch's settings allow it: ``torch.set_float32_matmul_precision`` other than
      "highest", an ``fp32_precision`` of ``torch.backends``, ``torch.backends.mkldnn`` or
      ``torch.backends.mkldnn.matmul`` other than "none" or "ieee", or torch cannot say
      (the legacy and the new settings mixed);
    * oneDNN's environment allows it: ``ONEDNN_DEFAULT_FPMATH_MODE`` or
      ``DNNL_DEFAULT_FPMATH_MODE`` set to anything but ``STRICT`` (any case);
    * torch before 2.5 on a machine that is not x86_64 (:func:`old_non_x86_torch`): its
      aarch64 mkldnn multiplied float32 in bfloat16 (pytorch#130919);
    * the probe (:func:`float32_probe`, once per process) finds a float32 product of
      integers that differs from float64's.
    """
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return False
    except RuntimeError:  # torch refuses to answer when the legacy and the new settings are mixed
        return False
    mkldnn = getattr(torch.backends, "mkldnn", None)
    levels = (torch.backends, mkldnn, getattr(mkldnn, "matmul", None))
    if not all(getattr(level, "fp32_precision", "none") in ("none", "ieee") for level in levels):
        return False
    if any(os.environ.get(name, "STRICT").upper() != "STRICT" for name in FPMATH_ENV):
        return False
    return trusted_build() and float32_probe()


@functools.cache
def trusted_build() -> bool:
    """Not :func:`old_non_x86_torch` for this process's torch and machine (asked once)."""
    return not old_non_x86_torch(torch.__version__, platform.machine())


def old_non_x86_torch(version: str, machine: str) -> bool:
    """Whether torch ``version`` is before 2.5 (or unreadable) and ``machine``
    (``platform.machine()``) is not x86_64: such builds' aarch64 mkldnn multiplied float32 in
    bfloat16 (pytorch#130919)."""
    if machine.lower() in ("x86_64", "amd64"):
        return False
    found = re.match(r"(\d+)\.(\d+)", version)
    return found is None or (int(found[1]), int(found[2])) < (2, 5)  # a version it cannot read: not trusted


@functools.cache
def float32_probe() -> bool:
    """Whether an integer float32 matrix product at a realistic size (``K = 600``, inputs of
    12 significant bits, more than bfloat16's 8 or TF32's 11, every partial sum below
    :data:`FLOAT32_EXACT`) equals the float64 product. Run once; the answer holds for the
    process (:func:`ieee_float32_matmul`; ``float32_probe.cache_clear()`` runs it again)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(-4095, 4096, (64, 600), generator=g).double()
    w = torch.randint(-6, 7, (600, 64), generator=g).double()  # 4095 * 600 * 6 < 2**24
    with torch.no_grad():
        return bool(torch.equal(torch.mm(rows.float(), w.float()).double(), torch.mm(rows, w)))


@dataclass(frozen=True)
class WeightMatrix:
    """Integer weights ``(K, cout)`` and bias ``(cout,)`` as float64 and float32, with the largest
    absolute column sum (an output's ``sum |w|``), each input's largest ``|w|`` over the outputs
    (``(K,)``, float64) and the largest ``|bias|``, for :meth:`product`."""

    w64: torch.Tensor
    w32: torch.Tensor
    b64: torch.Tensor
    b32: torch.Tensor
    abs_sum: float
    input_abs_max: torch.Tensor
    bias_max: float

    @classmethod
    def of(cls, w: torch.Tensor, bias: torch.Tensor | None = None) -> WeightMatrix:
        w = w.double().contiguous()
        b = torch.zeros(w.shape[1], dtype=torch.float64) if bias is None else bias.double().contiguous()
        w_abs = w.abs()
        abs_sum = float(w_abs.sum(0).max()) if w.numel() else 0.0
        input_abs_max = w_abs.amax(1) if w.numel() else w.new_zeros(w.shape[0])
        return cls(w, w.float(), b, b.float(), abs_sum, input_abs_max, float(b.abs().max()) if b.numel() else 0.0)

    def partial_sum_bound(self, rows: torch.Tensor) -> float:
        """An upper bound on ``|partial sum|`` of ``rows @ w + bias`` in any order of summation
        (``rows``: float integers ``(n, K)``): ``max |rows| * abs_sum``, or where that reaches
        :data:`FLOAT32_EXACT`, the smaller largest ``sum_k |rows[i, k]| * input_abs_max[k]`` over the rows ``i``
        (every product in a sum is at most its input's ``|value|`` times that input's largest ``|w|``;
        computed in float64, exact for integers below ``2**53``, so it too is a true bound); plus
        ``bias_max``. The second form is tighter where few of a patch's inputs are large: at high
        rates the trained entropy networks' first bound passes ``2**24`` by up to 5 times, the
        second stays below it (so the products run in float32, about twice as fast)."""
        if not (rows.numel() and self.abs_sum):
            return self.bias_max
        lo, hi = torch.aminmax(rows)
        bound = max(-float(lo), float(hi)) * self.abs_sum
        if bound + self.bias_max >= FLOAT32_EXACT:
            bound = min(bound, float(torch.mv(rows.to(torch.float64, copy=True).abs_(), self.input_abs_max).max()))
        return bound + self.bias_max

    def product(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows @ w + bias`` (``rows``: float integers ``(n, K)``) exactly: float32 ``(n, cout)`` when
        every partial sum is bound to stay below :data:`FLOAT32_EXACT` (:meth:`partial_sum_bound`)
        and torch multiplies in IEEE float32 (:func:`ieee_float32_matmul`), for then every product
        and sum is an exactly represented integer whatever the order; otherwise float64 (exact
        below :data:`EXACT_BOUND`, which :meth:`IntConv.check_bound` ensures). Either way the
        same integers: which one runs changes the time only."""
        if ieee_float32_matmul() and self.partial_sum_bound(rows) < FLOAT32_EXACT:
            return torch.addmm(self.b32, rows.float(), self.w32)
        return torch.addmm(self.b64, rows.double(), self.w64)


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
    clamped to ``[-out_max, out_max]``. ``in_bits``: the fixed-point bits of the inputs of the
    integer form (its inputs are ``a * 2**in_bits``; fewer than ``ACT_BITS`` only where the
    inputs lie on that coarser grid), which keeps its partial sums, and so its products, smaller.
    """

    def __init__(self, cin: int, cout: int, k: int = 3, *, relu: bool = True, upsample: bool = False,
                 in_max: float = ACT_MAX, out_max: float = 2.0**15, in_bits: int = ACT_BITS) -> None:
        super().__init__()
        self.cin, self.cout, self.k, self.relu, self.upsample = cin, cout, k, relu, upsample
        self.in_max, self.out_max, self.in_bits = float(in_max), float(out_max), int(in_bits)
        if not 0 <= self.in_bits <= ACT_BITS:
            raise ValueError(f"in_bits={in_bits}: the inputs' fixed-point bits are between 0 and ACT_BITS={ACT_BITS}")
        if self.in_limit >= FLOAT32_EXACT or self.out_limit >= FLOAT32_EXACT:
            raise ValueError(f"in_max={in_max}, out_max={out_max}: the integer form's activations must stay below 2**24")
        n_out = 4 * cout if upsample else cout
        self.weight = nn.Parameter(torch.empty(n_out, cin, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))
        # derived from the float weights by freeze() (a pure function of them), so not saved
        self.register_buffer("weight_int", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("bias_int", torch.zeros(0, dtype=torch.int64), persistent=False)
        self._w64 = self._bq = torch.zeros(0, dtype=torch.float64)  # the integer weights and the products' bias, on the CPU
        self._w_taps: dict[tuple[bytes, int | None], WeightMatrix] = {}  # (T * cin, cout) matrices, by tap mask and channels
        self._index: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()  # every position's patch, by image size

    def extra_repr(self) -> str:
        return f"{self.cin}, {self.cout}, k={self.k}, relu={self.relu}, upsample={self.upsample}, in_bits={self.in_bits}"

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
        self._w64 = self._bq = torch.zeros(0, dtype=torch.float64)
        self._w_taps = {}

    @torch.no_grad()
    def freeze(self) -> None:
        """Round the weights to the integers the integer form uses, and check the exactness bound."""
        w = torch.round(self.weight.detach().double() * 2**WEIGHT_BITS).clamp(-WEIGHT_INT_MAX, WEIGHT_INT_MAX)
        b = torch.round(self.bias.detach().double() * 2 ** (ACT_BITS + WEIGHT_BITS))
        self.weight_int = w.to(torch.int64)
        self.bias_int = b.to(torch.int64)
        self._w64 = w.cpu()
        self._bq = torch.floor(b.cpu() / 2 ** (ACT_BITS - self.in_bits))  # the bias at the products' scale
        self._w_taps = {}
        self.check_bound()

    def check_bound(self) -> None:
        """Refuse integer weights whose partial sums could reach :data:`EXACT_BOUND`."""
        worst = float((self._w64.abs().flatten(1).sum(1) * self.in_limit + self._bq.abs()).max())
        if worst >= EXACT_BOUND:
            raise WeightsError(f"integer layer {self.extra_repr()}: partial sums up to {worst:.3g} are not exact in float64")

    @property
    def weight64(self) -> torch.Tensor:
        """The integer weights as float64 on the CPU (empty until :meth:`freeze`)."""
        return self._w64

    @property
    def in_limit(self) -> float:
        """The largest absolute input of the integer form (``in_max`` at scale ``2**in_bits``)."""
        return self.in_max * 2**self.in_bits

    @property
    def out_limit(self) -> float:
        """The largest absolute output of the integer form (at scale ``2**ACT_BITS``)."""
        return (ACT_MAX if self.relu else self.out_max) * 2**ACT_BITS

    def activate_(self, acc: torch.Tensor) -> torch.Tensor:
        """Products plus bias (:meth:`WeightMatrix.product`) to output activations, float32:
        ``floor(acc / 2**(WEIGHT_BITS - ACT_BITS + in_bits))`` (exact: a power of two), clamped."""
        out = acc.div_(2 ** (WEIGHT_BITS - ACT_BITS + self.in_bits)).floor_()
        out = out.clamp_(0.0, self.out_limit) if self.relu else out.clamp_(-self.out_limit, self.out_limit)
        return out.float()

    def _check_frozen(self) -> None:
        if not self.frozen or self._w64.numel() == 0:
            raise WeightsError("an integer layer must be frozen (its weights rounded) before coding")

    def _matrix(self, taps: torch.Tensor | None, channels: int | None) -> WeightMatrix:
        """The integer weights of ``taps`` (all when None) and the first ``channels`` input
        channels (all when None) as a ``(T * c, cout)`` :class:`WeightMatrix` with the bias, rows
        tap-major as :func:`patch_rows` lays out a patch; made once per tap mask and channel count."""
        key = (b"" if taps is None else taps.cpu().numpy().tobytes(), channels)
        if key not in self._w_taps:
            w = self._w64.flatten(2) if taps is None else self._w64[:, :, taps.cpu()]  # (cout, cin, T)
            self._w_taps[key] = WeightMatrix.of(w[:, :channels].permute(2, 1, 0).reshape(-1, w.shape[0]), self._bq)
        return self._w_taps[key]

    def forward_int_rows(self, rows: torch.Tensor, taps: torch.Tensor | None = None,
                         channels: int | None = None, *, clamped: bool = False) -> torch.Tensor:
        """The integer form on patches laid out as rows: ``rows`` ``(n, T * c)`` float integers
        (from :func:`patch_rows` for the same ``taps``; all ``k * k`` when None; ``c``: the first
        ``channels`` input channels, the others read as zero) gives float32 ``(n, cout)``. ``rows``
        is clamped to :attr:`in_limit` in place, unless ``clamped`` says the caller did it (before
        gathering the patches, where there are fewer values). One matrix product
        (:meth:`WeightMatrix.product`, exact); leaving out taps and channels whose inputs are
        zero leaves out zero products only, so the sums are the same integers."""
        self._check_frozen()
        if not clamped:
            rows = rows.clamp_(-self.in_limit, self.in_limit)
        return self.activate_(self._matrix(taps, channels).product(rows))

    def forward_int(self, a: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """The integer form: ``a`` ``(B, C, H, W)`` float integers at scale ``2**in_bits``; returns float32
        integers at scale ``2**ACT_BITS`` (a channels-last view; :meth:`forward_int_nhwc` without the views).

        With ``where`` (bool ``(H, W)``; not for ``upsample``), only those output positions are
        computed (:meth:`forward_int_rows` over their patches); the others are left at 0.
        """
        self._check_frozen()
        nhwc = a.cpu().permute(0, 2, 3, 1)
        if where is None or self.upsample:
            return self.forward_int_nhwc(nhwc).permute(0, 3, 1, 2)
        b, h, w, _ = nhwc.shape
        out = torch.zeros(b, h * w, self.cout)
        out[:, where.cpu().reshape(-1)] = self._patches_int(nhwc, patch_index((h, w), self.k, where.cpu()))
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)

    def forward_int_nhwc(self, a: torch.Tensor) -> torch.Tensor:
        """The integer form over a whole grid, channels last: ``a`` ``(B, H, W, C)`` float integers at
        scale ``2**in_bits`` gives float32 ``(B, H, W, cout)`` (``(B, 2H, 2W, cout)`` for ``upsample``)."""
        self._check_frozen()
        b, h, w, _ = a.shape
        index = lru_get(self._index, (h, w), lambda: patch_index((h, w), self.k, torch.ones(h, w, dtype=torch.bool)))
        out = self._patches_int(a, index)
        if not self.upsample:
            return out.view(b, h, w, -1)
        # the pixel shuffle, channels last: output channel c * 4 + i * 2 + j goes to (2h + i, 2w + j, c)
        return out.view(b, h, w, self.cout, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, self.cout)

    def _patches_int(self, a: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The integer form ``(B, n, outputs)`` at the positions of ``index`` (:func:`patch_index`) of ``a`` ``(B, H, W, C)``."""
        b, h, w, c = a.shape
        rows = patch_rows(a.reshape(b, h * w, c).clamp(-self.in_limit, self.in_limit), index)
        return self.forward_int_rows(rows.view(b * index.shape[0], -1), clamped=True).view(b, index.shape[0], -1)


def patch_index(shape: tuple[int, int], k: int, where: torch.Tensor, taps: torch.Tensor | None = None,
                source: torch.Tensor | None = None) -> torch.Tensor:
    """``(n, T)`` int64: for each output position where ``where`` (bool ``(H, W)``) is True, in
    row-major order, and each kernel tap where ``taps`` (bool ``(k, k)``; all when None) is True,
    the input it reads, as an index among the ``source`` positions (bool ``(H, W)``, row-major;
    all when None), or the number of source positions for one outside the image or not a
    source (which reads zero). :func:`patch_rows` uses it."""
    h, w = shape
    p = k // 2
    src = torch.ones(h, w, dtype=torch.bool) if source is None else source.cpu()
    n_src = int(src.sum())
    lookup = torch.full((h + 2 * p, w + 2 * p), n_src, dtype=torch.int64)
    inner = lookup[p : p + h, p : p + w]
    inner[src] = torch.arange(n_src)
    rows, cols = where.cpu().nonzero(as_tuple=True)
    di, dj = (torch.ones(k, k, dtype=torch.bool) if taps is None else taps.cpu()).nonzero(as_tuple=True)
    return lookup[rows[:, None] + di[None, :], cols[:, None] + dj[None, :]]


def patch_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The patches ``(B, n, T * C)`` (each row tap-major, contiguous) of ``values`` (``(B, n_source,
    C)``, the inputs at the source positions, positions first) that :func:`patch_index` describes,
    zeros where it says so: whole runs of ``C`` values gathered per position and tap."""
    b, n_src, c = values.shape
    rows = torch.cat([values, values.new_zeros(b, 1, c)], 1)  # (B, n_src + 1, C), contiguous
    n, t = index.shape
    return rows.index_select(1, index.view(-1)).view(b, n, t * c)
