"""One digest of a module's weights, shared by the codec's fingerprint and the recognisers' cache ids."""

from __future__ import annotations

import hashlib

import torch


def update_with_state_dict(h: hashlib._Hash, module: torch.nn.Module) -> None:
    """Feed ``h`` every parameter and buffer of ``module``: sorted names, float32 values."""
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
