"""Training losses of the learned codec: distortion, identity and rate terms in one sum.

Bian et al. (arXiv:1907.01714) train the codec in two phases: first for distortion
(MSE between the face and its reconstruction), then jointly with a face recogniser so
that reconstructions keep their identity. :class:`JointLoss` is the one loss for both::

    loss = lambda_mse * MSE(x, x_hat)          (or the face-weighted MSE)
         + lambda_msssim * (1 - MS-SSIM(x, x_hat))
         + lambda_id * identity_fn(x, x_hat)
         + lambda_rate * bpp(likelihoods)

``identity_fn`` is any callable ``(x, x_hat) -> scalar tensor`` (for example the
distance between a recogniser's embeddings of the original and the reconstruction,
:class:`facekit.training.identity.IdentityLoss`); the rate term needs a model with an
entropy model (``out["likelihoods"]`` non-empty):
:meth:`FaceCodecNet.attach_rate <facekit.models.autoencoder.FaceCodecNet.attach_rate>` gives
one from a fitted context prior (:mod:`facekit.entropy_models.rate`).
Every term is returned in a dict, so a trainer can log each one. :class:`Objective` is
what the training loop calls per batch: phase one's :func:`distortion_loss`, or phase
two's terms with the identity term reading the batch's face transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import psnr_from_mse_torch
from .identity import IdentityLoss, face_weights

#: an identity term: (x, x_hat) -> scalar
IdentityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: the five scale weights of Wang et al. (2003)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error over everything, in float32."""
    return F.mse_loss(x_hat.float(), x.float())


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ch = x.shape[1]
    mu_x = F.conv2d(x, win, groups=ch)
    mu_y = F.conv2d(y, win, groups=ch)
    sxx = F.conv2d(x * x, win, groups=ch) - mu_x**2
    syy = F.conv2d(y * y, win, groups=ch) - mu_y**2
    sxy = F.conv2d(x * y, win, groups=ch) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    data_range: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    win_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) per image of a batch, with a Gaussian window.

    Uses as many of the five scales as the image size allows (the smallest scale must
    still hold the window); the weights of the scales used are renormalised.
    """
    x, x_hat = x.float(), x_hat.float()
    size = min(x.shape[-2:])
    win_size = min(win_size, size)
    scales = max(1, min(len(weights), 1 + int(math.floor(math.log2(size / win_size)))))
    w = torch.tensor(weights[:scales], device=x.device)
    w = w / w.sum()
    win = _gaussian_window(win_size, sigma, x.shape[1], x.device)
    values = []
    for i in range(scales):
        ssim, cs = _ssim_terms(x, x_hat, win, data_range)
        values.append(ssim.clamp_min(1e-6) if i == scales - 1 else cs.clamp_min(1e-6))
        if i < scales - 1:
            x = F.avg_pool2d(x, 2)
            x_hat = F.avg_pool2d(x_hat, 2)
    stacked = torch.stack(values, dim=1)
    return torch.prod(stacked ** w[None, :], dim=1)


def bpp_from_likelihoods(likelihoods: Mapping[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Estimated bits per pixel: ``sum(-log2 p) / num_pixels`` over every likelihood tensor."""
    total = sum(torch.log(lk.float().clamp_min(1e-9)).sum() for lk in likelihoods.values())
    return -total / (math.log(2) * num_pixels)


