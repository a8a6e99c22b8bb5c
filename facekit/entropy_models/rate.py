"""A differentiable rate term from a fitted context prior, for joint training.

Bian et al. (arXiv:1907.01714) store the code as PNG and train without a rate term; the
rate is set by the code's size. The ``-entropy`` variants range-code the code with a
:class:`~facekit.entropy_models.context.ContextPrior` fitted after training.
:class:`ContextRate` turns that prior into the ``likelihoods`` of the CompressAI
contract, so :class:`~facekit.training.losses.JointLoss`'s ``lambda_rate`` term can push the
encoder toward codes the prior codes in fewer bits.

The value is exact: ``-log2`` of the likelihoods summed is the information the range
coder's length check counts (:meth:`ContextPrior.information`) for the hard codes
``q = round(y * (L - 1))``. The gradient is a straight-through one: each position's code
length is interpolated linearly between the two levels around the continuous ``y * (L -
1)`` (the contexts, which come from neighbouring hard codes, are held fixed), so ``y`` is
pulled toward the cheaper neighbouring level. The tables are those of the starting
weights and stay fixed in training; refit the prior on the trained weights' codes
afterwards.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .context import ContextPrior


class ContextRate(nn.Module):
    """``forward(y)`` -> likelihoods ``(B, C, h, w)`` of the codes of ``y`` in ``[0, 1]``.

    The tables are buffers that are not saved (``persistent=False``), so attaching a
    rate model changes neither a model's ``state_dict`` nor its fingerprint.
    """

    def __init__(self, prior: ContextPrior) -> None:
        super().__init__()
        if not isinstance(prior, ContextPrior):
            raise TypeError(
                f"the training rate term reads count tables ({ContextPrior.FORMAT_NEIGHBOURS} and earlier), not a "
                f"{getattr(prior, 'format', type(prior).__name__)} prior: fit a count prior for the starting weights "
                "(facekit weights fit-prior --layout 3) to train with lambda_rate"
            )
        self.prior = prior
        self.levels = prior.levels
        bits = torch.from_numpy(prior.code_lengths()).to(torch.float32)  # (C, K, L) code lengths in bits
        self.register_buffer("code_bits", bits, persistent=False)

    def extra_repr(self) -> str:
        return f"channels={self.code_bits.shape[0]}, levels={self.levels}, context={self.prior.describe()!r}"

    def contexts(self, q: torch.Tensor) -> torch.Tensor:
        """Context index of every position of integer codes ``(B, C, h, w)``: the range coder's own
        (:meth:`ContextPrior.contexts`, computed on the CPU; the codes are hard, so no gradient flows)."""
        arr = q.detach().long().cpu().numpy()
        out = np.stack([self.prior.contexts(a) for a in arr]) if len(arr) else np.zeros(arr.shape, np.int64)
        return torch.from_numpy(out).to(q.device)

    def code_length(self, y: torch.Tensor) -> torch.Tensor:
        """Bits of each position ``(B, C, h, w)``: exact value, straight-through gradient."""
        if y.dim() != 4 or y.shape[1] != self.code_bits.shape[0]:
            raise ValueError(f"expected codes (B, {self.code_bits.shape[0]}, h, w), got {tuple(y.shape)}")
        top = self.levels - 1
        u = y.float().clamp(0.0, 1.0) * top
        q = torch.round(u.detach())
        ctx = self.contexts(q)  # (B, C, h, w)
        table = self.code_bits[torch.arange(y.shape[1], device=y.device)[None, :, None, None], ctx]  # (B, C, h, w, L)
        hard = table.gather(-1, q.long().unsqueeze(-1)).squeeze(-1)
        lo = torch.floor(u.detach()).clamp(max=top - 1)
        t = u - lo
        r_lo = table.gather(-1, lo.long().unsqueeze(-1)).squeeze(-1)
        r_hi = table.gather(-1, (lo.long() + 1).unsqueeze(-1)).squeeze(-1)
        soft = r_lo + t * (r_hi - r_lo)
        return hard + (soft - soft.detach())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.exp2(-self.code_length(y))
