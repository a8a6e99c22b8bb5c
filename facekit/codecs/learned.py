"""The learned face codec of Bian et al. (arXiv:1907.01714) behind the :class:`Codec` interface.

``LearnedCodec("mse")`` is the codec trained for distortion only (phase one of the
paper), ``LearnedCodec("joint")`` the one trained jointly with a face recogniser.
Its settings are the rate points (``q1`` lowest rate ... ``q5`` highest) whose weights
ship in :mod:`facekit.weights`. ``encode`` returns a whole container
(:mod:`facekit.container`: magic, version, model name, weights hash, image size, the
PNG of the quantised code, CRC32), so bpp counts every byte.

Weights are listed in ``facekit/weights/manifest.json`` with their sha256; a file is
checked against it before ``torch.load(..., weights_only=True)`` reads it, and a file
that does not match is refused (:class:`~facekit.errors.WeightsError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import container
from ..errors import BitstreamError, CodecError, WeightsError
from ..models.autoencoder import RATE_POINTS, FaceCodecNet, load_weights, save_weights
from .base import Codec, check_image

VARIANTS = ("mse", "joint")
MANIFEST = "manifest.json"


def weights_dir() -> Path:
    """The folder of the shipped weights (``facekit/weights``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def read_manifest(folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The manifest of a weights folder (``{"models": {}}`` when it has none)."""
    path = Path(folder or weights_dir()) / MANIFEST
    if not path.exists():
        return {"models": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"weights manifest {path} cannot be read: {e}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise WeightsError(f"weights manifest {path} has no 'models' table")
    return manifest


def model_name(variant: str, rate: str) -> str:
    """The name a bitstream records: ``"<variant>-<rate point>"``, e.g. ``"mse-q3"``."""
    return f"{variant}-{rate}"


def load_model(
    variant: str,
    rate: str,
    *,
    folder: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
) -> tuple[FaceCodecNet, dict[str, Any]]:
    """Load shipped weights (sha256-verified) as an eval-mode model, plus their manifest entry."""
    folder = Path(folder or weights_dir())
    manifest = read_manifest(folder)
    name = model_name(variant, rate)
    entry = manifest["models"].get(name)
    if entry is None:
        have = ", ".join(sorted(manifest["models"])) or "none"
        raise WeightsError(f"no weights for {name!r} in {folder / MANIFEST} (available: {have})")
    path = folder / entry["file"]
    if not path.exists():
        raise WeightsError(f"weights file {path} listed in the manifest is missing")
    model = load_weights(path, sha256=entry["sha256"], map_location=device or "cpu")
    if model.rate_point.name != rate:
        raise WeightsError(f"weights file {path} holds rate point {model.rate_point.name!r}, not {rate!r}")
    fp = model.fingerprint()
    if entry.get("fingerprint") and entry["fingerprint"] != fp:
        raise WeightsError(f"weights file {path} builds a model whose fingerprint differs from the manifest")
    return model, entry


def install_weights(
    model: FaceCodecNet,
    variant: str,
    *,
    folder: str | os.PathLike[str] | None = None,
    info: dict[str, Any] | None = None,
    half: bool = True,
) -> dict[str, Any]:
    """Save a model as ``<variant>-<rate>.pt`` in a weights folder and list it in the manifest.

    ``info`` (how the weights were made, measured metrics) is stored in the entry beside
    the file's sha256 and the model's fingerprint. The manifest is rewritten atomically.
    """
    if variant not in VARIANTS:
        raise WeightsError(f"unknown variant {variant!r}")
    folder = Path(folder or weights_dir())
    name = model_name(variant, model.rate_point.name)
    saved = save_weights(model, folder / f"{name}.pt", half=half)
    manifest = read_manifest(folder)
    manifest.setdefault("format", 1)
    entry = {
        "file": f"{name}.pt",
        "variant": variant,
        "rate_point": model.rate_point.name,
        "sha256": saved["sha256"],
        "fingerprint": saved["fingerprint"],
        "bytes": saved["bytes"],
        "dtype": "float16" if half else "float32",
        **(info or {}),
    }
    manifest["models"][name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    tmp = folder / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return entry


class LearnedCodec(Codec):
    """The learned codec as a :class:`Codec`: settings are rate-point names, low to high rate.

    ``device`` (default CPU) runs the networks; ``folder`` reads weights from another
    folder laid out like :mod:`facekit.weights` (a manifest and ``.pt`` files).
    Models load lazily, once per rate point.
    """

    integer_setting = False
    setting_range = None

    def __init__(
        self,
        variant: str = "mse",
        device: str | torch.device | None = None,
        *,
        folder: str | os.PathLike[str] | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise CodecError(f"unknown learned-codec variant {variant!r}; use one of {', '.join(VARIANTS)}")
        self.variant = variant
        self.name = f"facekit-{variant}"
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.folder = Path(folder) if folder is not None else weights_dir()
        manifest = read_manifest(self.folder)
        available = {m.get("rate_point") for k, m in manifest["models"].items() if k.startswith(variant + "-")}
        order = list(RATE_POINTS) + sorted(r for r in available if r not in RATE_POINTS and r)
        self.settings = tuple(r for r in order if r in available)
        if not self.settings:
            raise WeightsError(
                f"no weights for the {variant!r} variant in {self.folder / MANIFEST}"
                + (" (the joint variant is trained by `facekit train` phase two and is not shipped yet)" if variant == "joint" else "")
            )
        self._models: dict[str, tuple[FaceCodecNet, dict[str, Any]]] = {}

    # ---------------------------------------------------------------- models
    def model(self, setting: str) -> FaceCodecNet:
        """The eval-mode network of a rate point (loaded on first use)."""
        return self._load(setting)[0]

    def _load(self, setting: str) -> tuple[FaceCodecNet, dict[str, Any]]:
        if setting not in self.settings:
            raise CodecError(f"{self.name} has no rate point {setting!r}; settings: {', '.join(self.settings)}")
        if setting not in self._models:
            model, entry = load_model(self.variant, setting, folder=self.folder, device=self.device)
            self._models[setting] = (model, {**entry, "fingerprint": model.fingerprint()})
        return self._models[setting]

    # ---------------------------------------------------------------- codec
    def encode(self, image: np.ndarray, setting: str) -> bytes:
        """Compress one RGB uint8 image at a rate point; returns container bytes."""
        return self.encode_batch([image], setting)[0]

    def encode_batch(self, images: Sequence[np.ndarray], setting: str) -> list[bytes]:
        """Compress several images (any sizes; equal sizes run as one batch)."""
        model, entry = self._load(setting)
        imgs = [check_image(im) for im in images]
        out: list[bytes | None] = [None] * len(imgs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            if im.shape[0] > container.MAX_SIDE or im.shape[1] > container.MAX_SIDE:
                raise CodecError(f"image {im.shape[1]}x{im.shape[0]} exceeds {container.MAX_SIDE} pixels a side")
            groups.setdefault(im.shape[:2], []).append(i)
        name = model_name(self.variant, setting)
        for (h, w), idx in groups.items():
            x = torch.from_numpy(np.stack([imgs[i] for i in idx])).permute(0, 3, 1, 2).float().div(255)
            enc = model.compress(x.to(self.device))
            for i, payload in zip(idx, enc["strings"], strict=True):
                out[i] = container.pack(name, entry["fingerprint"], h, w, payload)
        return [b for b in out if b is not None]

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
            model = self.model(rate)
            x_hat = model.decompress([parsed[i][0].payload for i in idx], (h, w))["x_hat"]
            arr = torch.round(x_hat * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = np.ascontiguousarray(arr[j])
        return [a for a in out if a is not None]

    def _parse(self, data: bytes) -> tuple[container.Container, str]:
        c = container.parse(data)
        variant, _, rate = c.model.partition("-")
        if variant != self.variant:
            raise BitstreamError(
                f"bitstream was made by model {c.model!r}; this is {self.name} (decode it with LearnedCodec({variant!r}))"
            )
        if rate not in self.settings:
            raise BitstreamError(f"bitstream was made by rate point {rate!r}, which {self.name} does not have")
        _, entry = self._load(rate)
        container.check_model(c, model_name(self.variant, rate), entry["fingerprint"])
        return c, rate

    def describe(self) -> dict[str, Any]:
        manifest = read_manifest(self.folder)
        return {
            "name": self.name,
            "settings": list(self.settings),
            "torch": torch.__version__,
            "models": {
                r: manifest["models"].get(model_name(self.variant, r), {}).get("metrics", {})
                for r in self.settings
            },
        }
