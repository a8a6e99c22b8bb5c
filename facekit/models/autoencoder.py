"""The learned face codec: a compression network, a quantised image-like code, a reconstruction network.

Bian et al., "A Deep Image Compression Framework for Face Recognition" (arXiv:1907.01714)
compress a face with a convolutional *compression network* into a compact image-like
representation, quantise it to 8 bits and store it losslessly as a PNG (the rate is the
size of that PNG), and rebuild the face with a *reconstruction network*; both networks
are first trained for distortion and then jointly with a face recogniser. The design
follows the ComCNN/RecCNN pair of Jiang et al., "An End-to-End Compression Framework
Based on Convolutional Neural Networks" (IEEE TCSVT 2017): a shallow encoder and a deep
residual decoder.

Architecture of :class:`FaceCodecNet` for a rate point with downsampling ``f = 2**k``,
``C`` latent channels and ``b`` bits (all convolutions 3x3, padding 1, no normalisation
layers, so the output of an image never depends on the rest of its batch)::

    encoder (shallow, ComCNN-like)
      x in [0,1] -> replicate-pad H, W up to multiples of f
      k x [conv stride 2 -> ReLU]               widths enc_widths[0..k-1]
      ResBlock(enc_widths[-1])                  conv-ReLU-conv + skip
      conv -> C channels -> sigmoid             y in (0,1), (C, H/f, W/f)
    quantiser
      q = round(y * (2**b - 1))                 integers stored in a PNG (rate)
      y_hat = q / (2**b - 1)                    training: straight-through or noise
    decoder (deep residual, RecCNN-like, pixel-shuffle upsampling)
      conv C -> dec_widths[0]
      dec_blocks x ResBlock + long skip         at the code's resolution
      for i in 1..k-1: conv -> 4*dec_widths[i] -> PixelShuffle(2) -> ReLU -> ResBlock
      conv -> 3*4 -> PixelShuffle(2) + 0.5      sub-pixel output layer (ESPCN)
      crop to H x W                             clamp to [0,1] at inference

The rate is set by the code's size: ``C * (H/f) * (W/f) * b`` bits before PNG's
lossless compression. :data:`RATE_POINTS` holds the named configurations ``q1`` (about
0.06 bpp on a 250x250 LFW face) to ``q6`` (about 1 bpp). Measured with the shipped
weights on 100 LFW pair images (whole containers; ``benchmarks/learned_rate_table.py``)::

    point  f   C  bits  params  bpp (PNG)  bpp (-entropy)  PSNR dB  JPEG 2000 dB at PNG bpp
    q1     16  4  3     843k    0.058      0.041           22.8     23.1
    q2     8   2  4     739k    0.112      0.097           26.0     27.2
    q3     4   2  2     594k    0.195      0.156           26.8     30.8
    q4     4   2  4     594k    0.331      0.318           29.3     34.4
    q5     4   3  6     595k    0.646      0.647           32.1     39.1
    q6     4   5  6     596k    0.988      0.989           32.3     42.2

q3 has q4's layout with 2-bit codes (started from q4's weights, 2,500 more steps): a
1/8-resolution layout at the same rate kept identity worse (CHANGELOG.md).

The shipped weights come from short CPU runs (1,600 steps of 8 crops of 96x96 each, about
10 CPU-minutes per point) and are far from converged, most visibly at the higher rates;
``facekit train`` on a GPU (bf16, larger batches, more steps) is the way to real results.

The contract is CompressAI's: ``forward(x)`` returns a dict with ``x_hat`` and what the
losses need (``y``: the continuous code, ``y_hat``: its quantised value, ``likelihoods``:
empty here, as PNG has no learned entropy model); ``compress(x)`` returns one PNG per
image plus the image shape; ``decompress(strings, shape)`` rebuilds the images. Decoding
uses only integer codes, convolutions and pixel shuffles (deterministic kernels), so the
same bytes give the same image on CPU and CUDA within 1/255.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BitstreamError, ImageError, WeightsError
from ..fileio import atomic_write
from .digest import update_with_state_dict
from .quantizer import Quantizer


@dataclass(frozen=True)
class RatePoint:
    """One named configuration of the codec: the code's geometry and the network sizes.

    ``downsample`` (a power of two), ``channels`` and ``bits`` set the rate;
    ``enc_widths`` (one per stride-2 stage) and ``dec_widths`` (one per decoder scale,
    the code's resolution first) and ``dec_blocks`` set the capacity.
    """

    name: str
    downsample: int
    channels: int
    bits: int
    enc_widths: tuple[int, ...]
    dec_widths: tuple[int, ...]
    dec_blocks: int = 3
    quant_mode: str = "ste"
    description: str = field(default="", compare=False)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        k = self.stages
        if self.downsample != 1 << k or k < 1:
            raise ValueError(f"{self.name}: downsample must be a power of two >= 2, got {self.downsample}")
        if len(self.enc_widths) != k or len(self.dec_widths) != k:
            raise ValueError(f"{self.name}: need {k} encoder and {k} decoder widths for downsample {self.downsample}")
        if not 1 <= self.channels <= 64 or not 1 <= self.bits <= 8:
            raise ValueError(f"{self.name}: channels must be 1..64 and bits 1..8")

    @property
    def stages(self) -> int:
        """Number of stride-2 stages, ``log2(downsample)``."""
        return max(0, int(round(math.log2(self.downsample)))) if self.downsample > 0 else -1

    def code_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(C, h, w)`` of the code of an ``height x width`` image (after padding to multiples of f)."""
        f = self.downsample
        return self.channels, -(-height // f), -(-width // f)

    def raw_bits(self, height: int, width: int) -> int:
        """Bits of the code before lossless compression: ``C * h * w * bits``."""
        c, h, w = self.code_shape(height, width)
        return c * h * w * self.bits

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["enc_widths"] = list(self.enc_widths)
        d["dec_widths"] = list(self.dec_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatePoint:
        d = dict(d)
        d["enc_widths"] = tuple(d["enc_widths"])
        d["dec_widths"] = tuple(d["dec_widths"])
        return cls(**d)

    def replace(self, **changes: Any) -> RatePoint:
        return dataclasses.replace(self, **changes)


#: The shipped rate points, ordered from the lowest rate to the highest.
RATE_POINTS: dict[str, RatePoint] = {
    rp.name: rp
    for rp in (
        RatePoint(
            "q1", 16, 4, 3, (32, 48, 64, 64), (80, 56, 40, 32), dec_blocks=2,
            description="1/16 resolution, 4 channels, 3 bits (about 0.06 bpp at 250x250)",
        ),
        RatePoint(
            "q2", 8, 2, 4, (32, 48, 64), (80, 56, 40), dec_blocks=2,
            description="1/8 resolution, 2 channels, 4 bits (about 0.11 bpp)",
        ),
        RatePoint(
            "q3", 4, 2, 2, (32, 64), (72, 48), dec_blocks=3,
            description="1/4 resolution, 2 channels, 2 bits (about 0.2 bpp)",
        ),
        RatePoint(
            "q4", 4, 2, 4, (32, 64), (72, 48), dec_blocks=3,
            description="1/4 resolution, 2 channels, 4 bits (about 0.35 bpp)",
        ),
        RatePoint(
            "q5", 4, 3, 6, (32, 64), (72, 48), dec_blocks=3,
            description="1/4 resolution, 3 channels, 6 bits (about 0.65 bpp)",
        ),
        RatePoint(
            "q6", 4, 5, 6, (32, 64), (72, 48), dec_blocks=3,
            description="1/4 resolution, 5 channels, 6 bits (about 1 bpp)",
        ),
    )
}


def get_rate_point(name: str | RatePoint) -> RatePoint:
    """A rate point by name (or passed through); a clear error for unknown names."""
    if isinstance(name, RatePoint):
        return name
    try:
        return RATE_POINTS[name]
    except KeyError:
        raise KeyError(f"unknown rate point {name!r}; known: {', '.join(RATE_POINTS)}") from None


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR style, no normalisation)."""

    def __init__(self, width: int, scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.conv2(F.relu(self.conv1(x)))


class Encoder(nn.Module):
    """Shallow strided encoder (ComCNN-like): image in [0,1] -> code ``y`` in (0,1)."""

    def __init__(self, rp: RatePoint) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in rp.enc_widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = w
        layers += [ResBlock(cin), nn.Conv2d(cin, rp.channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last activations: about 1.4x faster convolutions on CPU (oneDNN), same values
        return torch.sigmoid(self.body((x * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)))


class Decoder(nn.Module):
    """Deep residual decoder (RecCNN-like) with pixel-shuffle upsampling: ``y_hat`` -> image."""

    def __init__(self, rp: RatePoint) -> None:
        super().__init__()
        w0 = rp.dec_widths[0]
        self.head = nn.Conv2d(rp.channels, w0, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(w0, 0.5) for _ in range(rp.dec_blocks)])
        self.tail = nn.Conv2d(w0, w0, 3, padding=1)
        ups: list[nn.Module] = []
        cin = w0
        for w in rp.dec_widths[1:]:
            ups += [
                nn.Conv2d(cin, 4 * w, 3, padding=1),
                nn.PixelShuffle(2),
                nn.ReLU(inplace=True),
                ResBlock(w, 0.5),
            ]
            cin = w
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(cin, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.out.weight.mul_(0.1)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        h = self.head((y_hat * 2.0 - 1.0).contiguous(memory_format=torch.channels_last))
        h = h + self.tail(self.blocks(h))
        h = self.ups(h)
        return self.shuffle(self.out(h)) + 0.5


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Full-precision, deterministic convolutions (no TF32, no cuDNN autotuning) for a block."""
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = True, False, False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32 = saved[:3]
        torch.backends.cuda.matmul.allow_tf32 = saved[3]


class FaceCodecNet(nn.Module):
    """Compression network + quantiser + reconstruction network for one :class:`RatePoint`.

    Inputs are RGB batches ``(B, 3, H, W)`` in ``[0, 1]`` of any size of at least 8x8;
    they are padded (replicate) to multiples of the downsampling inside the model and the
    output is cropped back to ``H x W``.
    """

    def __init__(self, rate_point: str | RatePoint = "q3") -> None:
        super().__init__()
        self.rate_point = get_rate_point(rate_point)
        rp = self.rate_point
        self.encoder = Encoder(rp)
        self.quantizer = Quantizer(rp.bits, rp.quant_mode)
        self.decoder = Decoder(rp)
        self.rate_model: nn.Module | None = None

    def attach_rate(self, prior: Any | None) -> FaceCodecNet:
        """Give ``forward`` a rate term: the ``likelihoods`` of the code under a fitted
        :class:`~facekit.entropy_models.context.ContextPrior` (:class:`~facekit.entropy_models.rate.ContextRate`),
        or none again with ``None``. The prior's tables are not part of the ``state_dict``."""
        # imported on use: facekit.entropy_models itself imports facekit.models.quantizer
        from ..entropy_models.rate import ContextRate

        if prior is not None and (prior.channels, prior.bits) != (self.rate_point.channels, self.rate_point.bits):
            raise ValueError(
                f"a {prior.channels}-channel {prior.bits}-bit prior does not fit rate point {self.rate_point.name} "
                f"({self.rate_point.channels} channels, {self.rate_point.bits} bits)"
            )
        self.rate_model = ContextRate(prior).to(next(self.parameters()).device) if prior is not None else None
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def downsample(self) -> int:
        return self.rate_point.downsample

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ImageError(f"expected a batch (B, 3, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < 8 or w < 8:
            raise ImageError(f"image {w}x{h} is smaller than 8x8")
        f = self.downsample
        ph, pw = (-h) % f, (-w) % f
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The continuous code ``y`` in (0, 1) of a batch, ``(B, C, ceil(H/f), ceil(W/f))``."""
        return self.encoder(self._pad(x))

    def decode_latent(self, y_hat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Reconstruct ``(B, 3, H, W)`` (unclamped) from a dequantised code and the image shape."""
        h, w = int(shape[0]), int(shape[1])
        return self.decoder(y_hat)[..., :h, :w]

    # ------------------------------------------------------------------ contract
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """``{"x_hat", "y", "y_hat", "likelihoods"}``; ``x_hat`` is clamped to [0, 1] in eval mode.

        ``likelihoods`` is empty unless :meth:`attach_rate` gave the model a rate term.
        """
        y = self.encode_latent(x)
        y_hat = self.quantizer(y)
        x_hat = self.decode_latent(y_hat, x.shape[-2:])
        if not self.training:
            x_hat = x_hat.clamp(0.0, 1.0)
        likelihoods = {"y": self.rate_model(y)} if self.rate_model is not None else {}
        return {"x_hat": x_hat, "y": y, "y_hat": y_hat, "likelihoods": likelihoods}

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes ``(B, C, h, w)`` (uint8, on CPU) that a bitstream stores."""
        with deterministic_kernels():
            y = self.encode_latent(x.float())
        return self.quantizer.quantize(y).cpu()

    @torch.no_grad()
    def decode_codes(self, q: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] from integer codes and the image shape."""
        device = next(self.parameters()).device
        c, h, w = self.rate_point.code_shape(int(shape[0]), int(shape[1]))
        if tuple(q.shape[1:]) != (c, h, w):
            raise BitstreamError(f"codes of shape {tuple(q.shape[1:])} do not fit a {shape[0]}x{shape[1]} image ({c}, {h}, {w})")
        with deterministic_kernels():
            y_hat = self.quantizer.dequantize(q.to(device))
            x_hat = self.decode_latent(y_hat, shape)
        return x_hat.clamp(0.0, 1.0)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, *, effort: int = 2) -> dict[str, Any]:
        """``{"strings": [PNG bytes per image], "shape": (H, W)}`` for a batch in [0, 1]."""
        from ..entropy_models.png import pack_png

        q = self.codes(x).numpy()
        strings = [pack_png(qi, self.rate_point.bits, effort=effort) for qi in q]
        return {"strings": strings, "shape": (int(x.shape[-2]), int(x.shape[-1]))}

    def codes_from_strings(self, strings: Sequence[bytes], shape: Sequence[int]) -> torch.Tensor:
        """Integer codes ``(B, C, h, w)`` (uint8) from PNG strings, checked against ``shape``."""
        from ..entropy_models.png import unpack_png

        c, h, w = self.rate_point.code_shape(int(shape[0]), int(shape[1]))
        qs = [unpack_png(s, c, h, w, self.rate_point.bits) for s in strings]
        if not qs:
            raise BitstreamError("no strings to decompress")
        return torch.from_numpy(np.stack(qs))

    @torch.no_grad()
    def decompress(self, strings: Sequence[bytes], shape: Sequence[int]) -> dict[str, torch.Tensor]:
        """``{"x_hat": (B, 3, H, W) in [0, 1]}`` from the strings of :meth:`compress`."""
        return {"x_hat": self.decode_codes(self.codes_from_strings(strings, shape), shape)}

    def fingerprint(self) -> str:
        """sha256 (hex) of the rate point and every parameter/buffer: names the exact weights."""
        h = hashlib.sha256()
        rp = self.rate_point
        h.update(repr((rp.name, rp.downsample, rp.channels, rp.bits, rp.enc_widths, rp.dec_widths, rp.dec_blocks)).encode())
        update_with_state_dict(h, self)
        return h.hexdigest()


def build_model(rate_point: str | RatePoint, **overrides: Any) -> FaceCodecNet:
    """A fresh :class:`FaceCodecNet` for a named rate point, optionally with fields changed."""
    rp = get_rate_point(rate_point)
    if overrides:
        rp = rp.replace(**overrides)
    return FaceCodecNet(rp)


WEIGHTS_FORMAT = "facekit-weights/1"


def save_weights(model: FaceCodecNet, path: str | Path, *, half: bool = True) -> dict[str, Any]:
    """Write a model's weights as facekit ships them: ``{"format", "rate_point", "state_dict"}``.

    With ``half`` the floating-point tensors are stored as float16 (half the size; the
    model is rebuilt in float32 from them). The file is written to a temporary name and
    renamed. Returns ``{"sha256": of the file, "fingerprint": of the model built from the
    file, "bytes"}``.
    """
    sd = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": WEIGHTS_FORMAT, "rate_point": model.rate_point.to_dict(), "state_dict": sd}, buf)
    atomic_write(path, buf.getvalue())
    rebuilt = load_weights(path)
    return {
        "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        "fingerprint": rebuilt.fingerprint(),
        "bytes": len(buf.getvalue()),
    }


def load_weights(path: str | Path, *, sha256: str | None = None, map_location: str | torch.device = "cpu") -> FaceCodecNet:
    """Build a model from a weights file; with ``sha256`` the file must match it first.

    The file is read once, its digest checked *before* ``torch.load(weights_only=True)``
    sees it; a missing, tampered or ill-fitting file raises :class:`WeightsError`.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"weights file {path} cannot be read: {e}") from e
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise WeightsError(
                f"weights file {path} has sha256 {digest}, the manifest expects {sha256}: "
                "it was modified or damaged; refusing to load it"
            )
    try:
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"weights file {path} cannot be loaded: {e}") from e
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"weights file {path} is not in the {WEIGHTS_FORMAT} format")
    try:
        model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        model.load_state_dict(sd)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise WeightsError(f"weights file {path} does not fit the model: {e}") from e
    model.eval()
    return model.to(map_location)
