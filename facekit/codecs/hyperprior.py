"""The second-generation codec, ``facekit-hyperprior``, behind the :class:`~facekit.codecs.base.Codec` interface.

:class:`HyperpriorCodec` runs a :class:`~facekit.models.hyperprior.FaceHyperprior` (a
hyperprior, a checkerboard context and gain units; one model for every rate) on RGB
``uint8`` images. Its setting is the continuous rate parameter ``t`` in ``[0, 1]`` (0:
fewest bits) or one of the preset names ``q1``..``q5`` (:data:`PRESETS`). A file is
(:func:`facekit.container.pack_hyperprior`)::

    b"FKH1" | height, width (uint16 each) | 4 bytes of the model's fingerprint | model string

where the model string carries its own CRC32 and the rate (``FaceHyperprior.compress``).
A file made by another model, or damaged, is a :class:`~facekit.errors.BitstreamError`.

Its weights come from the weights store (:func:`facekit.zoo.load_hyperprior`, the entry
``hyperprior``, made by ``make weights``); :meth:`HyperpriorCodec.from_store` is what
``get_codec("facekit-hyperprior")`` calls. Example::

    from facekit.codecs import get_codec

    codec = get_codec("facekit-hyperprior")          # WeightsError naming `make weights` if none
    data = codec.encode(image, 0.3)                  # or "q2"
    image2 = codec.decode(data)

``facekit-hyperprior-refined`` is the same codec with ``refine_steps=10``: its encoder refines each
latent on the training objective before coding (:mod:`facekit.models.refine`), about 35 times
slower, for fewer bits at the same quality; its files are ordinary FKH1 files.
``synthesis="bfloat16"`` (``facekit decompress --synthesis bfloat16``) decodes the same files with
``g_s``'s convolutions in bfloat16: the same PSNR, pixels a few levels apart from float32's, and
a decode about 15 % faster where the CPU has bfloat16 dot products.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

from .. import container
from ..errors import BitstreamError, CodecError
from ..models.coding_transforms import synthesis_dtype
from ..models.hyperprior import PRESETS, FaceHyperprior, rate_parameter
from ..models.refine import rate_lambda, refine_latent
from ..zoo import load_hyperprior, read_manifest
from .base import Codec, check_image
from .names import HYPERPRIOR, HYPERPRIOR_REFINED, HYPERPRIOR_WEIGHTS, MAKE_HYPERPRIOR

MAGIC = container.HYPERPRIOR_MAGIC
#: the largest image (in pixels) encoded or decoded: a file declaring more is refused before decoding
MAX_PIXELS = container.HYPERPRIOR_MAX_SIDE**2


def model_fingerprint(model: FaceHyperprior) -> str:
    """sha256 of the architecture (:meth:`~facekit.models.hyperprior.HyperpriorArch.decoding_dict`)
    and the float weights: what decoding depends on.

    Example: ``model_fingerprint(FaceHyperprior())[:8]`` is the tag a file records.
    """
    h = hashlib.sha256(repr(sorted(model.arch.decoding_dict().items())).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def training_phases(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The training phases a manifest entry records (``"phases"``), first first; empty when none."""
    return [p for p in entry.get("phases") or [] if isinstance(p, dict)]


def training_lambdas(entry: dict[str, Any]) -> tuple[float, float] | None:
    """``(lambda_min, lambda_max)`` of the first training phase a manifest entry records; None when it records none."""
    phases = training_phases(entry)
    config = phases[0].get("config") if phases else None
    if not isinstance(config, dict) or "lambda_min" not in config or "lambda_max" not in config:
        return None
    return float(config["lambda_min"]), float(config["lambda_max"])


def rate_value(setting: Any) -> float:
    """The rate parameter ``t`` of a setting: a number in ``[0, 1]`` or a preset name; CodecError otherwise.

    A plain number, a number written as text (``"0.25"``, as the CLI's ``--rate`` takes it) or a preset
    name (not a bool or a list), then :func:`~facekit.models.hyperprior.rate_parameter`'s checks.

    Example: ``rate_value("q2")`` -> 0.25, ``rate_value("0.3")`` -> 0.3; ``rate_value(2)`` and ``rate_value("q9")`` raise.
    """
    if not isinstance(setting, str) and (
        isinstance(setting, bool) or not isinstance(setting, int | float | np.integer | np.floating)
    ):
        raise CodecError(f"{HYPERPRIOR}: the rate is a number in [0, 1] or one of {', '.join(PRESETS)}, got {setting!r}")
    if isinstance(setting, str) and setting not in PRESETS:
        try:
            setting = float(setting)
        except ValueError:
            pass  # rate_parameter names the presets
    try:
        return rate_parameter(setting)
    except CodecError as e:
        raise CodecError(f"{HYPERPRIOR}: {e}") from None


