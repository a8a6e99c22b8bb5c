"""Fitting the context prior of installed weights of the paper's codec (``facekit weights fit-prior``).

The learned codec of Bian et al. (arXiv:1907.01714) stores its 8-bit codes with PNG; beyond the paper,
a context prior fitted on the codes of the weights' own training images range-codes them
(:mod:`facekit.entropy_models`). Example::

    from facekit.training.prior import fit_prior

    meta = fit_prior("mse", "q3")   # counted on the training split, installed beside the weights
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..codecs.names import model_name
from ..entropy_models import ContextPrior, NeuralPrior
from ..errors import TrainingError, WeightsError
from ..fileio import PathLike
from ..zoo import install_prior, load_model, read_manifest
from .data import load_split


def fit_prior(
    variant: str,
    rate: str,
    *,
    folder: PathLike | None = None,
    root: PathLike | None = None,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    batch: int = 16,
    layout: int = 3,
    seed: int = 0,
    steps: int = 3000,
) -> dict[str, Any]:
    """Fit the context prior of installed weights on their training images and install it.

    The codes of the training images (the identity-disjoint LFW split minus the weights'
    held-out images, or ``images`` given directly) are counted into a
    :class:`~facekit.entropy_models.context.ContextPrior`; it is saved beside the weights.
    ``layout`` 3 (the default) chooses its neighbours on those codes
    (:meth:`~facekit.entropy_models.context.ContextPrior.select`, ``facekit-prior/3``); 2 fits
    the fixed left-neighbour layout (``facekit-prior/2``), 1 the row-by-row one
    (``facekit-prior/1``). ``layout`` 4 trains the integer networks of
    :class:`~facekit.entropy_models.neural.NeuralPrior` (``facekit-prior/4``) on those codes
    and on the codes of the images' mirror images (``steps`` batches, drawn by ``seed``).
    """
    if layout not in (1, 2, 3, 4):
        raise ValueError(f"prior layout must be 1, 2, 3 or 4, got {layout}")
    model, entry = load_model(variant, rate, folder=folder)
    if images is None:
        images, names = load_split(root)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    held = set(entry.get("training", {}).get("held_out_images", []))
    train_imgs = [im for im, n in zip(images, names, strict=True) if n not in held]
    if not train_imgs:
        raise TrainingError("no images to fit the prior on")
    t0 = time.time()
    if layout == 4:  # the network has more to learn than a table: the mirror images' codes double the data
        train_imgs = train_imgs + [np.ascontiguousarray(im[:, ::-1]) for im in train_imgs]
    codes: list[np.ndarray] = []
    by_size: dict[tuple[int, int], list[np.ndarray]] = {}
    for im in train_imgs:
        by_size.setdefault(im.shape[:2], []).append(im)
    for group in by_size.values():
        for i in range(0, len(group), batch):
            x = torch.from_numpy(np.stack(group[i : i + batch])).permute(0, 3, 1, 2).float().div(255)
            codes.extend(model.codes(x).numpy())
    info: dict[str, Any] = {}
    if layout == 4:
        if len({q.shape for q in codes}) != 1:
            raise TrainingError("a facekit-prior/4 prior is fitted on images of one size")
        prior: Any = NeuralPrior.fit(codes, model.rate_point.bits, steps=steps, seed=seed)
        info["fitted_on"] = (
            f"codes of {len(codes) // 2} training images and of their mirror images "
            "(the weights' training set, held-out images excluded)"
        )
        info["training"] = {**prior.training, "threads": torch.get_num_threads()}
    else:
        if layout == 3:
            prior = ContextPrior.select(codes, model.rate_point.bits)
        else:
            prior = ContextPrior.fit(codes, model.rate_point.bits, left=layout == 2)
        info["fitted_on"] = f"codes of {len(codes)} training images (the weights' training set, held-out images excluded)"
        info["alpha"] = prior.alpha
    info["fit_time_s"] = round(time.time() - t0, 1)
    if layout == 3:
        info["beta"] = prior.beta
        info["selection"] = (
            "greedy forward selection on the codes of a fifth of those images (seed 0) under a prior "
            "counted on the rest; held-out bytes per image after each step: "
            + ", ".join(f"{'+'.join(s['neighbours']) or 'none'} {s['held_out_bytes']}" for s in prior.selection)
        )
    meta = install_prior(prior, variant, rate, folder=folder, info=info)
    if read_manifest(folder)["models"][model_name(variant, rate)]["prior"]["sha256"] != meta["sha256"]:
        raise WeightsError(f"the prior of {model_name(variant, rate)} was replaced while it was installed")
    return meta
