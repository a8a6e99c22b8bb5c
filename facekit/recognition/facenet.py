"""facenet-pytorch's InceptionResnetV1 (VGGFace2 or CASIA-WebFace weights) with MTCNN crops.

The network and its weights are facenet-pytorch 2.5.3's (Tim Esler's port of David
Sandberg's FaceNet): 160x160 chips, ``(pixel - 127.5) / 128``, 512-d L2-normalised
embeddings compared by Euclidean distance. Alignment is facenet-pytorch's own: the MTCNN
box chosen by ``center_weighted_size``, enlarged by a 14-pixel margin as ``extract_face``
does (the margin of facenet-pytorch's LFW example), resized to 160x160; here as an
affine ``grid_sample``, so reconstructions are cropped like their originals.

Weights are looked for, in order, in the ``weights`` argument, in
``$FACEKIT_FACENET_WEIGHTS`` (a file, or a folder holding the release files), and in
torch hub's cache (``$TORCH_HOME/checkpoints``, where facenet-pytorch itself puts
them); failing that they are downloaded from facenet-pytorch's GitHub release when
``allow_download`` and the network allow. Without them a :class:`RecognizerError`
explains what to fetch. Random weights only with an explicit ``pretrained=None``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import RecognizerError
from .align import FACENET_ALIGNMENT_ID, FaceAligner, FaceLocation, warp_chips
from .base import Recognizer

__all__ = ["FACENET_WEIGHTS_ENV", "FacenetRecognizer", "find_facenet_weights"]

FACENET_WEIGHTS_ENV = "FACEKIT_FACENET_WEIGHTS"

#: facenet-pytorch 2.5.3's release files for each pretraining set
RELEASES = {
    "vggface2": (
        "20180402-114759-vggface2.pt",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        8631,
    ),
    "casia-webface": (
        "20180408-102900-casia-webface.pt",
        "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
        10575,
    ),
}


def _torch_home() -> Path:
    # facenet-pytorch's own get_torch_home()
    return Path(
        os.path.expanduser(
            os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
        )
    )


def find_facenet_weights(
    pretrained: str, weights: str | os.PathLike[str] | None = None, allow_download: bool = True
) -> Path:
    """The path of facenet-pytorch's ``pretrained`` weights; downloads them if allowed.

    Raises :class:`RecognizerError` with instructions when they are nowhere to be found.
    """
    if pretrained not in RELEASES:
        raise RecognizerError(
            f"unknown facenet weights {pretrained!r}; choose one of {sorted(RELEASES)}"
        )
    filename, url, _ = RELEASES[pretrained]
    for cand, origin in (
        (weights, "argument"),
        (os.environ.get(FACENET_WEIGHTS_ENV) or None, FACENET_WEIGHTS_ENV),
    ):
        if cand is None:
            continue
        p = Path(cand).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise RecognizerError(f"facenet weights {p} (from the {origin}) do not exist")
        return p
    cached = _torch_home() / "checkpoints" / filename
    if cached.is_file():
        return cached
    help_text = (
        f"facenet-pytorch's {pretrained} weights are not available offline. Download {url} "
        f"and put it in {cached.parent}, or pass weights=PATH / set {FACENET_WEIGHTS_ENV}=PATH"
    )
    if not allow_download:
        raise RecognizerError(help_text)
    from torch.hub import download_url_to_file

    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(cached), progress=False)
    except Exception as e:  # noqa: BLE001 - any network failure
        if cached.exists():
            cached.unlink()
        raise RecognizerError(f"{help_text} (download failed: {e})") from e
    return cached


class FacenetRecognizer(Recognizer):
    """facenet-pytorch's InceptionResnetV1 as a frozen, differentiable :class:`Recognizer`.

    ``pretrained``: ``"vggface2"`` or ``"casia-webface"``; ``None`` gives random weights
    (tests only: the name then says so). ``weights``: an explicit weights file.
    """

    chip_size = 160
    embedding_dim = 512
    distance = "euclidean"
    threshold = 1.1
    alignment_id = FACENET_ALIGNMENT_ID

    def __init__(
        self,
        pretrained: str | None = "vggface2",
        weights: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        allow_download: bool = True,
        margin: float = 14,
        aligner: FaceAligner | None = None,
    ) -> None:
        super().__init__()
        # find the weights first: offline without them fails fast, before any model is built
        path = (
            find_facenet_weights(pretrained, weights, allow_download)
            if pretrained is not None
            else None
        )
        try:
            from facenet_pytorch import InceptionResnetV1
        except ImportError as e:
            raise RecognizerError(
                "facenet-pytorch is not installed: pip install facenet-pytorch==2.5.3"
            ) from e
        self.net = InceptionResnetV1(pretrained=None, classify=False)
        self.pretrained = pretrained
        self.name = f"facenet-{pretrained}" if pretrained else "facenet-random"
        if path is not None:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unpickling failure
                raise RecognizerError(f"{path} cannot be read as facenet weights: {e}") from e
            if not isinstance(state, dict):
                raise RecognizerError(f"{path} does not hold a state dict")
            state = {k: v for k, v in state.items() if not k.startswith("logits.")}
            try:
                self.net.load_state_dict(state)
            except RuntimeError as e:
                raise RecognizerError(f"{path} does not fit InceptionResnetV1: {e}") from e
        self.margin = margin
        if margin != 14:
            self.alignment_id = f"facenet-mtcnn-cws-chip160-margin{margin:g}-v1"
        self._aligner = aligner
        self.requires_grad_(False)
        self.eval()
        if device is not None:
            self.to(device)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Chips ``(B, 3, 160, 160)``, RGB in ``[0, 1]`` -> L2-normalised ``(B, 512)``."""
        self.check_chips(chips)
        return self.net((chips * 255.0 - 127.5) / 128.0)

    def locate(self, image: np.ndarray) -> FaceLocation:
        """MTCNN box and crop transform of an original uint8 ``(H, W, 3)`` RGB image."""
        return self.aligner.locate_facenet(image, size=self.chip_size, margin=self.margin)

    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The box crop resized to 160x160, as a differentiable bilinear ``grid_sample``."""
        return warp_chips(images, theta, self.chip_size, dlib_border=False)
