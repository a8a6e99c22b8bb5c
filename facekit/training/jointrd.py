"""Phase two of the second-generation codec: rate, face-weighted distortion and identity in one loss.

Bian et al. (arXiv:1907.01714, Sec. 3.2) fine-tune their distortion-trained codec jointly
with a frozen face recogniser, so that reconstructions keep their identity. Here the codec
is :class:`~facekit.models.hyperprior.FaceHyperprior` after phase one
(:mod:`facekit.training.rd`), and phase two starts from its final weights and minimises,
for the rate ``t`` the model draws for each batch,

    255**2 * lambda(t) * D_face(x, x_hat) + bpp + lambda_id * |f(A(x, T)) - f(A(x_hat, T))|**2

* ``lambda(t)``: phase one's log-linear curve (the same ``lambda_min``, ``lambda_max``), so
  that ``t`` keeps its meaning; ``bpp``: the model's own likelihoods of ``y`` and ``z``.
  The rate term stays because this codec pays for every bit (the paper's fixed-size code
  does not need it): without it the identity term would buy identity with bits.
* ``D_face``: the squared error with pixels outside the recogniser's face chip weighted
  ``background_weight`` (:func:`~facekit.training.identity.face_weights`; 1 is the paper's
  plain MSE).
* ``f``: dlib's ResNet (the port in :mod:`facekit.recognition`), frozen; ``A(., T)`` its
  differentiable alignment with the transform ``T`` that dlib's detector and five
  landmarks find on the *original* (cached on disk,
  :func:`facekit.recognition.find_alignments`) (:class:`~facekit.training.identity.IdentityLoss`).

It trains on whole aligned images (LFW's 250x250 faces; ``crop`` is not read), with flips
(the transform mirrored) and colour jitter (:class:`~facekit.training.data.AlignedImageSet`),
in the one loop (:func:`facekit.training.loop.fit`): seeded, resumable bit for bit on CPU.
It holds out phase one's images (chosen by a hash of the name) and codes them for real
at ``t`` = 0, 0.5 and 1: PSNR, bpp and ``val_idcos_t*``, the mean cosine similarity of
the recogniser's embeddings of each original and its reconstruction. Example::

    from facekit.training.jointrd import JointRDConfig, train_joint_rd

    train_joint_rd(JointRDConfig(steps=200), "runs/hp/joint", init="runs/hp/rd/model.pt")
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError
from ..models.hyperprior import FaceHyperprior, HyperpriorArch
from ..threads import set_threads
from .data import AlignedImageSet, held_out, split_with_transforms
from .identity import IdentityLoss
from .loop import fit, seed_everything, training_device
from .losses import JointLoss, Objective, unset
from .rd import RateDistortionObjective, RDConfig, evaluate_rd


@dataclass
class JointRDConfig(RDConfig):
    """Phase two of :class:`FaceHyperprior`: :class:`RDConfig` (its ``lambda(t)``, schedule and
    widths) plus the identity term and the face-weighted distortion; whole images, no crops."""

    steps: int = 2000
    lr: float = 5e-5
    #: weight of the identity term (``identity`` distance of ``recognizer``'s embeddings)
    lambda_id: float = 1.0
    #: weight of the squared error outside the face chip (1: every pixel alike, as Bian et al.)
    background_weight: float = 1.0
    identity: str = "squared"
    recognizer: str = "dlib-resnet"

    PHASE: ClassVar[str] = "joint-rate-distortion"


def joint_objective(cfg: JointRDConfig, identity: IdentityLoss) -> RateDistortionObjective:
    """``255**2 lambda(t) D_face + bpp + lambda_id * identity`` for the loop (theta needed)."""
    loss = JointLoss(lambda_mse=1.0, lambda_rate=1.0, lambda_id=cfg.lambda_id, identity_fn=unset)
    return RateDistortionObjective(cfg, Objective(loss, identity, cfg.background_weight))


def aligned_sets(
    recognizer: Any,
    val_images: int,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> tuple[AlignedImageSet, AlignedImageSet]:
    """``(training, held out)`` aligned images: ``images``/``names`` given directly (transforms found
    by ``recognizer.find_transform``), else LFW's identity-disjoint split under ``root`` (transforms
    cached); the held-out ones are phase one's (:func:`~facekit.training.data.held_out`)."""
    if images is None:
        images, thetas, names = split_with_transforms(recognizer, root, progress=False)
    else:
        names = list(names) if names is not None else [f"image{i:05d}" for i in range(len(images))]
        thetas = [np.asarray(recognizer.find_transform(np.asarray(im)), np.float32) for im in images]
    data = AlignedImageSet(images, thetas, names)
    held = held_out(data.names, val_images)
    return (data.subset([i for i, n in enumerate(data.names) if n not in held]),
            data.subset([i for i, n in enumerate(data.names) if n in held]))


