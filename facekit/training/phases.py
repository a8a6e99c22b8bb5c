"""The two phases of Bian et al. (arXiv:1907.01714) as runs of the one training loop.

:func:`train` is phase one: it builds the compression and reconstruction networks of one
rate point and trains them for distortion (MSE, optionally plus MS-SSIM) on random crops
of faces whose identities the evaluation never sees, validating on a few held-out images
(chosen by a hash of the name). :func:`finetune_joint` is phase two: the same loop
(:func:`facekit.training.loop.fit`), started from the distortion weights, with the
recogniser's identity term added to the loss (and, beyond the paper, optionally a rate
term and a face-weighted distortion), on whole images with their face transforms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError
from ..metrics import psnr_from_mse, psnr_torch
from ..models.autoencoder import FaceCodecNet, RatePoint
from ..threads import set_threads
from .config import JointConfig, TrainConfig
from .data import AlignedImageSet, training_sets
from .identity import IdentityLoss, face_weights
from .loop import fit, seed_everything, training_device
from .losses import JointLoss, Objective, distortion_loss, unset


@torch.no_grad()
def evaluate(model: FaceCodecNet, images: Sequence[np.ndarray], device: torch.device) -> dict[str, float]:
    """Mean PSNR (dB) and real PNG bpp of whole images through compress/decompress."""
    if not images:
        return {}
    was_training = model.training
    model.eval()
    ps, bpps = [], []
    for im in images:
        x = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float().div(255).to(device)
        enc = model.compress(x, effort=1)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        x_hat = torch.round(x_hat * 255) / 255
        ps.append(float(psnr_torch(x, x_hat)[0]))
        bpps.append(8.0 * len(enc["strings"][0]) / (im.shape[0] * im.shape[1]))
    model.train(was_training)
    return {"val_psnr": float(np.mean(ps)), "val_png_bpp": float(np.mean(bpps))}


@torch.no_grad()
def validate(
    model: FaceCodecNet, ident: IdentityLoss, data: AlignedImageSet, idx: Sequence[int], device: torch.device
) -> dict[str, float]:
    """PSNR (rounded to 8 bits) of the whole image and of the face region (:func:`face_weights`),
    real PNG bpp and identity distance on held-out images."""
    if not idx:
        return {}
    was_training = model.training
    model.eval()
    ps, face_ps, bpps, ids = [], [], [], []
    for i in idx:
        x = (data.images[i : i + 1].float() / 255).to(device)
        th = torch.from_numpy(data.thetas[i : i + 1]).to(device)
        enc = model.compress(x, effort=1)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        x_hat = torch.round(x_hat.clamp(0, 1) * 255) / 255
        ps.append(psnr_from_mse(float(torch.mean((x - x_hat) ** 2)), peak=1.0))
        face = face_weights(th, x.shape[-2], x.shape[-1], 0.0, margin=0.0).to(device)
        face_mse = float(((x - x_hat) ** 2 * face).sum() / (face.sum() * x.shape[1]).clamp_min(1))
        face_ps.append(psnr_from_mse(face_mse, peak=1.0))
        bpps.append(8 * len(enc["strings"][0]) / (x.shape[-1] * x.shape[-2]))
        ids.append(float(torch.sqrt(((ident.recognizer.embed(x, th) - ident.recognizer.embed(x_hat, th)) ** 2).sum())))
    model.train(was_training)
    return {"val_psnr": float(np.mean(ps)), "val_face_psnr": float(np.mean(face_ps)),
            "val_png_bpp": float(np.mean(bpps)), "val_id_dist": float(np.mean(ids))}


def load_init(model: FaceCodecNet, path: str) -> None:
    """Initialise from a run's ``model.pt`` or a shipped weights file of the same rate point."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        rp = RatePoint.from_dict(blob["rate_point"])
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"--init {path} cannot be read as facekit weights: {e}") from e
    if rp != model.rate_point:
        raise TrainingError(f"--init {path} holds rate point {rp.name} with another architecture than {model.rate_point.name}")
    model.load_state_dict(sd)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    loss_fn: JointLoss | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Phase one: train one rate point for distortion; returns the summary (also in ``summary.json``).

    Data: ``images``/``names`` given directly, else ``images_dir`` (a folder of images),
    else the identity-disjoint LFW split under ``root`` (or ``$FACEKIT_LFW``). ``loss_fn``
    replaces the config's distortion loss. ``resume`` continues from
    ``out_dir/checkpoint.pt``; ``stop_after`` stops (after checkpointing) once that many
    steps are done in total, as an interruption would; ``threads`` sets torch's CPU threads.
    Example::

        summary = train(TrainConfig(rate="q3", steps=2000), "runs/q3")
    """
    if threads:
        set_threads(int(threads))
    dev = training_device(device)
    data, val_imgs, val_names = training_sets(cfg.val_images, images, names, root, images_dir)

    seed_everything(cfg.seed)
    model = FaceCodecNet(cfg.rate_point())
    if cfg.init and not resume:
        load_init(model, cfg.init)
    objective = Objective(loss_fn or distortion_loss(cfg.loss, cfg.lambda_msssim))
    return fit(
        cfg, model, out_dir,
        batches=lambda step, rank, world: (data.batch(step, cfg.batch_size, cfg.seed, cfg.crop, cfg.jitter, rank, world), None),
        objective=objective, validate=lambda m: evaluate(m, val_imgs, dev), device=dev,
        record={"train_images": len(data), "val_images": val_names},
        resume=resume, stop_after=stop_after, verbose=verbose,
    )


def finetune_joint(
    cfg: JointConfig,
    model: FaceCodecNet,
    out_dir: str | os.PathLike[str],
    data: AlignedImageSet,
    *,
    recognizer: nn.Module | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    threads: int | None = None,
    verbose: bool = True,
    rate_prior: Any | None = None,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Phase two: fine-tune ``model`` (initialised from its distortion weights) with the joint loss.

    The loss is ``lambda_mse * MSE + lambda_id * D(f(A(x, T)), f(A(x_hat, T)))``
    (:class:`~facekit.training.identity.IdentityLoss`; ``recognizer`` defaults to
    ``cfg.recognizer``, frozen unless ``cfg.finetune_recognizer``). With
    ``cfg.lambda_rate > 0`` it adds the code's bits per pixel under ``rate_prior`` (the
    context prior of the starting weights, held fixed, :class:`facekit.entropy_models.rate.ContextRate`);
    with ``cfg.background_weight < 1`` the squared error outside the face chip counts that
    much less. The last ``cfg.val_images`` images of ``data`` are held out.

    ``resume``, ``stop_after`` and ``time_limit_s`` are those of
    :func:`facekit.training.loop.fit`; under a time limit the learning rate drops to a tenth
    for the last fifth of the time unless ``cfg.lr_drop_at`` is set. Example::

        model, _ = facekit.zoo.load_model("mse", "q3")
        finetune_joint(JointConfig(rate="q3"), model, "runs/joint-q3", data)
    """
    if threads:
        set_threads(int(threads))
    dev = training_device(device)
    seed_everything(cfg.seed)
    if recognizer is None:
        from ..recognition import get_recognizer

        recognizer = get_recognizer(cfg.recognizer)
    recognizer = recognizer.to(dev)
    if cfg.finetune_recognizer:
        recognizer.requires_grad_(True)
    ident = IdentityLoss(recognizer, cfg.identity)
    if cfg.lambda_rate:
        if rate_prior is None:
            raise TrainingError("lambda_rate > 0 needs the context prior of the starting weights (rate_prior)")
        model.attach_rate(rate_prior)
    n_val = min(cfg.val_images, max(0, len(data) - 1))
    val_idx = list(range(len(data) - n_val, len(data)))
    train_data = data.head(len(data) - n_val)
    distortion = distortion_loss(cfg.loss, cfg.lambda_msssim)  # phase one's terms, then phase two's
    loss = JointLoss(lambda_mse=cfg.lambda_mse, lambda_msssim=distortion.lambda_msssim, lambda_id=cfg.lambda_id,
                     identity_fn=unset, lambda_rate=cfg.lambda_rate)
    try:
        return fit(
            cfg, model, out_dir,
            batches=lambda step, rank, world: train_data.batch(step, cfg.batch_size, cfg.seed, cfg.jitter, rank, world),
            objective=Objective(loss, ident, cfg.background_weight),
            validate=lambda m: validate(m, ident, data, val_idx, dev), device=dev,
            modules={"recognizer": recognizer} if cfg.finetune_recognizer else None,
            record={"train_images": len(train_data), "val_images": [data.names[i] for i in val_idx],
                    "pack": bool(getattr(data, "from_pack", False))},
            resume=resume, stop_after=stop_after, time_limit_s=time_limit_s, verbose=verbose,
        )
    finally:
        model.attach_rate(None)
