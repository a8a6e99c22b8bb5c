"""The learned face codec of Bian et al. (arXiv:1907.01714) behind the :class:`Codec` interface.

``LearnedCodec(variant)`` codes images with the trained weights of one variant
(:data:`facekit.codecs.names.VARIANTS`: ``mse`` distortion only, the paper's phase one;
``joint`` trained jointly with a face recogniser; ``jointrate`` and ``jointface`` with the
rate term of the context prior as well). Its settings are the rate points (``q1`` lowest
rate ... ``q5`` highest) whose weights ship in :mod:`facekit.weights`. ``encode`` returns a
whole container (:mod:`facekit.container`: magic, version, a one-byte model id, weights
hash, image size, the payload, CRC32: 16 bytes besides the payload), so bpp counts every byte.

The payload is the paper's PNG of the quantised code, or with ``entropy=True`` the same
integers range-coded with a context prior fitted to the weights (count tables,
:class:`facekit.entropy_models.context.ContextPrior`, or integer networks,
:class:`facekit.entropy_models.neural.NeuralPrior`; stored beside the weights), or the PNG
when that is shorter (a tag byte says which: :mod:`facekit.codecs.payload`).

``roi=True`` codes only the face region (:mod:`facekit.codecs.roi`); with ``entropy=True``
only the region's codes are range-coded, and ``background="q1"`` adds the lowest rate
point's codes outside the region as a second stream, so the decoded background is a
low-rate image instead of a flat colour (the idea of JPEG 2000 Part 1's Maxshift: the face
first, the rest at a lower rate).

Weights come from the weights store (:mod:`facekit.zoo`): listed in
``facekit/weights/manifest.json`` with their sha256, each file is checked against it before
``torch.load(..., weights_only=True)`` reads it, and a file that does not match is refused
(:class:`~facekit.errors.WeightsError`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import container
from ..entropy_models import RangeCodedPrior, pack_png
from ..errors import BitstreamError, CodecError, WeightsError
from ..models.autoencoder import RATE_POINTS, FaceCodecNet
from ..zoo import MANIFEST, load_model, load_prior, read_manifest, weights_dir
from . import payload
from .base import Codec, check_image
from .names import VARIANTS, LearnedSpec, ModelId, model_name, rate_number

#: the largest image (in pixels) the learned codec encodes or decodes; a container declaring
#: more is refused before anything is allocated (decoding 16 MP takes a few GB of memory)
MAX_PIXELS = 4096 * 4096



class LearnedCodec(Codec):
    """The learned codec as a :class:`Codec`: settings are rate-point names, low to high rate.

    ``device`` (default CPU) runs the networks; ``folder`` reads weights from another
    folder laid out like :mod:`facekit.weights` (a manifest and ``.pt`` files);
    ``entropy=True`` codes the same integers with the fitted context model and a range
    coder instead of PNG. Images (and declared sizes) above ``max_pixels`` are refused
    before anything is allocated. Models load lazily, once per rate point.

    ``roi=True`` codes only the face: the encoder finds the recogniser's face chip
    (:mod:`facekit.codecs.roi`) and flattens the code outside it, ``roi_margin`` pixels around
    the chip; an image without a face is coded whole. With the PNG payload nothing extra is
    stored, so the bytes are ordinary bitstreams of the same model. With ``entropy=True`` as
    well the payload is range-coded inside the region only, after the region's geometry
    (:mod:`facekit.codecs.payload`, type 2); the decoder of the same model without ``roi``
    decodes it, to the same image as the PNG ROI stream. ``background`` (a rate point of the
    same variant, with ``roi`` and ``entropy``) adds that rate point's codes outside the region
    as a second stream (type 3), so the decoded background is a low-rate image instead of a
    flat colour. The codec's :attr:`name` is its catalogue name (:mod:`facekit.codecs.names`).
    """

    integer_setting = False
    setting_range = None

    def __init__(
        self,
        variant: str = "mse",
        device: str | torch.device | None = None,
        *,
        folder: str | os.PathLike[str] | None = None,
        entropy: bool = False,
        roi: bool = False,
        roi_margin: float = 4.0,
        background: str | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if variant not in VARIANTS:
            raise CodecError(f"unknown learned-codec variant {variant!r}; use one of {', '.join(VARIANTS)}")
        if background is not None and not (roi and entropy):
            raise CodecError("a coded background (background=...) needs roi=True and entropy=True")
        self.spec = LearnedSpec(variant, bool(entropy), bool(roi), background)
        self.variant = variant
        self.entropy = bool(entropy)
        self.max_pixels = int(max_pixels)
        self.background = background
        self.name = self.spec.name
        self.roi = None
        if roi:
            from .roi import FaceRegionFinder

            self.roi = FaceRegionFinder(roi_margin)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.folder = Path(folder) if folder is not None else weights_dir()
        manifest = read_manifest(self.folder)
        available = {
            m.get("rate_point")
            for k, m in manifest["models"].items()
            if k.startswith(variant + "-") and (not self.entropy or m.get("prior"))
        }
        order = list(RATE_POINTS) + sorted(r for r in available if r not in RATE_POINTS and r)
        #: every rate point with weights (and a prior, when range-coded); ``settings`` are those the
        #: face may be coded at: all of them, or with a background those above the background's
        self.rate_points = tuple(r for r in order if r in available)
        self.settings = self.rate_points
        if not self.settings:
            what = "weights with a context prior" if self.entropy else "weights"
            raise WeightsError(
                f"no {what} for the {variant!r} variant in {self.folder / MANIFEST}"
                + (f" (the {variant} variant is made by phase-two training, facekit joint --install)"
                   if variant != "mse" else "")
            )
        if background is not None:
            self.check_background(background)
            self.settings = self.rate_points[self.rate_points.index(background) + 1 :]
        self._models: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_spec(cls, spec: LearnedSpec, **kwargs: Any) -> LearnedCodec:
        """The codec a :class:`~facekit.codecs.names.LearnedSpec` names (``LearnedSpec.parse("facekit")``)."""
        return cls(spec.variant, entropy=spec.entropy, roi=spec.roi, background=spec.background, **kwargs)

    def check_background(self, background: str) -> None:
        """Refuse a background rate point this codec has no weights (and prior) for."""
        if background not in self.rate_points:
            raise CodecError(f"{self.name}: no rate point {background!r} for the background; "
                             f"rate points: {', '.join(self.rate_points)}")

    def model_id(self, setting: str) -> ModelId:
        """The id of the model that codes ``setting`` (what the container records)."""
        return ModelId(self.variant, setting, self.entropy)

    # ---------------------------------------------------------------- models
    def model(self, setting: str) -> FaceCodecNet:
        """The eval-mode network of a rate point (loaded on first use)."""
        return self._load(setting)["model"]

    def prior(self, setting: str) -> RangeCodedPrior | None:
        """The context prior of a rate point (None for the PNG payload)."""
        return self._load(setting)["prior"]

    def fingerprint(self, setting: str) -> str:
        """What a container of ``setting`` records: the weights' fingerprint, with the prior's when range-coded."""
        return str(self._load(setting)["fingerprint"])

    def _load(self, setting: str) -> dict[str, Any]:
        if setting not in self.rate_points:
            raise CodecError(f"{self.name} has no rate point {setting!r}; settings: {', '.join(self.settings)}")
        if setting not in self._models:
            model, entry = load_model(self.variant, setting, folder=self.folder, device=self.device)
            fp = model.fingerprint()
            loaded: dict[str, Any] = {"model": model, "entry": entry, "fingerprint": fp, "prior": None}
            if self.entropy:
                prior = load_prior(entry, self.folder, fp)
                if prior.channels != model.rate_point.channels or prior.bits != model.rate_point.bits:
                    raise WeightsError(f"the context prior of {setting} does not fit its model")
                loaded["prior"] = prior
                loaded["fingerprint"] = hashlib.sha256((fp + prior.digest()).encode()).hexdigest()
            self._models[setting] = loaded
        return self._models[setting]

    # ---------------------------------------------------------------- codec
    def encode(self, image: np.ndarray, setting: str) -> bytes:
        """Compress one RGB uint8 image at a rate point; returns container bytes."""
        return self.encode_batch([image], setting)[0]

    def encode_batch(self, images: Sequence[np.ndarray], setting: str) -> list[bytes]:
        """Compress several images (any sizes; equal sizes run as one batch)."""
        if setting in self.rate_points and setting not in self.settings:
            raise CodecError(f"{self.name} codes the background at {self.background}, so the face's rate point must be "
                             f"above it: {', '.join(self.settings)}")
        loaded = self._load(setting)
        model: FaceCodecNet = loaded["model"]
        imgs = [check_image(im) for im in images]
        out: list[bytes | None] = [None] * len(imgs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            if im.shape[0] > container.MAX_SIDE or im.shape[1] > container.MAX_SIDE:
                raise CodecError(f"image {im.shape[1]}x{im.shape[0]} exceeds {container.MAX_SIDE} pixels a side")
            if im.shape[0] * im.shape[1] > self.max_pixels:
                raise CodecError(f"image {im.shape[1]}x{im.shape[0]} exceeds this codec's limit of {self.max_pixels} pixels")
            groups.setdefault(im.shape[:2], []).append(i)
        ident = self.model_id(setting)
        for (h, w), idx in groups.items():
            x = torch.from_numpy(np.stack([imgs[i] for i in idx])).permute(0, 3, 1, 2).float().div(255)
            if self.entropy or self.roi is not None:
                q = model.codes(x.to(self.device)).numpy()
                regions: list[payload.Region | None] = [None] * len(q)
                if self.roi is not None:
                    regions = [self.roi_region(imgs[i], qi.shape, model.downsample) for i, qi in zip(idx, q, strict=True)]
                    q = np.stack([self.apply_roi(qi, r) for qi, r in zip(q, regions, strict=True)])
                if self.entropy:
                    payloads = self._entropy_payloads(loaded, q, regions, x, (h, w))
                else:
                    payloads = [pack_png(qi, model.rate_point.bits) for qi in q]
            else:
                payloads = model.compress(x.to(self.device))["strings"]
            for i, data in zip(idx, payloads, strict=True):
                out[i] = container.pack(ident, loaded["fingerprint"], h, w, data)
        return [b for b in out if b is not None]

    def _entropy_payloads(
        self, loaded: dict[str, Any], q: np.ndarray, regions: Sequence[payload.Region | None], x: torch.Tensor,
        image_shape: tuple[int, int],
    ) -> list[bytes]:
        """The range-coded payloads of one batch: with a background (type 3) where a face was found."""
        bits = loaded["model"].rate_point.bits
        if self.background is None or all(r is None for r in regions):
            return [payload.entropy_payload(loaded["prior"], qi, bits, r) for qi, r in zip(q, regions, strict=True)]
        bg = self._load(self.background)
        qb = bg["model"].codes(x.to(self.device)).numpy()
        back = {"number": rate_number(self.background), "tag": container.model_hash(bg["fingerprint"], 4),
                "prior": bg["prior"], "cell": bg["model"].downsample}
        return [
            payload.entropy_payload(loaded["prior"], qi, bits, r) if r is None
            else payload.background_payload(loaded["prior"], qi, r, back, qbi, image_shape)
            for qi, r, qbi in zip(q, regions, qb, strict=True)
        ]

    def roi_region(self, image: np.ndarray, code_shape: tuple[int, ...], cell: int) -> payload.Region | None:
        """``(mask, geometry)`` of an image's face region on the code grid; ``None`` when it keeps everything.

        The geometry (:func:`facekit.codecs.roi.region_geometry`) is what a range-coded ROI
        stream carries so that its decoder rebuilds the mask; PNG streams do not need it.
        """
        from .roi import region_geometry, region_mask

        if self.roi is None:
            return None
        region = self.roi.find(image)
        keep = region_mask(region, image.shape[:2], cell=cell, margin=self.roi.margin)[: code_shape[1], : code_shape[2]]
        if keep.all():
            return None
        geometry = region_geometry(region, keep, image.shape[:2], cell, self.roi.margin) if self.entropy else b""
        return keep, geometry

    @staticmethod
    def apply_roi(q: np.ndarray, region: payload.Region | None) -> np.ndarray:
        """The codes of one image with everything outside its face region flattened."""
        from .roi import mask_codes

        return q if region is None else mask_codes(q, region[0])

    def decode(self, data: bytes) -> np.ndarray:
        """Decompress container bytes to an RGB uint8 ``(H, W, 3)`` image."""
        return self.decode_batch([data])[0]

    def decode_batch(self, datas: Sequence[bytes]) -> list[np.ndarray]:
        """Decompress several containers (those of one rate point and size run as one batch)."""
        parsed = [self._parse(d) for d in datas]
        out: list[np.ndarray | None] = [None] * len(parsed)
        groups: dict[tuple[str, int, int], list[int]] = {}
        for i, (c, rate) in enumerate(parsed):
            groups.setdefault((rate, c.height, c.width), []).append(i)
        for (rate, h, w), idx in groups.items():
            loaded = self._load(rate)
            model: FaceCodecNet = loaded["model"]
            payloads = [parsed[i][0].payload for i in idx]
            backgrounds: list[payload.Background | None] = [None] * len(payloads)
            if self.entropy:
                split = [payload.split_background(p, model.rate_point.channels, self._background_channels)
                         for p in payloads]
                payloads, backgrounds = [a for a, _ in split], [b for _, b in split]
                c_, ch, cw = model.rate_point.code_shape(h, w)
                q = torch.from_numpy(
                    np.stack([
                        self.entropy_codes(loaded["prior"], p, (c_, ch, cw), model.rate_point.bits, (h, w), model.downsample)
                        for p in payloads
                    ])
                )
            else:
                q = model.codes_from_strings(payloads, (h, w))
            x_hat = model.decode_codes(q, (h, w))
            arr = torch.round(x_hat * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for j, i in enumerate(idx):
                face = np.ascontiguousarray(arr[j])
                back = backgrounds[j]
                out[i] = face if back is None else self._paste_on_background(face, back, (h, w))
        return [a for a in out if a is not None]

    #: the codes of a range-coded payload (:func:`facekit.codecs.payload.entropy_codes`)
    entropy_codes = staticmethod(payload.entropy_codes)

    def _background_channels(self, rate: str, tag: bytes) -> int:
        """The channels of a type-3 payload's background model, after checking its rate point and tag."""
        if rate not in self.rate_points:
            raise BitstreamError(f"face-and-background payload: background rate point {rate!r}, which "
                                 f"{LearnedSpec(self.variant, True).name} does not have")
        bg = self._load(rate)
        if container.model_hash(bg["fingerprint"], 4) != tag:
            raise BitstreamError(f"face-and-background payload: the background was coded with other "
                                 f"{self.variant}-{rate} weights or prior than these")
        return int(bg["model"].rate_point.channels)

    def _paste_on_background(self, face: np.ndarray, bg: payload.Background, image_shape: tuple[int, int]) -> np.ndarray:
        """The background rate point's image with the face region's pixels taken from ``face``.

        One image at a time, on purpose: decoding a batch's backgrounds together was no faster
        on CPU (12 LFW images: 1.54 s against 1.34 s) and moved some background pixels by one
        level against the single-image decode, so a file would decode differently in a batch.
        """
        from .roi import region_mask

        loaded = self._load(bg.rate)
        model: FaceCodecNet = loaded["model"]
        _, ch, cw = model.rate_point.code_shape(*image_shape)
        inside = region_mask(bg.region, image_shape, cell=model.downsample, margin=bg.margin)[:ch, :cw]
        if inside.shape != (ch, cw):
            raise BitstreamError(f"face-and-background payload: mask {inside.shape} does not cover the code {(ch, cw)}")
        q = loaded["prior"].decode(bg.stream, ch, cw, mask=~inside, fill=bg.fill)
        x = model.decode_codes(torch.from_numpy(q[None]), image_shape)
        back = torch.round(x[0] * 255.0).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        pixels = region_mask(bg.region, image_shape, cell=1, margin=bg.margin)
        return np.ascontiguousarray(np.where(pixels[..., None], face, back))

    def _parse(self, data: bytes) -> tuple[container.Container, str]:
        c = container.parse(data)
        if c.height * c.width > self.max_pixels:
            raise BitstreamError(
                f"declared image size {c.width}x{c.height} exceeds this decoder's limit of {self.max_pixels} pixels "
                "(too large: a decompression bomb?); pass max_pixels= to decode larger images"
            )
        ident = c.model_key()
        if ident.variant != self.variant or ident.entropy != self.entropy:
            want = LearnedSpec(ident.variant, ident.entropy).name
            raise BitstreamError(f"bitstream was made by model {c.model!r}; this is {self.name} (decode it with {want})")
        if ident.rate not in self.rate_points:
            raise BitstreamError(f"bitstream was made by rate point {ident.rate!r}, which {self.name} does not have")
        loaded = self._load(ident.rate)
        container.check_model(c, ident, loaded["fingerprint"])
        return c, ident.rate

    def describe(self) -> dict[str, Any]:
        manifest = read_manifest(self.folder)
        entries = {r: manifest["models"].get(model_name(self.variant, r), {}) for r in self.rate_points}
        return {
            "name": self.name,
            "settings": list(self.settings),
            "torch": torch.__version__,
            "container": container.VERSION,
            "models": {r: e.get("metrics", {}) for r, e in entries.items()},
            # what identifies this codec's output (the evaluation cache is keyed by it)
            "weights_sha256": {
                r: {"weights": e.get("sha256"), "prior": (e.get("prior") or {}).get("sha256") if self.entropy else None}
                for r, e in entries.items()
            },
            **({"roi": self.roi.describe()} if self.roi is not None else {}),
        }
