"""The learned face codec of Bian et al. (arXiv:1907.01714) behind the :class:`Codec` interface.

``LearnedCodec("mse")`` is the codec trained for distortion only (phase one of the
paper), ``LearnedCodec("joint")`` the one trained jointly with a face recogniser, and
``LearnedCodec("jointrate", entropy=True)`` the one trained jointly with the recogniser
*and* the rate term of the context coder (the issue's joint loss "plus the rate term
where the entropy-coded variant is used"; :class:`facekit.models.rate.ContextRate`).
Its settings are the rate points (``q1`` lowest rate ... ``q5`` highest) whose weights
ship in :mod:`facekit.weights`. ``encode`` returns a whole container
(:mod:`facekit.container`: magic, version, a one-byte model id, weights hash, image size,
the PNG of the quantised code, CRC32: 16 bytes besides the PNG), so bpp counts every byte.

``LearnedCodec(variant, entropy=True)`` (``facekit-mse-entropy``, beyond the paper)
keeps the same networks and integers but codes them with a fitted context model and a
range coder (:class:`facekit.models.quantizer.ContextPrior`'s count tables or, for the
jointrate weights, :class:`facekit.models.neural_prior.NeuralPrior`'s integer networks;
stored beside the weights),
or as the PNG when that is shorter (one tag byte says which), so it is never more than
one byte above the PNG variant.

``roi=True`` codes only the face region (:mod:`facekit.roi`). With the PNG payload the
background's codes are flattened and PNG stores them cheaply; with ``entropy=True`` too
(``facekit-jointrate-entropy-roi``) the payload carries the region's geometry (31 bytes)
and one fill value per channel, and range-codes only the codes inside the region; the
decoder rebuilds the mask from the geometry. Both decode to the same image, so the two
ROI codecs differ in rate only (about 25-35 % fewer bytes for the range-coded one).

``background="q1"`` with ``roi=True, entropy=True`` (``facekit-<variant>-entropy-roi-bg``)
keeps a background instead of a flat one: after the face region's stream comes a second,
range-coded stream of the lowest rate point's codes outside the region (payload type 3).
The decoder pastes the face decoder's pixels inside the region (the chip and its margin)
over the background decoder's image, so the recogniser sees exactly what the ROI codec
gives it, and a viewer sees the whole scene at the lowest rate's quality. This is the
region-of-interest idea of JPEG 2000 (Part 1's Maxshift: the face first, the rest at a
lower rate) with two learned rate points.

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
from ..entropy_models import RangeCodedPrior, pack_png, unpack_png
from ..errors import BitstreamError, CodecError, WeightsError
from ..models.autoencoder import RATE_POINTS, FaceCodecNet
from ..zoo import MANIFEST, load_model, load_prior, read_manifest, weights_dir
from .base import Codec, check_image
from .registry import VARIANTS

#: the largest image (in pixels) the learned codec encodes or decodes; a container declaring
#: more is refused before anything is allocated (decoding 16 MP takes a few GB of memory)
MAX_PIXELS = 4096 * 4096

ENTROPY_SUFFIX = "ctx"


def model_name(variant: str, rate: str, entropy: bool = False) -> str:
    """The name a bitstream records: ``"mse-q3"``, or ``"mse-q3-ctx"`` for the entropy variant."""
    return f"{variant}-{rate}-{ENTROPY_SUFFIX}" if entropy else f"{variant}-{rate}"


def split_model_name(name: str) -> tuple[str, str, bool]:
    """``(variant, rate, entropy)`` from a bitstream's model name."""
    parts = name.split("-")
    if len(parts) == 2:
        return parts[0], parts[1], False
    if len(parts) == 3 and parts[2] == ENTROPY_SUFFIX:
        return parts[0], parts[1], True
    raise BitstreamError(f"bitstream names an unknown model {name!r}")


