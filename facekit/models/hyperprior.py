"""The second-generation face codec: a hyperprior, a checkerboard context, one model for every rate.

Where the paper's codec (:mod:`facekit.models.autoencoder`, Bian et al. 2019) stores a
fixed-size code as PNG, this one is trained end to end for rate and distortion under its
own entropy model (``lambda * D + R``), and codes its latents with a range coder. Sources:

* Ballé, Minnen, Singh, Hwang & Johnston, "Variational image compression with a scale
  hyperprior" (ICLR 2018): analysis/synthesis transforms with GDN, a hyper-latent ``z``
  coded under a factorized prior, whose synthesis gives the Gaussian scales of ``y``;
  Minnen, Ballé & Toderici (NeurIPS 2018): means as well as scales (mean-scale Gaussian).
* He, Zheng, Sun, Wang & Qin, "Checkerboard context model for efficient learned image
  compression" (CVPR 2021): the latent grid is split into anchors (``(i + j)`` even),
  coded from the hyperprior alone, and non-anchors, coded with a context from the decoded
  anchors: two passes, whatever the image size.
* Cui, Wang, Gao, Bai & Jiang, "Asymmetric gained deep image compression with continuous
  rate adaptation" (CVPR 2021): one model for every rate. The latent is multiplied per
  channel by a gain vector before quantisation and by an inverse gain after; ``K`` learned
  gain vectors are interpolated exponentially by a continuous rate parameter ``t`` in
  ``[0, 1]`` (0: fewest bits). :data:`PRESETS` maps the names ``q1``..``q5`` onto it.
* Ballé, Johnston & Minnen, "Integer networks for data compression with latent-variable
  models" (ICLR 2019): the path from ``z`` (and from the decoded anchors) to the entropy
  parameters runs in integer arithmetic (:mod:`facekit.models.integer`), and the scales
  are indices into a fixed table (:mod:`facekit.entropy_models.gaussian`), so encoder and
  decoder agree bit for bit across thread counts, processes and machines (CompressAI
  issues #279, #309, #320 show what happens otherwise).

CompressAI (InterDigital) organises the same ideas (``ScaleHyperprior``,
``CheckerboardLatentCodec``, ``GainHyperpriorLatentCodec``); this module is written for
facekit, not taken from it. Architecture (``M = 64`` latents, sizes for a 250x250 face
padded to 256x256; every width in :class:`HyperpriorArch`)::

    analysis g_a      conv5x5/2 3->24, GDN, conv5x5/2 ->40, GDN, conv5x5/2 ->56, GDN, conv5x5/2 ->M
    gain              y = g_a(x) * gain(t)                                  (M, 16, 16)
    hyper-analysis    conv3x3 M->64, LReLU, conv5x5/2 ->64, LReLU, conv5x5/2 ->32 = z  (32, 4, 4)
    factorized prior  z_hat = round(z); a zero-mean Gaussian per channel (a table index each)
    hyper-synthesis   integer: subpixel conv3x3 32->64 x2, QReLU, subpixel conv3x3 ->64 x2, QReLU  = h
    context           integer: conv5x5 over the decoded anchors M->128, QReLU  = c (zero for anchors)
    entropy params    integer: 1x1 (h, c) 192->192, QReLU, 1x1 ->2M: mean (1/16 steps), scale index / 8
    synthesis g_s     y_hat * inverse_gain(t), tconv5x5/2 M->48, IGDN, ->32, IGDN, ->16, IGDN,
                      conv3x3 ->12 + pixel shuffle: x_hat (crop to H x W)

The synthesis sets the decoding speed. Its widths are multiples of 16 because oneDNN's AVX-512
kernels compute 16 output channels at a time. One of 56, 40 and 24 channels, trained by the same
recipe, codes about 0.3 dB better at equal bits, at the same recognition accuracy, and takes about
a third longer to decode (``results/README.md``, the model card); 192 latents instead of 64 code
about 0.5 dB better at the end of the recipe's phase 1, and decode over a third slower, over the
10 ms a face aimed at. The entropy model runs on the
latent grid, 1/256 of the pixels, so its widths cost little: twice those trained before (context
64, parameters 96) add 214 MACs a pixel to decoding and code 0.43 dB better at the end of the
recipe's phase 1 (held-out faces, Bjøntegaard PSNR over 0.1-0.5 bpp); three times them code no better.

Coding runs on a frozen model: :meth:`~FaceHyperprior.freeze` (called when needed) rounds the
integer networks' weights and the prior's indices and derives coding forms of ``g_a``, ``h_a``
and ``g_s`` (:class:`~facekit.models.coding_transforms.Inference`), never saved, a pure function
of the float weights that ``train()``, ``unfreeze()`` and ``load_state_dict`` forget. The integer
networks run only where their outputs are read (each pass's positions; 12 of the context's 25
taps; no context for the anchors), channels last, on float32 integers, the context on latents in
1/16 steps (:mod:`facekit.models.integer`): the bytes of the whole-grid int64 computation.
``benchmarks/model_complexity.py`` counts MACs and times coding (figures: ``results/README.md``).

The contract is CompressAI's: ``forward(x, rate)`` returns ``{"x_hat", "likelihoods":
{"y", "z"}, "rate"}`` (``rate=None`` draws one ``t`` per batch); ``compress(x, rate)`` returns
``{"strings": [bytes per image], "shape": (H, W)}``; ``decompress(strings, shape)`` returns
``{"x_hat"}`` (:meth:`~FaceHyperprior.decompress_pixels`: the same images as uint8 pixels). A string
is ``CRC32 | t | range-coded words`` (``z``, anchors, non-anchors in one queue coder;
:func:`~facekit.container.pack_hyperprior_stream`): a damaged, truncated or mis-sized string
fails its CRC (:class:`~facekit.errors.BitstreamError`); a rate outside ``[0, 1]`` is a
:class:`~facekit.errors.CodecError`. :mod:`facekit.models.refine` refines a latent for ``compress``.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..container import HYPERPRIOR_MAX_SIDE, pack_hyperprior_stream, parse_hyperprior_stream
from ..entropy_models import gaussian
from ..errors import BitstreamError, CodecError
from .cache import lru_get
from .coding_transforms import GDN, Inference, synthesis_dtype
from .integer import ACT_BITS, IntConv, bound, floor_ste, patch_index, patch_rows, round_ste

#: the q-names as points of the continuous rate parameter
PRESETS = {"q1": 0.0, "q2": 0.25, "q3": 0.5, "q4": 0.75, "q5": 1.0}
#: the rate parameter is stored as ``round(t * RATE_STEPS)`` in a uint16
RATE_STEPS = 65535
#: the entropy networks give a scale index in units of 1/INDEX_GAIN (so that a training step moves it)
INDEX_GAIN = 8
#: the largest |latent| the context network reads, and the largest |z| symbol
Y_MAX, Z_MAX = 2048.0, float(gaussian.support(gaussian.N_SCALES - 1))


@dataclass(frozen=True)
class HyperpriorArch:
    """Widths of the networks, and how training starts them. ``name`` and :meth:`to_dict` are what
    the training loop records; :meth:`decoding_dict` leaves out :data:`TRAINING_START`."""

    name: str = "hyperprior"
    latent: int = 64
    enc_widths: tuple[int, ...] = (24, 40, 56)
    dec_widths: tuple[int, ...] = (48, 32, 16)
    hyper: int = 64
    hyper_latent: int = 32
    context: int = 128
    params_hidden: int = 192
    gain_levels: int = 5
    #: how training starts (no effect on a trained model): GDN's off-diagonal ``sqrt(gamma)``
    #: (0: ``gamma`` stays diagonal, :class:`~facekit.models.coding_transforms.GDN`), and the
    #: factor on ``h_a``'s last weights (not 1: every ``h_a`` bias starts at zero), so that
    #: ``z`` is large enough at the start to survive rounding
    gdn_offdiag_init: float = 0.0
    z_init_gain: float = 1.0

    #: the fields that only set the starting weights: a trained model computes the same without them
    TRAINING_START: ClassVar[tuple[str, ...]] = ("gdn_offdiag_init", "z_init_gain")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def decoding_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without :data:`TRAINING_START`: what a trained model's outputs depend on."""
        return {k: v for k, v in self.to_dict().items() if k not in self.TRAINING_START}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HyperpriorArch:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class Checkerboard(NamedTuple):
    """The checkerboard of one latent grid size, as the coding path reads it."""

    #: bool ``(H, W)``: True at the anchors (``(i + j)`` even, decoded first)
    anchor: torch.Tensor
    #: the context's patch index at the non-anchors, 12 taps over the anchors (:func:`patch_index`)
    context: torch.Tensor
    #: the anchors' and the non-anchors' flat positions, ascending
    anchors_at: torch.Tensor
    others_at: torch.Tensor
    #: ``cat([anchors, non-anchors])[order]`` is the grid in row-major order
    order: torch.Tensor


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


