"""Shared fixtures: where the real data lives, small synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def lfw_path() -> Path | None:
    env = os.environ.get("FACEKIT_LFW")
    if env:
        return Path(env)
    default = SHARED / "lfw"
    return default if default.exists() else None


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    """The real LFW (``$FACEKIT_LFW``, else ``../shared/data/lfw``); skips when absent."""
    p = lfw_path()
    if p is None or not p.exists():
        pytest.skip("real LFW not found: set FACEKIT_LFW to a folder with lfw-deepfunneled.tgz and pairs.txt")
    return p


@pytest.fixture(scope="session")
def lfw(lfw_root):
    from facekit.data import open_lfw

    return open_lfw(lfw_root)


@pytest.fixture(scope="session")
def face_image(lfw) -> np.ndarray:
    """One real 250x250 LFW face."""
    return lfw.load("Aaron_Peirsol/Aaron_Peirsol_0001.jpg")


@pytest.fixture
def smooth_image() -> np.ndarray:
    """A synthetic 96x128 RGB image with smooth structure (codecs behave as on photos)."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    r = 127 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 127 + 90 * np.cos((x + y) / 17.0)
    b = 127 + 80 * np.sin(np.hypot(x - 64, y - 48) / 7.0)
    rng = np.random.default_rng(0)
    img = np.stack([r, g, b], -1) + rng.normal(0, 6, (96, 128, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (restored after it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
