"""Training the learned codec of Bian et al. (arXiv:1907.01714): one loop, two phases.

Phase one (:func:`train`, ``facekit train``) trains the compression and reconstruction
networks of one rate point for distortion; phase two (:func:`finetune_joint`,
``facekit joint``) fine-tunes them jointly with a face recogniser, so that the
reconstruction keeps its identity. Both are runs of the same loop
(:func:`facekit.training.loop.fit`: checkpoints, exact resume, history, time limit, DDP);
phase two is phase one with more loss terms. The modules:

* :mod:`~facekit.training.config`: :class:`TrainConfig` and :class:`JointConfig`;
* :mod:`~facekit.training.data`: training images, augmentation, the LFW split, training packs;
* :mod:`~facekit.training.losses`: distortion, MS-SSIM, identity and rate terms in one sum;
* :mod:`~facekit.training.identity`: the recogniser's identity term and face weights;
* :mod:`~facekit.training.loop`: the loop;
* :mod:`~facekit.training.phases`: the two phases as runs of the loop;
* :mod:`~facekit.training.rd`: rate-distortion training of the second-generation codec;
* :mod:`~facekit.training.jointrd`: its joint phase (rate, face-weighted distortion, identity);
* :mod:`~facekit.training.recipe`: ``recipes/*.toml``, one per shipped model: run both phases,
  resume, install (``facekit train --recipe``, ``make weights``); read by
  :mod:`~facekit.training.recipe_toml`;
* :mod:`~facekit.training.curve`: a run's held-out curve: reproduced? converged?
* :mod:`~facekit.training.prior`: the context prior fitted on installed weights' training codes
  (``facekit weights fit-prior``).

Finished runs become shipped weights through :mod:`facekit.zoo` (``facekit weights install``).
Example::

    from facekit.training import TrainConfig, train

    summary = train(TrainConfig(rate="q3", steps=20, batch_size=4, crop=64), "runs/q3")
"""

from .config import JointConfig, TrainConfig
from .data import (
    AlignedImageSet,
    ImageSet,
    load_split,
    read_split_pack,
    split_with_transforms,
    write_split_pack,
)
from .identity import IdentityLoss, face_weights, mirror_theta
from .loop import fit
from .losses import JointLoss, Objective, distortion_loss
from .phases import finetune_joint, train

__all__ = [
    "AlignedImageSet",
    "IdentityLoss",
    "ImageSet",
    "JointConfig",
    "JointLoss",
    "Objective",
    "TrainConfig",
    "distortion_loss",
    "face_weights",
    "finetune_joint",
    "fit",
    "load_split",
    "mirror_theta",
    "read_split_pack",
    "split_with_transforms",
    "train",
    "write_split_pack",
]
