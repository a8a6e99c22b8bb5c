"""The recogniser's side of phase two: the identity term, face-weighted pixels, mirrored transforms.

Bian et al. (arXiv:1907.01714, Sec. 3.2) fine-tune the codec jointly with a face recogniser
so that the reconstruction keeps its identity. The identity term is

    D(f(A(x, T)), f(A(x_hat, T)))

where ``f`` is a frozen recogniser (dlib's ResNet by default, :mod:`facekit.recognition`),
``A(., T)`` its differentiable face alignment with the transform ``T`` found once on the
*original* image, and ``D`` the squared Euclidean (or cosine) distance of the embeddings
(:class:`IdentityLoss`); the gradient reaches the codec's pixels through ``grid_sample``.

:func:`face_weights` marks the pixels of the face chip the recogniser reads, so the
distortion term may count the background less (the ``jointface`` variant, beyond the
paper). :func:`mirror_theta` is the transform of a horizontally flipped image, so that
flipping stays an augmentation that keeps the alignment.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class IdentityLoss(nn.Module):
    """Distance between the recogniser's embeddings of an original and its reconstruction.

    ``forward(x, x_hat, theta)``: images ``(B, 3, H, W)`` in [0, 1] and the transforms
    ``(B, 2, 3)`` found on the originals; returns the mean over the batch of the squared
    Euclidean (``"squared"``), Euclidean (``"euclidean"``) or cosine (``"cosine"``) distance.
    The original's embedding is computed without gradient. Example::

        ident = IdentityLoss(get_recognizer("dlib-resnet"))
        loss = ident(x, model(x)["x_hat"], theta)
    """

    def __init__(self, recognizer: nn.Module, kind: str = "squared") -> None:
        super().__init__()
        if kind not in ("squared", "euclidean", "cosine"):
            raise ValueError(f"unknown identity distance {kind!r}")
        self.recognizer = recognizer
        self.kind = kind

    def distances(self, x: torch.Tensor, x_hat: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The distance of each image of the batch, ``(B,)``."""
        with torch.no_grad():
            e = self.recognizer.embed(x.float(), theta)
        e_hat = self.recognizer.embed(x_hat.float(), theta)
        if self.kind == "cosine":
            return 1 - torch.nn.functional.cosine_similarity(e, e_hat, dim=1)
        sq = ((e - e_hat) ** 2).sum(dim=1)
        return sq if self.kind == "squared" else torch.sqrt(sq + 1e-12)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.distances(x, x_hat, theta).mean()


def mirror_theta(theta: np.ndarray) -> np.ndarray:
    """The transform of a horizontally flipped image whose chip is the mirrored chip.

    With ``affine_grid`` coordinates, flipping the input negates ``x_in`` and mirroring
    the chip negates ``x_out``: ``[[a, b, c], [d, e, f]] -> [[a, -b, -c], [-d, e, f]]``.
    """
    t = np.array(theta, dtype=np.float32, copy=True)
    t[0, 1:] *= -1
    t[1, 0] *= -1
    return t


def face_weights(
    theta: torch.Tensor | np.ndarray, height: int, width: int, background: float, margin: float = 0.1
) -> torch.Tensor:
    """Per-pixel distortion weights ``(B, 1, H, W)``: 1 on the face, ``background`` elsewhere.

    The face is the region the recogniser's chip covers: the pixels whose chip coordinates
    under the transform ``theta`` (``(B, 2, 3)``, ``affine_grid`` convention with
    ``align_corners=True``, found on the original) lie within ``[-1 - margin, 1 + margin]``.
    dlib's chip already pads the face by a quarter of its size on each side.
    """
    th = torch.as_tensor(theta, dtype=torch.float32)
    if th.ndim == 2:
        th = th[None]
    if th.ndim != 3 or th.shape[1:] != (2, 3):
        raise ValueError(f"expected transforms (B, 2, 3), got shape {tuple(th.shape)}")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"the background weight must be in [0, 1], got {background}")
    gy, gx = torch.meshgrid(
        torch.linspace(-1, 1, height, device=th.device), torch.linspace(-1, 1, width, device=th.device), indexing="ij"
    )
    p = torch.stack([gx, gy], -1).reshape(1, -1, 2) - th[:, None, :, 2]  # (B, HW, 2) image coordinates
    u = torch.linalg.solve(th[:, :, :2], p.transpose(1, 2)).transpose(1, 2)  # chip coordinates
    inside = u.abs().amax(-1) <= 1.0 + margin
    w = torch.where(inside, torch.ones((), device=th.device), torch.full((), float(background), device=th.device))
    return w.reshape(th.shape[0], 1, height, width)