class LearnedCodec(Codec):
    """The learned codec as a :class:`Codec`: settings are rate-point names, low to high rate.

    ``device`` (default CPU) runs the networks; ``folder`` reads weights from another
    folder laid out like :mod:`facekit.weights` (a manifest and ``.pt`` files);
    ``entropy=True`` codes the same integers with the fitted context model and a range
    coder instead of PNG. Images (and declared sizes) above ``max_pixels`` are refused
    before anything is allocated. Models load lazily, once per rate point.

    ``roi=True`` (names ``facekit-<variant>-roi``) codes only the face: the encoder finds
    the recogniser's face chip (:mod:`facekit.roi`) and flattens the code outside it,
    ``roi_margin`` pixels around the chip. The decoder is unchanged and nothing extra is
    stored, so the bytes are ordinary bitstreams of the same model. With ``entropy=True``
    as well (``facekit-<variant>-entropy-roi``) the payload is range-coded inside the
    region only, after the region's geometry (payload type 2); ``facekit-<variant>-entropy``
    decodes it, to the same image as the PNG ROI stream. ``background`` (a rate point of
    the same variant, with ``roi`` and ``entropy``; names ``facekit-<variant>-entropy-roi-bg``)
    adds that rate point's codes outside the region as a second stream (payload type 3),
    so the decoded background is a low-rate image instead of a flat colour.
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
        self.variant = variant
        self.entropy = bool(entropy)
        self.max_pixels = int(max_pixels)
        if background is not None and not (roi and self.entropy):
            raise CodecError("a coded background (background=...) needs roi=True and entropy=True")
        self.background = background
        self.name = (f"facekit-{variant}" + ("-entropy" if self.entropy else "") + ("-roi" if roi else "")
                     + ("-bg" if background is not None else ""))
        self.roi = None
        if roi:
            from ..roi import FaceRegionFinder

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
        self.settings = tuple(r for r in order if r in available)
        if not self.settings:
            what = "weights with a context prior" if self.entropy else "weights"
            raise WeightsError(
                f"no {what} for the {variant!r} variant in {self.folder / MANIFEST}"
                + (f" (the {variant} variant is made by phase-two training, facekit joint --install)"
                   if variant != "mse" else "")
            )
        if background is not None and background not in self.settings:
            raise CodecError(f"{self.name}: no rate point {background!r} for the background; "
                             f"settings: {', '.join(self.settings)}")
        self._models: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- models
    def model(self, setting: str) -> FaceCodecNet:
        """The eval-mode network of a rate point (loaded on first use)."""
        return self._load(setting)["model"]

    def _load(self, setting: str) -> dict[str, Any]:
        if setting not in self.settings:
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
        name = model_name(self.variant, setting, self.entropy)
        for (h, w), idx in groups.items():
            x = torch.from_numpy(np.stack([imgs[i] for i in idx])).permute(0, 3, 1, 2).float().div(255)
            if self.entropy or self.roi is not None:
                q = model.codes(x.to(self.device)).numpy()
                regions: list[tuple[np.ndarray, bytes] | None] = [None] * len(q)
                if self.roi is not None:
                    regions = [self._roi_region(imgs[i], qi.shape, model.downsample) for i, qi in zip(idx, q, strict=True)]
                    q = np.stack([self._apply_roi(qi, r) for qi, r in zip(q, regions, strict=True)])
                if self.entropy:
                    qb: Sequence[np.ndarray | None] = [None] * len(q)
                    if self.background is not None and any(r is not None for r in regions):
                        bg = self._load(self.background)
                        qb = bg["model"].codes(x.to(self.device)).numpy()
                    payloads = [
                        self._background_payload(loaded["prior"], qi, r, bg, qbi, (h, w))
                        if r is not None and qbi is not None
                        else self._entropy_payload(loaded["prior"], qi, model.rate_point.bits, r)
                        for qi, r, qbi in zip(q, regions, qb, strict=True)
                    ]
                else:
                    payloads = [pack_png(qi, model.rate_point.bits) for qi in q]
            else:
                payloads = model.compress(x.to(self.device))["strings"]
            for i, payload in zip(idx, payloads, strict=True):
                out[i] = container.pack(name, loaded["fingerprint"], h, w, payload)
        return [b for b in out if b is not None]

    def _roi_region(self, image: np.ndarray, code_shape: tuple[int, ...], cell: int) -> tuple[np.ndarray, bytes] | None:
        """``(mask, geometry)`` of an image's face region on the code grid; ``None`` when it keeps everything.

        The geometry (:func:`facekit.roi.region_geometry`) is what a range-coded ROI stream
        carries so that its decoder rebuilds the mask; PNG streams do not need it.
        """
        from ..roi import region_geometry, region_mask

        assert self.roi is not None
        region = self.roi.find(image)
        keep = region_mask(region, image.shape[:2], cell=cell, margin=self.roi.margin)[: code_shape[1], : code_shape[2]]
        if keep.all():
            return None
        geometry = region_geometry(region, keep, image.shape[:2], cell, self.roi.margin) if self.entropy else b""
        return keep, geometry

    @staticmethod
    def _apply_roi(q: np.ndarray, region: tuple[np.ndarray, bytes] | None) -> np.ndarray:
        """The codes of one image with everything outside its face region flattened."""
        from ..roi import mask_codes

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
            backgrounds: list[dict[str, Any] | None] = [None] * len(payloads)
            if self.entropy:
                split = [self._split_background(p, model.rate_point.channels) for p in payloads]
                payloads, backgrounds = [a for a, _ in split], [b for _, b in split]
                c_, ch, cw = model.rate_point.code_shape(h, w)
                q = torch.from_numpy(
                    np.stack([
                        self._entropy_codes(loaded["prior"], p, (c_, ch, cw), model.rate_point.bits, (h, w), model.downsample)
                        for p in payloads
                    ])
                )
            else:
                q = model.codes_from_strings(payloads, (h, w))
            x_hat = model.decode_codes(q, (h, w))
            arr = torch.round(x_hat * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for j, i in enumerate(idx):
                face = np.ascontiguousarray(arr[j])
                out[i] = face if backgrounds[j] is None else self._paste_on_background(face, backgrounds[j], (h, w))
        return [a for a in out if a is not None]

    #: first byte of an entropy-variant payload: range-coded with the context model, PNG, or
    #: range-coded inside a face region (ROI: the region's geometry, the fill values, then
    #: only the codes inside the region)
    PAYLOAD_RANGE, PAYLOAD_PNG, PAYLOAD_MASKED = 0, 1, 2
    #: the face region as PAYLOAD_MASKED, then a background stream of another rate point's
    #: codes outside the region: [3] geometry, face fill (C bytes), background rate point N
    #: (1 byte, "qN"), 4 bytes of its fingerprint, background fill (C' bytes), the face
    #: stream's length (LEB128), the face stream, the background stream
    PAYLOAD_MASKED_BG = 3

    def _background_payload(
        self,
        prior: RangeCodedPrior,
        q: np.ndarray,
        region: tuple[np.ndarray, bytes],
        bg: dict[str, Any],
        qb: np.ndarray,
        image_shape: tuple[int, int],
    ) -> bytes:
        """Payload type 3: ``q``'s face-region stream plus ``qb`` (the background rate point's codes) outside it.

        The background's mask is rebuilt from the stored geometry, as the decoder will.
        """
        from ..roi import mask_codes, region_mask, unpack_region

        assert self.background is not None
        head, face_stream = self._masked_parts(prior, q, region)
        stored, margin, _ = unpack_region(region[1])
        inside = region_mask(stored, image_shape, cell=bg["model"].downsample, margin=margin)[: qb.shape[1], : qb.shape[2]]
        qb = mask_codes(qb, ~inside)  # the background's codes inside the face region: their mean, never coded
        bg_fill = (qb[:, inside][:, 0] if inside.any() else np.zeros(qb.shape[0])).astype(np.uint8)
        bg_stream = bg["prior"].encode(qb, mask=~inside)
        return (bytes([self.PAYLOAD_MASKED_BG]) + head
                + bytes([int(self.background[1:])]) + container.model_hash(bg["fingerprint"], 4)
                + bg_fill.tobytes() + _leb128(len(face_stream)) + face_stream + bg_stream)

    def _split_background(self, payload: bytes, channels: int) -> tuple[bytes, dict[str, Any] | None]:
        """A type-3 payload as the type-2 payload of its face region plus its background's parts.

        Other payloads come back unchanged with ``None``. A background rate point this codec
        lacks, a fingerprint that does not match it, or a truncated layout is a
        :class:`BitstreamError`.
        """
        if not payload or payload[0] != self.PAYLOAD_MASKED_BG:
            return payload, None
        from ..roi import unpack_region

        body = payload[1:]
        try:
            region, margin, used = unpack_region(body)
        except ValueError as e:
            raise BitstreamError(f"face-and-background payload: {e}") from e
        head = used + channels
        if len(body) < head + 5:
            raise BitstreamError("face-and-background payload truncated before its background rate point")
        rate, tag = f"q{body[head]}", body[head + 1 : head + 5]
        if rate not in self.settings:
            raise BitstreamError(f"face-and-background payload: background rate point {rate!r}, which "
                                 f"facekit-{self.variant}-entropy does not have")
        bg = self._load(rate)
        if container.model_hash(bg["fingerprint"], 4) != tag:
            raise BitstreamError(f"face-and-background payload: the background was coded with other "
                                 f"{self.variant}-{rate} weights or prior than these")
        cb = bg["model"].rate_point.channels
        pos = head + 5 + cb
        fill = body[head + 5 : pos]
        length, pos = _read_leb128(body, pos)
        if len(fill) < cb or pos + length > len(body):
            raise BitstreamError("face-and-background payload truncated")
        face = bytes([self.PAYLOAD_MASKED]) + body[:head] + body[pos : pos + length]
        return face, {"rate": rate, "region": region, "margin": margin, "fill": list(fill),
                      "stream": body[pos + length :]}

    def _paste_on_background(self, face: np.ndarray, bg: dict[str, Any], image_shape: tuple[int, int]) -> np.ndarray:
        """The background rate point's image with the face region's pixels taken from ``face``.

        One image at a time, on purpose: decoding a batch's backgrounds together was no faster
        on CPU (12 LFW images: 1.54 s against 1.34 s) and moved some background pixels by one
        level against the single-image decode, so a file would decode differently in a batch.
        """
        from ..roi import region_mask

        loaded = self._load(bg["rate"])
        model: FaceCodecNet = loaded["model"]
        _, ch, cw = model.rate_point.code_shape(*image_shape)
        inside = region_mask(bg["region"], image_shape, cell=model.downsample, margin=bg["margin"])[:ch, :cw]
        if inside.shape != (ch, cw):
            raise BitstreamError(f"face-and-background payload: mask {inside.shape} does not cover the code {(ch, cw)}")
        q = loaded["prior"].decode(bg["stream"], ch, cw, mask=~inside, fill=bg["fill"])
        x = model.decode_codes(torch.from_numpy(q[None]), image_shape)
        back = torch.round(x[0] * 255.0).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        pixels = region_mask(bg["region"], image_shape, cell=1, margin=bg["margin"])
        return np.ascontiguousarray(np.where(pixels[..., None], face, back))

    @classmethod
    def _entropy_payload(
        cls, prior: RangeCodedPrior, q: np.ndarray, bits: int, region: tuple[np.ndarray, bytes] | None = None
    ) -> bytes:
        """The shortest of the context-model stream and the PNG, behind a one-byte type tag.

        With a face ``region`` (``q`` already flattened outside it), the context-model stream
        codes only the region's codes, after the geometry the decoder rebuilds the mask from
        and one fill value per channel; the decoded codes are the same either way.
        """
        candidates = [bytes([cls.PAYLOAD_PNG]) + pack_png(q, bits)]
        if region is None:
            candidates.insert(0, bytes([cls.PAYLOAD_RANGE]) + prior.encode(q))
        else:
            candidates.insert(0, bytes([cls.PAYLOAD_MASKED]) + b"".join(cls._masked_parts(prior, q, region)))
        return min(candidates, key=len)

    @staticmethod
    def _masked_parts(prior: RangeCodedPrior, q: np.ndarray, region: tuple[np.ndarray, bytes]) -> tuple[bytes, bytes]:
        """``(geometry + one fill value per channel, the range-coded codes inside the region)``.

        What a ROI payload (type 2) holds after its tag, and what type 3 holds around the
        background's parts; ``q`` is already flattened outside the region.
        """
        keep, geometry = region
        fill = q[:, ~keep][:, 0].astype(np.uint8)
        return geometry + fill.tobytes(), prior.encode(q, mask=keep)

    @classmethod
    def _entropy_codes(
        cls,
        prior: RangeCodedPrior,
        payload: bytes,
        shape: tuple[int, int, int],
        bits: int,
        image_shape: tuple[int, int] | None = None,
        cell: int = 1,
    ) -> np.ndarray:
        if not payload:
            raise BitstreamError("empty payload")
        kind, body = payload[0], payload[1:]
        if kind == cls.PAYLOAD_RANGE:
            return prior.decode(body, shape[1], shape[2])
        if kind == cls.PAYLOAD_PNG:
            return unpack_png(body, *shape, bits)
        if kind == cls.PAYLOAD_MASKED:
            from ..roi import region_mask, unpack_region

            try:
                region, margin, used = unpack_region(body)
            except ValueError as e:
                raise BitstreamError(f"face-region payload: {e}") from e
            keep = region_mask(region, image_shape or (shape[1] * cell, shape[2] * cell), cell=cell, margin=margin)
            keep = keep[: shape[1], : shape[2]]
            if keep.shape != shape[1:]:
                raise BitstreamError(f"face-region payload: mask {keep.shape} does not cover the code {shape[1:]}")
            fill = body[used : used + shape[0]]
            if len(fill) < shape[0]:
                raise BitstreamError("face-region payload truncated in its fill values")
            return prior.decode(body[used + shape[0] :], shape[1], shape[2], mask=keep, fill=list(fill))
        raise BitstreamError(f"unknown payload type {kind}")

    def _parse(self, data: bytes) -> tuple[container.Container, str]:
        c = container.parse(data)
        if c.height * c.width > self.max_pixels:
            raise BitstreamError(
                f"declared image size {c.width}x{c.height} exceeds this decoder's limit of {self.max_pixels} pixels "
                "(too large: a decompression bomb?); pass max_pixels= to decode larger images"
            )
        variant, rate, entropy = split_model_name(c.model)
        if variant != self.variant or entropy != self.entropy:
            want = f"facekit-{variant}" + ("-entropy" if entropy else "")
            raise BitstreamError(f"bitstream was made by model {c.model!r}; this is {self.name} (decode it with {want})")
        if rate not in self.settings:
            raise BitstreamError(f"bitstream was made by rate point {rate!r}, which {self.name} does not have")
        loaded = self._load(rate)
        container.check_model(c, model_name(self.variant, rate, self.entropy), loaded["fingerprint"])
        return c, rate

    def describe(self) -> dict[str, Any]:
        manifest = read_manifest(self.folder)
        return {
            "name": self.name,
            "settings": list(self.settings),
            "torch": torch.__version__,
            "container": container.VERSION,
            "models": {
                r: manifest["models"].get(model_name(self.variant, r), {}).get("metrics", {})
                for r in self.settings
            },
            # what identifies this codec's output (the evaluation cache is keyed by it)
            "weights_sha256": {
                r: {
                    "weights": manifest["models"].get(model_name(self.variant, r), {}).get("sha256"),
                    "prior": (manifest["models"].get(model_name(self.variant, r), {}).get("prior") or {}).get("sha256")
                    if self.entropy else None,
                }
                for r in self.settings
            },
            **({"roi": self.roi.describe()} if self.roi is not None else {}),
        }


def _leb128(n: int) -> bytes:
    """``n`` >= 0 as an unsigned LEB128 varint (7 bits a byte, high bit: more follow)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_leb128(data: bytes, pos: int, max_bytes: int = 5) -> tuple[int, int]:
    """``(value, position after it)`` of the LEB128 varint at ``data[pos]``; BitstreamError when cut or too long."""
    value = 0
    for k in range(max_bytes):
        if pos + k >= len(data):
            raise BitstreamError("face-and-background payload truncated in a length")
        value |= (data[pos + k] & 0x7F) << (7 * k)
        if not data[pos + k] & 0x80:
            return value, pos + k + 1
    raise BitstreamError("face-and-background payload: a length of more than 5 bytes")