class JointLoss(nn.Module):
    """Weighted sum of distortion, identity and rate terms; returns every term.

    ``forward(x, out)`` takes the batch and the model's output dict (``x_hat`` and, for
    the rate term, ``likelihoods``) and returns ``{"loss", "mse", "psnr", ...}`` with an
    entry for every term whose weight is non-zero (``ms_ssim``, ``identity``, ``bpp``).
    """

    def __init__(
        self,
        lambda_mse: float = 1.0,
        lambda_id: float = 0.0,
        identity_fn: IdentityFn | None = None,
        lambda_rate: float = 0.0,
        lambda_msssim: float = 0.0,
    ) -> None:
        super().__init__()
        if lambda_id and identity_fn is None:
            raise ValueError("lambda_id > 0 needs an identity_fn(x, x_hat) -> scalar")
        self.lambda_mse = float(lambda_mse)
        self.lambda_id = float(lambda_id)
        self.identity_fn = identity_fn
        self.lambda_rate = float(lambda_rate)
        self.lambda_msssim = float(lambda_msssim)

    def extra_repr(self) -> str:
        return (
            f"lambda_mse={self.lambda_mse}, lambda_msssim={self.lambda_msssim}, "
            f"lambda_id={self.lambda_id}, lambda_rate={self.lambda_rate}"
        )

    def forward(
        self, x: torch.Tensor, out: Mapping[str, Any], weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``weight`` (broadcastable to ``x``, e.g. ``(B, 1, H, W)``) weighs each pixel's squared
        error in the distortion term (``mse_weighted``); ``mse`` and ``psnr`` stay unweighted."""
        x_hat = out["x_hat"].float()
        x = x.float()
        terms: dict[str, torch.Tensor] = {}
        err = mse(x, x_hat)
        terms["mse"] = err
        if weight is None:
            loss = self.lambda_mse * err
        else:
            if weight.dim() != x.dim():
                raise ValueError(f"pixel weights need {x.dim()} dimensions like x, got shape {tuple(weight.shape)}")
            weighted = (weight.to(x.dtype) * (x_hat - x) ** 2).mean()
            terms["mse_weighted"] = weighted
            loss = self.lambda_mse * weighted
        if self.lambda_msssim:
            ms = ms_ssim(x, x_hat.clamp(0, 1)).mean()
            terms["ms_ssim"] = ms
            loss = loss + self.lambda_msssim * (1.0 - ms)
        if self.lambda_id:
            assert self.identity_fn is not None
            ident = self.identity_fn(x, x_hat)
            terms["identity"] = ident
            loss = loss + self.lambda_id * ident
        if self.lambda_rate:
            likelihoods = out.get("likelihoods") or {}
            if not likelihoods:
                raise ValueError("lambda_rate > 0 needs a model with an entropy model (out['likelihoods'] is empty)")
            bpp = bpp_from_likelihoods(likelihoods, x.shape[0] * x.shape[-2] * x.shape[-1])
            terms["bpp"] = bpp
            loss = loss + self.lambda_rate * bpp
        terms["psnr"] = psnr_from_mse_torch(err.detach())
        terms["loss"] = loss
        return terms


def distortion_loss(metric: str = "mse", lambda_msssim: float = 0.1) -> JointLoss:
    """The phase-one loss: ``"mse"``, or ``"mse+ms-ssim"`` (MSE plus ``lambda_msssim * (1 - MS-SSIM)``)."""
    if metric == "mse":
        return JointLoss(lambda_mse=1.0)
    if metric in ("mse+ms-ssim", "mse+msssim"):
        return JointLoss(lambda_mse=1.0, lambda_msssim=lambda_msssim)
    raise ValueError(f"unknown distortion metric {metric!r}; use 'mse' or 'mse+ms-ssim'")


class Objective:
    """The loss of one training batch, as the training loop calls it: ``objective(x, out, theta)``.

    Phase one is ``Objective(distortion_loss("mse"))``. Phase two adds ``identity`` (the
    recogniser's :class:`~facekit.training.identity.IdentityLoss`, given the batch's
    transforms ``theta``) with weight ``loss.lambda_id``, and with ``background_weight < 1``
    weighs the squared error outside the face chip that much
    (:func:`~facekit.training.identity.face_weights`). Example::

        objective = Objective(JointLoss(lambda_id=0.02, identity_fn=unset), IdentityLoss(rec))
        terms = objective(x, model(x), theta)     # {"loss", "mse", "psnr", "identity", ...}
    """

    def __init__(self, loss: JointLoss, identity: IdentityLoss | None = None, background_weight: float = 1.0) -> None:
        if loss.lambda_id and identity is None:
            raise ValueError("an identity term (lambda_id > 0) needs the recogniser's IdentityLoss")
        self.loss = loss
        self.identity = identity
        self.background_weight = float(background_weight)

    @property
    def needs_theta(self) -> bool:
        """Whether a batch must come with its face transforms."""
        return self.identity is not None or self.background_weight != 1.0

    def __call__(self, x: torch.Tensor, out: Mapping[str, Any], theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.needs_theta and theta is None:
            raise ValueError("this objective needs the batch's face transforms (theta)")
        identity = self.identity
        if identity is not None:
            self.loss.identity_fn = lambda a, b: identity(a, b, theta)
        weight = None
        if self.background_weight != 1.0:
            weight = face_weights(theta, x.shape[-2], x.shape[-1], self.background_weight)
        return self.loss(x, out, weight)


def unset(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """A placeholder identity function for a :class:`JointLoss` that :class:`Objective` fills in per batch."""
    raise RuntimeError("the identity term is set per batch by Objective")