class HyperpriorCodec(Codec):
    """``encode(image, t) -> bytes`` and back, through a :class:`FaceHyperprior`.

    Args:
        model: the network (put in eval mode and frozen here).
        device: where the networks run (default CPU; the entropy coding runs on the CPU).
        max_pixels: the largest image encoded, or declared by a file, that is decoded.
        entry: the model's manifest entry, when it came from the weights store.
        folder: that store's folder (None: the shipped ``facekit/weights``), where files made by the
            entry's earlier, retired weights find them.
        refine_steps: 0 (default) codes ``g_a``'s latent; more refines it with that many steps before
            coding (:func:`~facekit.models.refine.refine_latent`: better rate-distortion, about 40 ms a
            step on one CPU thread, the same decoder).
        lambda_range: the training's ``(lambda_min, lambda_max)``, which refinement optimises for; taken
            from ``entry``'s recipe when not given.
        synthesis: the decoder's synthesis arithmetic, ``"float32"`` (default) or ``"bfloat16"``
            (:data:`~facekit.models.coding_transforms.SYNTHESIS`: the same files and PSNR, pixels a few
            levels apart, a decode about 15 % faster on a CPU with bfloat16 dot products).

    Example: ``HyperpriorCodec(model).decode(HyperpriorCodec(model).encode(image, "q3"))``.
    """

    name = HYPERPRIOR
    #: the default sweep: the presets' values of ``t``, lowest rate first
    settings = tuple(PRESETS.values())
    setting_range = (0.0, 1.0)
    integer_setting = False
    #: named points of the rate parameter (``q1``..``q5``)
    presets = dict(PRESETS)

    def __init__(
        self,
        model: FaceHyperprior,
        *,
        device: str | torch.device | None = None,
        max_pixels: int = MAX_PIXELS,
        entry: dict[str, Any] | None = None,
        folder: str | os.PathLike[str] | None = None,
        refine_steps: int = 0,
        lambda_range: tuple[float, float] | None = None,
        synthesis: str = "float32",
    ) -> None:
        synthesis_dtype(synthesis)  # one CodecError for an unknown name
        self.synthesis = synthesis
        if isinstance(refine_steps, bool) or not isinstance(refine_steps, int) or refine_steps < 0:
            raise CodecError(f"{HYPERPRIOR}: refine_steps is a whole number >= 0, got {refine_steps!r}")
        self.lambda_range = lambda_range or training_lambdas(entry or {})
        if refine_steps and self.lambda_range is None:
            raise CodecError(f"{HYPERPRIOR}: refining the latent needs the training's lambda range "
                             "(lambda_range=, or weights whose manifest entry records their recipe)")
        self.refine_steps = refine_steps
        if refine_steps:
            self.name = HYPERPRIOR_REFINED
        fingerprint = model_fingerprint(model)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model = model.to(self.device).eval().freeze()
        self.tag = bytes.fromhex(fingerprint[: 2 * container.HASH_BYTES])
        self.max_pixels = int(max_pixels)
        self.entry = dict(entry or {})
        self.folder = folder
        #: models of the files made by earlier weights of the same store entry (found by fingerprint)
        self.earlier: dict[bytes, FaceHyperprior] = {}

    @classmethod
    def from_store(
        cls,
        *,
        folder: str | os.PathLike[str] | None = None,
        name: str = HYPERPRIOR_WEIGHTS,
        device: str | torch.device | None = None,
        max_pixels: int = MAX_PIXELS,
        refine_steps: int = 0,
        synthesis: str = "float32",
    ) -> HyperpriorCodec:
        """The codec on the weights ``name`` of a weights folder (default: the shipped ``facekit/weights``).

        Args:
            folder: a weights folder laid out like ``facekit/weights`` (a manifest and ``.pt`` files).
            name: the model's entry in its manifest.
            device: where the networks run.
            max_pixels, refine_steps, synthesis: see the class.

        Without that entry: one :class:`~facekit.errors.WeightsError` naming the command that
        makes the weights. Example: ``HyperpriorCodec.from_store(folder="/tmp/weights")``.
        """
        model, entry = load_hyperprior(name, folder=folder,
                                       hint=f"{HYPERPRIOR}'s weights are not installed; make them with {MAKE_HYPERPRIOR}")
        return cls(model, device=device, max_pixels=max_pixels, entry=entry, folder=folder, refine_steps=refine_steps,
                   synthesis=synthesis)

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        """Compress an RGB uint8 image at rate ``setting`` (``t`` in ``[0, 1]`` or ``q1``..``q5``)."""
        image = check_image(image)
        t = rate_value(setting)
        h, w = image.shape[:2]
        side = container.HYPERPRIOR_MAX_SIDE
        if h > side or w > side or h * w > self.max_pixels:
            raise CodecError(f"image {w}x{h} exceeds {self.name}'s limit ({self.max_pixels} pixels, {side} a side)")
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255).to(self.device)
        rate = setting if isinstance(setting, str) and setting in PRESETS else t
        latent = None
        if self.refine_steps and self.lambda_range is not None:
            latent = refine_latent(self.model, x, rate, rate_lambda(t, *self.lambda_range), self.refine_steps)
        string = self.model.compress(x, rate, latent)["strings"][0]
        return container.pack_hyperprior(self.tag, h, w, string)

    def decode(self, data: bytes) -> np.ndarray:
        """Decompress an FKH1 file made by this model; BitstreamError when damaged or made by another."""
        f = container.parse_hyperprior(data)  # refuses a side over the format's limit
        if f.height * f.width > self.max_pixels:
            raise BitstreamError(f"declared image size {f.width}x{f.height} exceeds this decoder's limit of "
                                 f"{self.max_pixels} pixels (too large: a decompression bomb?)")
        pixels = self.model_of(f.model_hash).decompress_pixels([f.stream], (f.height, f.width), self.synthesis)[0]
        return np.ascontiguousarray(pixels.cpu().numpy())  # a copy only where an odd side was cropped

    def model_of(self, tag: bytes) -> FaceHyperprior:
        """The model whose fingerprint a file records: this codec's, or earlier weights of its store entry
        (retired by :func:`~facekit.zoo.install_hyperprior`); BitstreamError when neither."""
        if tag == self.tag:
            return self.model
        if tag not in self.earlier and "variant" in self.entry:
            for name, e in read_manifest(self.folder)["models"].items():
                if e.get("variant") == self.entry["variant"] and str(e.get("fingerprint", "")).startswith(tag.hex()):
                    self.earlier[tag] = load_hyperprior(name, folder=self.folder)[0].to(self.device).eval().freeze()
                    break
        if tag not in self.earlier:
            raise BitstreamError(f"file made by another model: fingerprint {tag.hex()}, the installed "
                                 f"{self.name} weights are {self.tag.hex()}; decode it with the weights that encoded it")
        return self.earlier[tag]

    def normalise_setting(self, setting: Any) -> float:
        """The rate ``t`` a results point stores (:func:`rate_value`: ``"q2"``, ``0.25`` and ``"0.25"`` are one
        point, they code the same bytes); CodecError for ``1.5``, ``-1``, ``"q9"`` or NaN."""
        return rate_value(setting)

    def weights_record(self) -> dict[str, Any] | None:
        """``{"sha256", "fingerprint", "file", "phase"}`` of the weights store's entry behind this codec: ``phase``
        is its last training phase (``rate-distortion`` for phase one or ``joint-rate-distortion``; None when
        not recorded). None for a model that did not come from the store (no sha256)."""
        sha = self.entry.get("sha256")
        if not isinstance(sha, str):
            return None
        phases = training_phases(self.entry)
        phase = phases[-1].get("phase") if phases else self.entry.get("phase")
        fingerprint = self.entry.get("fingerprint") or self.tag.hex()  # the entry's is whole, the tag the file's
        return {"sha256": sha, "fingerprint": fingerprint, "file": self.entry.get("file"), "phase": phase}

    def describe(self) -> dict[str, Any]:
        """Name, settings, torch version, the model's fingerprint and widths, and its weights file."""
        weights = {k: self.entry.get(k) for k in ("file", "sha256", "bytes") if k in self.entry}
        return {"name": self.name, "settings": list(self.settings), "setting_range": list(self.setting_range),
                "presets": dict(self.presets), "torch": torch.__version__, "fingerprint": self.tag.hex(),
                "arch": self.model.arch.to_dict(), "weights": weights, "refine_steps": self.refine_steps,
                "synthesis": self.synthesis}
