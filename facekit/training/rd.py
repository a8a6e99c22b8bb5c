"""Rate-distortion training of the second-generation codec (:mod:`facekit.models.hyperprior`).

The one training loop (:func:`facekit.training.loop.fit`) trains the codec end to end
under its own entropy model, one model for every rate (Cui et al. 2021): each batch the
model draws a rate parameter ``t`` uniformly in ``[0, 1]`` and the loss is
:class:`~facekit.training.losses.JointLoss`'s ``lambda_mse * MSE + lambda_rate * bpp`` with
``lambda_rate = 1`` and ``lambda_mse = 255**2 * lambda(t)``, where ``lambda(t)`` runs
log-linearly from ``lambda_min`` (``t = 0``, fewest bits) to ``lambda_max`` (CompressAI's
convention, ``lambda * 255**2 * MSE + bpp``). The bits are the model's likelihoods of
``y`` and ``z``. Validation codes held-out images for real (``compress``/``decompress``)
at each rate of ``val_rates`` (default ``t`` = 0, 0.5 and 1). Example::

    from facekit.training.rd import RDConfig, train_rd

    summary = train_rd(RDConfig(steps=300, batch_size=8, crop=128), "runs/hp")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..metrics import psnr_torch
from ..models.hyperprior import FaceHyperprior, HyperpriorArch
from ..models.refine import rate_lambda
from ..threads import set_threads
from .config import TrainConfig
from .data import training_sets
from .loop import fit, seed_everything, training_device
from .losses import JointLoss, Objective


@dataclass
class RDConfig(TrainConfig):
    """Variable-rate ``lambda * D + R`` training of :class:`FaceHyperprior` (``arch``: its widths)."""

    rate: str = "variable"
    steps: int = 3000
    batch_size: int = 8
    crop: int = 128
    lr: float = 3e-4
    warmup: int = 20
    min_lr_ratio: float = 0.1
    val_every: int = 0
    val_images: int = 8
    jitter: float = 0.05
    #: lambda at t = 0 and t = 1 (``lambda * 255**2 * MSE + bpp``)
    lambda_min: float = 0.0015
    lambda_max: float = 0.08
    #: the rates ``t`` at which validation codes the held-out images (``history.csv``'s curve)
    val_rates: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])

    PHASE: ClassVar[str] = "rate-distortion"
    #: validation settings, too, may change when a run is resumed (they do not touch training)
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = (*TrainConfig.RESUMABLE_CHANGES, "val_rates")

    def rate_point(self) -> HyperpriorArch:  # type: ignore[override]
        """The architecture, with ``arch``'s overrides."""
        return HyperpriorArch.from_dict({**HyperpriorArch().to_dict(), **self.arch})

    def lmbda(self, t: float) -> float:
        """``lambda(t)``: log-linear from ``lambda_min`` to ``lambda_max``."""
        return rate_lambda(t, self.lambda_min, self.lambda_max)


class RateDistortionObjective:
    """``objective(x, out, theta)`` for the loop: the distortion weight set from the batch's rate.

    ``objective`` (default: :class:`~facekit.training.losses.Objective` of ``MSE + bpp``) holds
    the terms; each batch its distortion weight becomes ``255**2 * lambda(t)``, so phase two
    (:mod:`facekit.training.jointrd`) adds the identity term and face weights to the same sum.
    """

    def __init__(self, cfg: RDConfig, objective: Objective | None = None) -> None:
        self.cfg = cfg
        self.objective = objective or Objective(JointLoss(lambda_mse=1.0, lambda_rate=1.0))

    @property
    def needs_theta(self) -> bool:
        """Whether a batch must come with its face transforms."""
        return self.objective.needs_theta

    def __call__(self, x: torch.Tensor, out: Mapping[str, Any], theta: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t = float(out["rate"].float().mean())
        self.objective.loss.lambda_mse = 255.0**2 * self.cfg.lmbda(t)
        terms = self.objective(x, out, theta)
        terms["t"] = torch.tensor(t)
        return terms


#: ``embed(index, image)``: a recogniser's embeddings ``(1, D)`` of held-out image ``index`` (or its reconstruction)
EmbedFn = Callable[[int, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_rd(
    model: FaceHyperprior, images: Sequence[np.ndarray], rates: Sequence[float] = (0.0, 0.5, 1.0), embed: EmbedFn | None = None
) -> dict[str, float]:
    """Mean PSNR (8-bit rounded) and real bpp of whole images coded at each rate; with ``embed``,
    also the mean cosine similarity of the embeddings of each original and its reconstruction
    (``val_idcos_t*``) and their mean Euclidean distance (``val_iddist_t*``; dlib's ResNet calls
    two faces the same person below 0.6), the identity figures of Bian et al.'s phase two."""
    if not images:
        return {}
    was_training = model.training
    model.eval().freeze()
    dev = next(model.parameters()).device
    row: dict[str, float] = {}
    originals: dict[int, torch.Tensor] = {}
    for t in rates:
        ps, bpps, cos, dist = [], [], [], []
        for i, im in enumerate(images):
            x = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float().div(255).to(dev)
            enc = model.compress(x, t)
            x_hat = torch.round(model.decompress(enc["strings"], enc["shape"])["x_hat"].to(dev) * 255) / 255
            ps.append(float(psnr_torch(x, x_hat)[0]))
            bpps.append(8.0 * len(enc["strings"][0]) / (im.shape[0] * im.shape[1]))
            if embed is not None:
                if i not in originals:
                    originals[i] = embed(i, x)
                e, e_hat = originals[i], embed(i, x_hat)
                cos.append(float(torch.nn.functional.cosine_similarity(e, e_hat, dim=1)[0]))
                dist.append(float(torch.linalg.vector_norm(e - e_hat, dim=1)[0]))
        row[f"val_psnr_t{t:g}"] = float(np.mean(ps))
        row[f"val_bpp_t{t:g}"] = float(np.mean(bpps))
        if cos:
            row[f"val_idcos_t{t:g}"] = float(np.mean(cos))
            row[f"val_iddist_t{t:g}"] = float(np.mean(dist))
    model.train(was_training)
    return row


def train_rd(
    cfg: RDConfig,
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train :class:`FaceHyperprior` for rate and distortion; returns the summary (also ``summary.json``).

    Data: ``images``/``names``, else LFW's identity-disjoint training split under ``root``
    (or ``$FACEKIT_LFW``); the last ``cfg.val_images`` (by a hash of the name) are held out.
    ``time_limit_s`` ends the run after that much training time (:func:`~facekit.training.loop.fit`).
    """
    if threads:
        set_threads(int(threads))
    dev = training_device(device)
    data, val_imgs, val_names = training_sets(cfg.val_images, images, names, root)
    seed_everything(cfg.seed)
    model = FaceHyperprior(cfg.rate_point())
    return fit(
        cfg, model, out_dir,  # type: ignore[arg-type]
        batches=lambda step, rank, world: (data.batch(step, cfg.batch_size, cfg.seed, cfg.crop, cfg.jitter, rank, world), None),
        objective=RateDistortionObjective(cfg),  # type: ignore[arg-type]
        validate=lambda m: evaluate_rd(m, val_imgs, cfg.val_rates),  # type: ignore[arg-type]
        device=dev, record={"train_images": len(data), "val_images": val_names},
        resume=resume, stop_after=stop_after, time_limit_s=time_limit_s, verbose=verbose,
    )