def tconv(cin: int, cout: int, k: int = 5) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, 2, k // 2, output_padding=1)


def rate_parameter(setting: float | str | torch.Tensor) -> float:
    """The rate parameter ``t`` of a setting: a number in ``[0, 1]`` or a preset name; CodecError otherwise.

    Example: ``rate_parameter("q2")`` -> 0.25, ``rate_parameter(0.3)`` -> 0.3; ``rate_parameter(2)``
    and ``rate_parameter(float("nan"))`` raise.
    """
    if isinstance(setting, str):
        if setting not in PRESETS:
            raise CodecError(f"unknown rate {setting!r}: use a number in [0, 1] or one of {', '.join(PRESETS)}")
        return PRESETS[setting]
    t = float(setting)
    if not (0.0 <= t <= 1.0):  # also refuses NaN
        raise CodecError(f"rate parameter {setting!r} is outside [0, 1] (0: fewest bits, 1: most)")
    return t


def quantise_rate(rate: float | str | torch.Tensor) -> int:
    """``t`` (a number in ``[0, 1]`` or a preset name, :func:`rate_parameter`) as the stored uint16."""
    return int(round(rate_parameter(rate) * RATE_STEPS))


class FaceHyperprior(nn.Module):
    """Hyperprior + checkerboard context + gain units, entropy parameters by integer networks."""

    def __init__(self, arch: HyperpriorArch | None = None) -> None:
        super().__init__()
        a = arch or HyperpriorArch()
        self.arch = a
        m, e, d = a.latent, a.enc_widths, a.dec_widths
        g = a.gdn_offdiag_init
        self.g_a = nn.Sequential(conv(3, e[0]), GDN(e[0], False, g), conv(e[0], e[1]), GDN(e[1], False, g),
                                 conv(e[1], e[2]), GDN(e[2], False, g), conv(e[2], m))
        self.g_s = nn.Sequential(tconv(m, d[0]), GDN(d[0], True, g), tconv(d[0], d[1]), GDN(d[1], True, g),
                                 tconv(d[1], d[2]), GDN(d[2], True, g), nn.Conv2d(d[2], 12, 3, 1, 1), nn.PixelShuffle(2))
        self.h_a = nn.Sequential(conv(m, a.hyper, 3, 1), nn.LeakyReLU(), conv(a.hyper, a.hyper),
                                 nn.LeakyReLU(), conv(a.hyper, a.hyper_latent))
        if a.z_init_gain != 1.0:
            with torch.no_grad():
                self.h_a[-1].weight.mul_(a.z_init_gain)
                for layer in self.h_a[::2]:
                    layer.bias.zero_()
        self.h_s = nn.ModuleList([IntConv(a.hyper_latent, a.hyper, 3, upsample=True, in_max=Z_MAX),
                                  IntConv(a.hyper, a.hyper, 3, upsample=True)])
        self.ctx = IntConv(m, a.context, 5, in_max=Y_MAX, in_bits=4)  # it reads latents in 1/16 steps
        self.ep = nn.ModuleList([IntConv(a.hyper + a.context, a.params_hidden, 1),
                                 IntConv(a.params_hidden, 2 * m, 1, relu=False, out_max=4096.0)])
        with torch.no_grad():  # start near sigma = 2.4 (index 25) and mean 0
            self.ep[1].weight.mul_(0.1)
            self.ep[1].bias[m:] = 25.0 / INDEX_GAIN
        #: the factorized prior: one scale index per channel of z (rounded when coding)
        self.z_index = nn.Parameter(torch.full((a.hyper_latent,), 30.0 / INDEX_GAIN))
        self.register_buffer("z_index_int", torch.zeros(0, dtype=torch.int64), persistent=False)
        levels = torch.linspace(math.log(0.5), math.log(4.0), a.gain_levels)
        self.log_gain = nn.Parameter(levels[:, None].repeat(1, m))
        self.log_inv_gain = nn.Parameter(-levels[:, None].repeat(1, m))
        self._inference: dict[str, Inference] = {}
        #: the synthesis' input scale at the last few rates (:meth:`_synthesis_scale`)
        self._scales: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()
        #: the last few latent grid sizes' checkerboards (:meth:`_checkerboard`)
        self._grids: OrderedDict[tuple[int, int], Checkerboard] = OrderedDict()
        #: the context kernel's taps that can read an anchor from a non-anchor: (di + dj) odd
        self._ctx_taps = ~self.anchors(self.ctx.k, self.ctx.k)
        self.register_load_state_dict_post_hook(self._unfreeze_after_load)  # new weights: derive again

    # --- what the training loop reads -------------------------------------------------
    @property
    def rate_point(self) -> HyperpriorArch:
        return self.arch

    # --- pieces ----------------------------------------------------------------------
    def gains(self, t: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """``(B, M, 1, 1)`` gains at rate ``t`` (``(B,)``): exponential interpolation of the levels."""
        table = self.log_inv_gain if inverse else self.log_gain
        u = t.clamp(0, 1) * (self.arch.gain_levels - 1)
        lo = u.floor().clamp(max=self.arch.gain_levels - 2).long()
        w = (u - lo)[:, None]
        return torch.exp((1 - w) * table[lo] + w * table[lo + 1])[:, :, None, None]

    @staticmethod
    def anchors(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """The checkerboard: True where ``(i + j)`` is even (decoded first)."""
        i = torch.arange(h, device=device)[:, None]
        j = torch.arange(w, device=device)[None, :]
        return (i + j) % 2 == 0

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")

    @staticmethod
    def _centred_padded(x: torch.Tensor) -> torch.Tensor:
        """``_pad(x) - 0.5`` (the same values), made channels-last in one copy for the coding transforms."""
        b, c, h, w = x.shape
        out = x.new_empty(b, h + (-h) % 64, w + (-w) % 64, c).permute(0, 3, 1, 2)
        torch.sub(x, 0.5, out=out[..., :h, :w])
        out[..., :h, w:] = out[..., :h, w - 1 : w]
        out[..., h:, :] = out[..., h - 1 : h, :]
        return out

    def _params_twin(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.ep[1](self.ep[0](torch.cat([h, c], 1)))
        m = self.arch.latent
        mean = floor_ste(p[:, :m] * 16 + 0.5) / 16
        index = bound(floor_ste(p[:, m:] * INDEX_GAIN + 0.5), 0, gaussian.N_SCALES - 1)
        return mean, index

    # --- training --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rate: float | torch.Tensor | None = None) -> dict[str, Any]:
        """Training pass: noise for the likelihoods, straight-through rounding for the decoder."""
        b = x.shape[0]
        if rate is None:
            t = torch.rand((), device=x.device).expand(b)  # one rate per batch
        else:
            t = torch.as_tensor(rate, dtype=x.dtype, device=x.device).reshape(-1).expand(b)
        return self.from_latent(self.analysis(x, t), t, x.shape[-2:])

    def analysis(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The gain-scaled latent ``g_a(x) * gains(t)`` (``t``: ``(B,)``) in the training form (differentiable)."""
        return self.g_a(self._pad(x) - 0.5) * self.gains(t)

    def from_latent(self, y: torch.Tensor, t: torch.Tensor, shape: Sequence[int],
                    generator: torch.Generator | None = None) -> dict[str, Any]:
        """:meth:`forward` from the gain-scaled latent ``y`` on, ``x_hat`` cropped to ``shape``; noise from ``generator``."""

        def noise(v: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(v).uniform_(-0.5, 0.5, generator=generator)

        z = self.h_a(y)
        z_hat = round_ste(z).clamp(-Z_MAX, Z_MAX)
        z_scale = gaussian.index_to_scale(bound(floor_ste(self.z_index * INDEX_GAIN + 0.5), 0, gaussian.N_SCALES - 1))
        z_lik = gaussian.gaussian_likelihood(z + noise(z), z_scale[None, :, None, None])
        h = z_hat
        for layer in self.h_s:
            h = layer(h)
        anchor = self.anchors(y.shape[-2], y.shape[-1], y.device)
        mean_a, index_a = self._params_twin(h, h.new_zeros((h.shape[0], self.arch.context, *h.shape[2:])))  # anchors: no context
        y_anchor = torch.where(anchor, round_ste(y - mean_a) + mean_a, torch.zeros_like(y))
        mean_n, index_n = self._params_twin(h, self.ctx(y_anchor))
        mean = torch.where(anchor, mean_a, mean_n)
        index = torch.where(anchor, index_a, index_n)
        y_hat = round_ste(y - mean) + mean
        y_lik = gaussian.gaussian_likelihood(y - mean + noise(y), gaussian.index_to_scale(index))
        x_hat = (self.g_s(y_hat * self.gains(t, inverse=True)) + 0.5)[..., : shape[0], : shape[1]]
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}, "rate": t}

    @torch.no_grad()
    def unquantised(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        """``g_s(g_a(x))`` at rate ``rate``, the latents unrounded (unclamped): the transforms' ceiling."""
        t = torch.full((x.shape[0],), float(rate), dtype=x.dtype, device=x.device)
        return (self.g_s(self.analysis(x, t) * self.gains(t, inverse=True)) + 0.5)[..., : x.shape[-2], : x.shape[-1]]

    # --- exact coding ----------------------------------------------------------------
    def freeze(self) -> FaceHyperprior:
        """Round the integer networks' weights and the prior's indices: a pure function of the
        float weights (exact scaling by powers of two, then rounding), so they are not saved.
        Also derives the coding forms of the float transforms (:class:`Inference`)."""
        for mod in self.modules():
            if isinstance(mod, IntConv):
                mod.freeze()
        with torch.inference_mode(False), torch.no_grad():
            self.z_index_int = torch.floor(self.z_index.detach() * INDEX_GAIN + 0.5).clamp(0, gaussian.N_SCALES - 1).long()
        self._inference = {name: Inference(getattr(self, name)) for name in ("g_a", "h_a", "g_s")}
        self._scales.clear()
        return self

    @property
    def frozen(self) -> bool:
        return self.z_index_int.numel() > 0

    def unfreeze(self) -> None:
        """Forget what :meth:`freeze` derived (the float weights are about to change)."""
        for mod in self.modules():
            if isinstance(mod, IntConv):
                mod.unfreeze()
        self.z_index_int = self.z_index_int.new_zeros(0)
        self._inference = {}
        self._scales.clear()

    def train(self, mode: bool = True) -> FaceHyperprior:
        """Training mode also forgets the integer weights (:meth:`freeze` makes them again)."""
        if mode and self.frozen:
            self.unfreeze()
        return super().train(mode)

    @staticmethod
    def _unfreeze_after_load(module: nn.Module, incompatible_keys: Any) -> None:
        if isinstance(module, FaceHyperprior):
            module.unfreeze()

    def _coding_form(self, name: str, arithmetic: str = "float32") -> Inference:
        """``g_a``, ``h_a`` or ``g_s`` in its frozen coding form (made again if the model moved), its
        convolutions in ``arithmetic`` (:data:`~facekit.models.coding_transforms.SYNTHESIS`)."""
        if name not in self._inference or self._inference[name].device != self.log_gain.device:
            self.freeze()
        key = name if arithmetic == "float32" else f"{name}/{arithmetic}"
        if key not in self._inference:
            self._inference[key] = Inference(getattr(self, name), synthesis_dtype(arithmetic))
        return self._inference[key]

    def _synthesis_scale(self, t16: int) -> torch.Tensor:
        """``gains(t, inverse=True) / 16`` (``(1, M, 1, 1)``) at the stored rate ``t16``: from latents in
        1/16 steps to the synthesis' input (exact: a power of two). Kept per rate and device
        while frozen (:meth:`unfreeze` forgets it)."""
        dev = self.log_gain.device

        def make() -> torch.Tensor:
            with torch.inference_mode(False), torch.no_grad():
                return self.gains(torch.full((1,), t16 / RATE_STEPS, device=dev), inverse=True) / 16

        return lru_get(self._scales, (t16, str(dev)), make)

    def _params_at(self, h: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``(mean in 1/16 steps, scale index)``, int64 ``(B, M, n)``, from integer features
        ``h`` and context ``c`` (None: zero, and its weights are left out) at ``n`` positions, as
        rows ``(B, n, channels)`` (:meth:`_hyper_rows`, :meth:`_context_at`); ``h`` may be
        clamped in place."""
        b, n = h.shape[:2]
        if c is None:
            p = self.ep[0].forward_int_rows(h.view(b * n, -1), channels=h.shape[2])
        else:
            p = self.ep[0].forward_int_rows(torch.cat([h, c], 2).view(b * n, -1))
        p = self.ep[1].forward_int_rows(p).view(b, n, -1)
        m = self.arch.latent
        one = 2**ACT_BITS
        mean16 = torch.floor((p[..., :m] + one // 32) / (one // 16)).long().transpose(1, 2)
        index = torch.floor((p[..., m:] + one // (2 * INDEX_GAIN)) / (one // INDEX_GAIN))
        return mean16, index.clamp_(0, gaussian.N_SCALES - 1).long().transpose(1, 2)

    def _hyper_rows(self, z_sym: torch.Tensor) -> torch.Tensor:
        """The hyper-synthesis of ``z_sym`` (``(B, C, H, W)``) as float32 integer rows ``(B, H * W, channels)``."""
        h = z_sym.permute(0, 2, 3, 1).float().clamp_(-Z_MAX, Z_MAX).mul_(2**ACT_BITS)
        for layer in self.h_s:
            h = layer.forward_int_nhwc(h)
        return h.view(h.shape[0], -1, h.shape[3])

    def _checkerboard(self, hy: int, wy: int) -> Checkerboard:
        """The :class:`Checkerboard` of a ``hy x wy`` latent grid (kept for the last few sizes)."""
        def make() -> Checkerboard:
            anchor = self.anchors(hy, wy)
            flat = anchor.reshape(-1)
            at_a, at_n = flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)
            context = patch_index((hy, wy), self.ctx.k, ~anchor, self._ctx_taps, source=anchor)
            return Checkerboard(anchor, context, at_a, at_n, torch.cat([at_a, at_n]).argsort())

        return lru_get(self._grids, (hy, wy), make)

    def _context_at(self, y16_a: torch.Tensor, hy: int, wy: int) -> torch.Tensor:
        """Integer context rows ``(B, n, C)`` at the non-anchors from the anchors' latents ``y16_a``
        (1/16 steps, the context's input scale; ``(B, M, n_anchors)``); the non-anchors read as zero."""
        lim = self.ctx.in_limit
        rows = patch_rows(y16_a.transpose(1, 2).float().clamp_(-lim, lim), self._checkerboard(hy, wy).context)
        b, n = rows.shape[:2]
        return self.ctx.forward_int_rows(rows.view(b * n, -1), self._ctx_taps, clamped=True).view(b, n, -1)

    @staticmethod
    def _latent_grid(y16_a: torch.Tensor, y16_n: torch.Tensor, board: Checkerboard) -> torch.Tensor:
        """``(B, M, H, W)`` float32 latents (1/16 steps, channels-last) from the anchors' and the non-anchors'."""
        nhwc = torch.cat([y16_a, y16_n], 2).transpose(1, 2).index_select(1, board.order).float()
        return nhwc.view(y16_a.shape[0], *board.anchor.shape, y16_a.shape[1]).permute(0, 3, 1, 2)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, rate: float | str = 0.5, latent: torch.Tensor | None = None) -> dict[str, Any]:
        """Code ``x`` (``(B, 3, H, W)`` in [0, 1]) at rate ``rate``; one string per image. ``latent``: the
        gain-scaled latent to code instead of ``g_a(x) * gains(t)`` at ``t = quantise_rate(rate) / RATE_STEPS``
        (:func:`~facekit.models.refine.refine_latent` makes one)."""
        if not self.frozen:
            self.freeze()
        t16 = quantise_rate(rate)
        b, hh, ww = x.shape[0], x.shape[-2], x.shape[-1]
        if latent is not None and tuple(latent.shape) != (b, self.arch.latent, -(-hh // 64) * 4, -(-ww // 64) * 4):
            raise CodecError(f"a latent of shape {tuple(latent.shape)} does not code {b} image(s) of {hh}x{ww}")
        t = torch.full((b,), t16 / RATE_STEPS, dtype=x.dtype, device=x.device)
        y_f = self._coding_form("g_a")(self._centred_padded(x)) * self.gains(t) if latent is None else latent
        z_sym = torch.round(self._coding_form("h_a")(y_f).double().cpu()).long()
        y = y_f.double().cpu().flatten(2)
        z_idx = self.z_index_int.cpu()[None, :, None, None].expand_as(z_sym)
        z_sym = torch.from_numpy(gaussian.clip_symbols(z_sym.numpy(), z_idx.numpy()))
        h = self._hyper_rows(z_sym)
        hy, wy = y_f.shape[-2:]
        board = self._checkerboard(hy, wy)
        mean16_a, idx_a = self._params_at(h.index_select(1, board.anchors_at), None)
        sym_a = torch.round(y.index_select(2, board.anchors_at) - mean16_a.double() / 16).long()
        sym_a = torch.from_numpy(gaussian.clip_symbols(sym_a.numpy(), idx_a.numpy()))
        context = self._context_at(sym_a * 16 + mean16_a, hy, wy)
        mean16_n, idx_n = self._params_at(h.index_select(1, board.others_at), context)
        sym_n = torch.round(y.index_select(2, board.others_at) - mean16_n.double() / 16).long()
        sym_n = torch.from_numpy(gaussian.clip_symbols(sym_n.numpy(), idx_n.numpy()))
        import constriction
        strings = []
        for i in range(b):
            enc = constriction.stream.queue.RangeEncoder()
            gaussian.encode_symbols(enc, z_sym[i].numpy(), z_idx[i].numpy())
            gaussian.encode_symbols(enc, sym_a[i].numpy(), idx_a[i].numpy())
            gaussian.encode_symbols(enc, sym_n[i].numpy(), idx_n[i].numpy())
            strings.append(pack_hyperprior_stream(t16, enc.get_compressed(), hh, ww))
        return {"strings": strings, "shape": (int(hh), int(ww))}

    @torch.no_grad()
    def decompress(self, strings: Sequence[bytes], shape: Sequence[int], synthesis: str = "float32") -> dict[str, torch.Tensor]:
        """Images ``(B, 3, H, W)`` in [0, 1] (channels-last in memory) from :meth:`compress`'s strings and shape;
        ``synthesis``: ``g_s``'s arithmetic, ``"float32"`` or ``"bfloat16"`` (:data:`~facekit.models.coding_transforms.SYNTHESIS`)."""
        hh, ww = int(shape[0]), int(shape[1])
        g_s = self._coding_form("g_s", synthesis)  # an unknown arithmetic fails before any decoding
        outs = [g_s(y)[..., :hh, :ww].add(0.5).clamp_(0, 1) for y in self._synthesis_inputs(strings, shape)]
        return {"x_hat": outs[0] if len(outs) == 1 else torch.cat(outs, 0)}

    @torch.no_grad()
    def decompress_pixels(self, strings: Sequence[bytes], shape: Sequence[int], synthesis: str = "float32") -> torch.Tensor:
        """:meth:`decompress`'s images as uint8 pixels ``(B, H, W, 3)``, ``round(x_hat * 255)``: the same
        values, computed with fewer copies (:meth:`~facekit.models.coding_transforms.Inference.pixels`)."""
        hh, ww = int(shape[0]), int(shape[1])
        g_s = self._coding_form("g_s", synthesis)  # an unknown arithmetic fails before any decoding
        outs = [g_s.pixels(y, 0.5, hh, ww) for y in self._synthesis_inputs(strings, shape)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, 0)

    def _synthesis_inputs(self, strings: Sequence[bytes], shape: Sequence[int]) -> Iterator[torch.Tensor]:
        """``g_s``'s input for each string: the entropy decoding."""
        if not self.frozen:
            self.freeze()
        hh, ww = int(shape[0]), int(shape[1])
        if not (0 < hh <= HYPERPRIOR_MAX_SIDE and 0 < ww <= HYPERPRIOR_MAX_SIDE):
            raise BitstreamError(f"image size {hh}x{ww} is out of range")
        ph, pw = -(-hh // 64) * 64, -(-ww // 64) * 64
        hy, wy = ph // 16, pw // 16
        board = self._checkerboard(hy, wy)
        z_idx = self.z_index_int.cpu()[:, None, None].expand(-1, hy // 4, wy // 4).numpy()
        import constriction
        for data in strings:
            t16, words = parse_hyperprior_stream(bytes(data), hh, ww)
            dec = constriction.stream.queue.RangeDecoder(words)
            z_sym = torch.from_numpy(gaussian.decode_symbols(dec, z_idx))[None]
            h = self._hyper_rows(z_sym)
            mean16_a, idx_a = self._params_at(h.index_select(1, board.anchors_at), None)
            y16_a = torch.from_numpy(gaussian.decode_symbols(dec, idx_a[0].numpy()))[None] * 16 + mean16_a
            context = self._context_at(y16_a, hy, wy)
            mean16_n, idx_n = self._params_at(h.index_select(1, board.others_at), context)
            y16_n = torch.from_numpy(gaussian.decode_symbols(dec, idx_n[0].numpy()))[None] * 16 + mean16_n
            y_hat = self._latent_grid(y16_a, y16_n, board).to(self.log_gain.device)
            yield y_hat.mul_(self._synthesis_scale(t16))