def load_start(path: str | os.PathLike[str], arch: HyperpriorArch) -> tuple[FaceHyperprior, str]:
    """Phase one's final weights (a run's ``model.pt``) as the start, and the sha256 of the bytes
    they were loaded from; a TrainingError when the file cannot be read or holds other weights."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        start = HyperpriorArch.from_dict(blob["rate_point"])
    except Exception as e:  # noqa: BLE001 - any unreadable file means no start
        raise TrainingError(f"the joint phase starts from phase one's weights, but {p} cannot be read: {e}") from e
    if start != arch:
        raise TrainingError(f"{p} holds a model of other widths than the joint phase's ({start} != {arch})")
    model = FaceHyperprior(arch)
    try:
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # noqa: BLE001 - missing, extra or misshapen tensors alike
        raise TrainingError(f"{p} does not hold phase one's weights of {arch}: {e}") from e
    return model, hashlib.sha256(raw).hexdigest()


def train_joint_rd(
    cfg: JointRDConfig,
    out_dir: str | os.PathLike[str],
    init: str | os.PathLike[str],
    *,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    recognizer: nn.Module | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Fine-tune phase one's weights (``init``, a ``model.pt``) with the joint loss; returns the summary.

    Data as :func:`aligned_sets`; ``recognizer`` defaults to ``cfg.recognizer`` (frozen).
    ``resume``, ``stop_after`` and ``time_limit_s`` are those of :func:`~facekit.training.loop.fit`.
    The sha256 of ``init`` is the run's origin (kept in its checkpoint and ``config.json``):
    a resume from other starting weights (phase one trained further, say) is a TrainingError.
    """
    if threads:
        set_threads(int(threads))
    dev = training_device(device)
    if recognizer is None:
        from ..recognition import get_recognizer

        recognizer = get_recognizer(cfg.recognizer)
    recognizer = recognizer.to(dev).eval()
    train_data, val = aligned_sets(recognizer, cfg.val_images, images, names, root)
    seed_everything(cfg.seed)
    model, init_sha = load_start(init, cfg.rate_point())
    ident = IdentityLoss(recognizer, cfg.identity)
    val_thetas = torch.from_numpy(val.thetas).to(dev)

    def embed(i: int, x: torch.Tensor) -> torch.Tensor:
        return recognizer.embed(x.float(), val_thetas[i : i + 1])  # type: ignore[operator]

    val_images = [im.permute(1, 2, 0).numpy() for im in val.images]
    return fit(
        cfg, model, out_dir,  # type: ignore[arg-type]
        batches=lambda step, rank, world: train_data.batch(step, cfg.batch_size, cfg.seed, cfg.jitter, rank, world),
        objective=joint_objective(cfg, ident),  # type: ignore[arg-type]
        validate=lambda m: evaluate_rd(m, val_images, cfg.val_rates, embed=embed),  # type: ignore[arg-type]
        device=dev, record={"train_images": len(train_data), "val_images": val.names, "init_sha256": init_sha,
                            "alignment": str(getattr(recognizer, "alignment_id", ""))},
        origin={"init_sha256": init_sha}, resume=resume, stop_after=stop_after, time_limit_s=time_limit_s, verbose=verbose,
    )
