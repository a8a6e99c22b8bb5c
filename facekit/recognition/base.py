"""The recogniser interface shared by dlib's ResNet and facenet-pytorch.

A recogniser is a frozen ``torch.nn.Module`` that maps aligned face chips to
embeddings, plus the alignment that makes those chips:

* ``find_transform(image)``: landmarks on an *original* image (uint8 ``(H, W, 3)``)
  and the 2x3 affine map (in normalised ``affine_grid`` coordinates) to the chip.
* ``align(images, theta)``: ``grid_sample`` of a float batch ``(B, 3, H, W)`` in
  ``[0, 1]`` with those maps, differentiable with respect to the pixels, so a
  reconstruction is aligned with the transform found on its original (Bian et al.
  2019 train the codec through the recogniser this way).
* ``forward(chips)``: embeddings ``(B, D)``.

``distance`` is ``"euclidean"`` or ``"cosine"``; ``threshold`` is the recogniser's
usual same-person threshold on that distance.

``locate(image)`` returns the full :class:`~facekit.recognition.align.FaceLocation`
(landmarks, box, which detector found the face, whether it was a fallback, and the
transform); ``alignment_id`` names the alignment method, so that cached locations of
one recogniser are never reused by another. ``cache_id()`` (name, ``embedding_version``,
alignment and a digest of the weights) does the same for cached embeddings
(:mod:`facekit.evaluate`).
"""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .align import FaceAligner, FaceLocation


class Recognizer(nn.Module):
    """A frozen face recogniser with its own alignment (see the module docstring)."""

    name: str = "recognizer"
    chip_size: int = 150
    embedding_dim: int = 128
    distance: str = "euclidean"
    threshold: float = 0.6
    alignment_id: str = "none"
    #: bumped whenever a change to a recogniser's code alters its embeddings; with the
    #: name, the alignment and a digest of the weights it keys the embedding cache
    #: (:meth:`cache_id`), so embeddings of older code are never served
    embedding_version: int = 1

    #: the face finder; built lazily (dlib and MTCNN load their models on first use)
    _aligner: FaceAligner | None = None

    @property
    def aligner(self) -> FaceAligner:
        """The :class:`~facekit.recognition.align.FaceAligner` that finds faces on originals."""
        if self._aligner is None:
            from .align import FaceAligner

            self._aligner = FaceAligner()
        return self._aligner

    def cache_id(self) -> str:
        """What identifies this recogniser's embeddings: name, code version, alignment, weights.

        The weights' part is a sha256 over the state dict (sorted names, float32 values;
        :func:`facekit.models.digest.update_with_state_dict`, as the codec's fingerprint),
        computed at each call (a few tens of milliseconds for dlib's ResNet), so a
        recogniser fine-tuned in place gets a new id. A recogniser without torch weights
        (SFace runs in OpenCV) names its model files in ``name`` or ``alignment_id``.
        """
        import hashlib

        from ..models.digest import update_with_state_dict

        h = hashlib.sha256()
        update_with_state_dict(h, self)
        return f"{self.name}|v{self.embedding_version}|{self.alignment_id}|{h.hexdigest()[:16]}"

    def train(self, mode: bool = True) -> Recognizer:
        """Recognisers stay in inference mode (frozen batch norm, no dropout) whatever ``mode`` says."""
        return super().train(False)

    def check_chips(self, chips: torch.Tensor) -> None:
        """A clear error unless ``chips`` is ``(B, 3, chip_size, chip_size)``."""
        from ..errors import RecognizerError

        if chips.ndim != 4 or chips.shape[1] != 3:
            raise RecognizerError(
                f"expected chips of shape (B, 3, {self.chip_size}, {self.chip_size}), got {tuple(chips.shape)}"
            )
    @abstractmethod
    def locate(self, image: np.ndarray) -> FaceLocation:
        """Face, landmarks and chip transform of an original uint8 ``(H, W, 3)`` RGB image."""

    def find_transform(self, image: np.ndarray) -> np.ndarray:
        """2x3 float32 ``affine_grid`` matrix mapping the chip to ``image`` (found on originals)."""
        return self.locate(image).theta

    def read_original(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Read an original image file for :meth:`locate` (RGB uint8; PIL unless overridden)."""
        from .align import read_image

        return read_image(path, "pil")

    @abstractmethod
    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Differentiable crop: ``(B, 3, H, W)`` in [0, 1] and ``(B, 2, 3)`` -> chips ``(B, 3, S, S)``."""

    def embed(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Align then embed: ``(B, 3, H, W)`` in [0, 1] -> ``(B, D)``."""
        return self(self.align(images, theta))
