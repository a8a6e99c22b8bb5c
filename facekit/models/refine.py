"""Encoder-side latent refinement for :class:`~facekit.models.hyperprior.FaceHyperprior`.

A trained analysis transform ``g_a`` gives, in one pass, a latent that is good on average
over the training images, not the best one for the image at hand: the *amortisation gap*
(Campos, Meierhans, Djelouah & Schroers, "Content adaptive optimization for neural image
compression", CVPR workshops 2019; Yang, Bamler & Mandt, "Improving inference for neural
image compression", NeurIPS 2020). :func:`refine_latent` narrows it: starting from
``g_a(x) * gains(t)``, it takes a few Adam steps on the latent itself, the networks frozen,
on the objective the model was trained on, ``lambda(t) * 255**2 * MSE + bpp``
(:func:`rate_lambda`), with training's relaxations (uniform noise for the rate,
straight-through rounding for the distortion; :meth:`FaceHyperprior.from_latent`) and a
learning rate that falls linearly to zero.

Only the encoder changes: :meth:`FaceHyperprior.compress` codes the refined latent
(``latent=``) into an ordinary string, and every decoder reads it. The noise comes from a
generator seeded per call, so one image, rate and thread count give the same file.

Example::

    y = refine_latent(model, x, 0.5, rate_lambda(0.5, 1e-5, 0.25))
    strings = model.compress(x, 0.5, latent=y)["strings"]
"""

from __future__ import annotations

import math

import torch

from .hyperprior import RATE_STEPS, FaceHyperprior, quantise_rate

#: the default number of Adam steps and the starting learning rate (steps of the latent, whose
#: quantisation bin is 1); measured on LFW pair images in results/README.md's model card
STEPS, LR = 10, 0.02


def rate_lambda(t: float, lambda_min: float, lambda_max: float) -> float:
    """``lambda(t)``: log-linear from ``lambda_min`` (``t = 0``, fewest bits) to ``lambda_max`` (``t = 1``).

    Example: ``rate_lambda(0.5, 1e-4, 1e-2)`` -> 0.001.
    """
    return math.exp(math.log(lambda_min) + t * (math.log(lambda_max) - math.log(lambda_min)))


def refine_latent(model: FaceHyperprior, x: torch.Tensor, rate: float | str, lmbda: float,
                  steps: int = STEPS, lr: float = LR, seed: int = 0) -> torch.Tensor:
    """The latent of ``x`` (``(B, 3, H, W)`` in [0, 1]) refined for rate ``rate`` by ``steps`` Adam steps.

    Args:
        model: the codec's model (its weights are not changed).
        x: the images.
        rate: the rate parameter ``t`` or a preset name, as :meth:`FaceHyperprior.compress` takes it.
        lmbda: the distortion weight at that rate, ``lambda(t)`` of the model's training
            (:func:`rate_lambda` of its recipe's ``lambda_min`` and ``lambda_max``).
        steps: Adam steps (0: ``g_a``'s latent as it is).
        lr: the first step's learning rate, falling linearly to zero.
        seed: seeds the relaxation's noise.

    Returns:
        The gain-scaled latent for ``model.compress(x, rate, latent=...)``.
    """
    t = torch.full((x.shape[0],), quantise_rate(rate) / RATE_STEPS, dtype=x.dtype, device=x.device)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    with torch.enable_grad(), torch.inference_mode(False):
        weights = [p for p in model.parameters() if p.requires_grad]
        for p in weights:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                y = model.analysis(x, t).detach()
            y.requires_grad_(True)
            opt = torch.optim.Adam([y], lr=lr)
            pixels = x.shape[-2] * x.shape[-1] * x.shape[0]
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = lr * (1 - step / steps)
                out = model.from_latent(y, t, x.shape[-2:], generator)
                bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
                loss = lmbda * 255.0**2 * torch.mean((out["x_hat"] - x) ** 2) + bits / pixels
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            for p in weights:
                p.requires_grad_(True)
            model.train(was_training)
    return y.detach()
