"""The second-generation codec behind the :class:`~facekit.codecs.base.Codec` interface (not yet listed).

:class:`HyperpriorCodec` runs a :class:`~facekit.models.hyperprior.FaceHyperprior` (a
hyperprior, a checkerboard context and gain units; one model for every rate) on RGB
``uint8`` images. Its setting is the continuous rate parameter ``t`` in ``[0, 1]`` (0:
fewest bits) or one of the preset names ``q1``..``q5``. A file is::

    b"FKH1" | height, width (uint16 each) | 4 bytes of the model's fingerprint | model string

where the model string carries its own CRC32 and the rate (``FaceHyperprior.compress``).
A file made by another model, or damaged, is a :class:`~facekit.errors.BitstreamError`.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
import torch

from ..errors import BitstreamError
from ..models.hyperprior import PRESETS, FaceHyperprior
from .base import Codec, check_image

MAGIC = b"FKH1"


def model_fingerprint(model: FaceHyperprior) -> str:
    """sha256 of the architecture and the float weights (what decoding depends on)."""
    h = hashlib.sha256(repr(sorted(model.arch.to_dict().items())).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class HyperpriorCodec(Codec):
    """``encode(image, t) -> bytes`` and back, through a :class:`FaceHyperprior`."""

    name = "facekit-hyperprior"
    settings = tuple(PRESETS.values())
    setting_range = (0.0, 1.0)
    integer_setting = False

    def __init__(self, model: FaceHyperprior) -> None:
        self.model = model.eval().freeze()
        self.tag = bytes.fromhex(model_fingerprint(model)[:8])

    def encode(self, image: np.ndarray, setting: Any) -> bytes:
        image = check_image(image)
        h, w = image.shape[:2]
        if h > 65535 or w > 65535:
            raise BitstreamError(f"image {w}x{h} is too large for this format")
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255)
        string = self.model.compress(x, setting)["strings"][0]
        return MAGIC + struct.pack("<HH", h, w) + self.tag + string

    def decode(self, data: bytes) -> np.ndarray:
        data = bytes(data)
        if len(data) < 12 or data[:4] != MAGIC:
            raise BitstreamError("not a facekit-hyperprior file (bad magic or too short)")
        h, w = struct.unpack("<HH", data[4:8])
        if data[8:12] != self.tag:
            raise BitstreamError(f"file made by another model (fingerprint {data[8:12].hex()}, this model {self.tag.hex()})")
        x_hat = self.model.decompress([data[12:]], (h, w))["x_hat"][0]
        return (x_hat * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "settings": list(self.settings), "fingerprint": self.tag.hex(),
                "arch": self.model.arch.to_dict()}
