"""What defines a training run of the learned codec: one config for both phases of the paper.

Bian et al. (arXiv:1907.01714) train in two phases. :class:`TrainConfig` holds phase one
(distortion only: random crops, warm-up and cosine learning rate) and every field the
training loop (:mod:`facekit.training.loop`) reads; :class:`JointConfig` is the same
config with the loss terms of phase two switched on (the recogniser's identity term,
optionally a rate term and a face-weighted distortion) and the defaults of fine-tuning
(whole aligned images, a constant learning rate with an optional drop to a tenth).

A config is stored in each checkpoint, ``config.json`` and ``summary.json``; a run resumes
only with the same config, except the fields in ``RESUMABLE_CHANGES``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..models.autoencoder import RatePoint, get_rate_point


@dataclass
class TrainConfig:
    """Phase one: distortion training of one rate point (``facekit train``).

    Example::

        cfg = TrainConfig(rate="q3", steps=2000, batch_size=32, loss="mse")
        train(cfg, "runs/q3")                      # facekit.training.train
    """

    rate: str = "q3"
    steps: int = 2000
    #: global batch (split across DDP processes); 32 crops of 128x128 fit a 16 GB GPU easily
    batch_size: int = 32
    crop: int = 128
    lr: float = 5e-4
    warmup: int = 50
    #: final learning rate as a fraction of ``lr`` (cosine decay)
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    seed: int = 0
    loss: str = "mse"
    lambda_msssim: float = 0.1
    #: bf16 autocast on CUDA (ignored on CPU)
    amp: bool = True
    checkpoint_every: int = 200
    log_every: int = 20
    #: validate every this many steps (0: only at the end)
    val_every: int = 500
    val_images: int = 16
    #: colour jitter strength (brightness/contrast/saturation, +-)
    jitter: float = 0.1
    #: overrides of the rate point's fields (e.g. {"dec_widths": [16, 8]} for tests)
    arch: dict[str, Any] = field(default_factory=dict)
    #: start from these weights (a run's model.pt or a shipped weights file)
    init: str | None = None

    #: fields that may change when a run is resumed (everything else must match)
    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = ("steps", "checkpoint_every", "log_every", "val_every")
    #: the name of the phase, recorded in the run's summary
    PHASE: ClassVar[str] = "distortion"

    def rate_point(self) -> RatePoint:
        """The architecture of this rate point, with ``arch``'s overrides."""
        rp = get_rate_point(self.rate)
        if self.arch:
            changes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.arch.items()}
            rp = rp.replace(**changes)
        return rp

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values."""
        return dataclasses.asdict(self)

    def lr_factor(self, step: int) -> float:
        """The learning rate of ``step`` as a fraction of ``lr``: linear warm-up, then cosine
        decay to ``min_lr_ratio``."""
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        t = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def at_last_fifth(self, step: int) -> TrainConfig:
        """The config from ``step`` on, once four fifths of a time limit have passed (unchanged here)."""
        return self


@dataclass
class JointConfig(TrainConfig):
    """Phase two: joint fine-tuning with a face recogniser (``facekit joint``).

    The distortion term is phase one's (``loss``: MSE, or MSE plus MS-SSIM), weighted by
    ``lambda_mse``. It trains on whole aligned images, so ``crop``, ``arch`` and ``init``
    are not read (the caller passes the model, initialised from the distortion weights).

    The loss is ``lambda_mse * MSE + lambda_id * D(f(x), f(x_hat)) [+ lambda_rate * bpp]``
    (:class:`facekit.training.losses.Objective`); training starts from the distortion
    weights of the same rate point. Example::

        cfg = JointConfig(rate="q3", steps=300, lambda_id=0.02)
        finetune_joint(cfg, model, "runs/joint-q3", data, recognizer=rec)
    """

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    #: no warm-up: the learning rate is ``lr`` (a tenth of it from ``lr_drop_at``)
    warmup: int = 0
    amp: bool = False
    checkpoint_every: int = 50
    log_every: int = 10
    val_every: int = 0
    jitter: float = 0.05
    lambda_mse: float = 1.0
    lambda_id: float = 0.02
    #: weight of the rate term (bits per pixel under the starting weights' context prior,
    #: :mod:`facekit.entropy_models.rate`); 0 trains without it, as Bian et al. do
    lambda_rate: float = 0.0
    identity: str = "squared"
    recognizer: str = "dlib-resnet"
    finetune_recognizer: bool = False
    #: weight of the squared error of pixels outside the face chip (1: every pixel alike,
    #: as Bian et al.; below 1: the ``jointface`` variant, :func:`facekit.training.identity.face_weights`)
    background_weight: float = 1.0
    #: the step from which the learning rate is a tenth of ``lr`` (0: never)
    lr_drop_at: int = 0

    PHASE: ClassVar[str] = "joint"

    def lr_factor(self, step: int) -> float:
        """1, or 0.1 from ``lr_drop_at`` on (when set)."""
        return 0.1 if self.lr_drop_at and step >= self.lr_drop_at else 1.0

    def at_last_fifth(self, step: int) -> JointConfig:
        """The config from ``step`` on, once four fifths of a time limit have passed: the
        learning rate drops to a tenth there, unless ``lr_drop_at`` already says where."""
        return self if self.lr_drop_at else dataclasses.replace(self, lr_drop_at=step)

    def variant(self) -> str:
        """The shipped variant a run of this config becomes: ``jointface`` (face-weighted
        distortion), ``jointrate`` (rate term) or ``joint`` (the paper's phase two)."""
        if self.background_weight != 1.0:
            return "jointface"
        return "jointrate" if self.lambda_rate else "joint"
