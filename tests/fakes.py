"""Small stand-ins shared by tests: an LFW-layout folder and a cheap recogniser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facekit.recognition.align import FaceLocation
from facekit.recognition.base import Recognizer


def make_faces(root: Path, people: int = 6, per_person: int = 3, size: int = 64, seed: int = 0) -> Path:
    """An LFW-layout folder of synthetic 'faces' (one smooth pattern per person + noise) and a
    ``pairs.txt`` with 2 folds of 2 matched + 2 mismatched pairs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    names = []
    for p in range(people):
        person = f"Person_{chr(65 + p)}"
        (root / person).mkdir(parents=True, exist_ok=True)
        f = rng.uniform(2, 6, 3)
        ph = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(f[c] * x * 6 + ph[c]) * np.cos(f[(c + 1) % 3] * y * 4) for c in range(3)], -1)
        for i in range(1, per_person + 1):
            img = 127 + 90 * base + rng.normal(0, 8, base.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / person / f"{person}_{i:04d}.jpg", quality=95)
        names.append(person)
    lines = ["2\t2"]
    for fold in range(2):
        a, b = names[2 * fold], names[2 * fold + 1]
        lines += [f"{a}\t1\t2", f"{b}\t2\t3", f"{a}\t1\t{b}\t1", f"{a}\t3\t{names[4 + fold]}\t2"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


class TinyRecognizer(Recognizer):
    """A deterministic 'recogniser': average-pooled colours of a centred crop, as a vector."""

    name = "tiny"
    chip_size = 16
    embedding_dim = 3 * 16
    distance = "euclidean"
    threshold = 1.0
    alignment_id = "tiny-centre"

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 16, 3 * 16, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(48) + 0.01 * torch.randn(48, 48, generator=torch.Generator().manual_seed(0)))

    def locate(self, image: np.ndarray) -> FaceLocation:
        theta = np.array([[0.8, 0, 0], [0, 0.8, 0]], np.float32)
        return FaceLocation(theta, np.eye(3)[:2], np.zeros((5, 2)), np.zeros(4), "hog", image.shape[:2])

    def find_transform(self, image: np.ndarray) -> np.ndarray:
        return self.locate(image).theta

    def read_original(self, path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB"))

    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, (images.shape[0], 3, 16, 16), align_corners=True)
        return F.grid_sample(images, grid, align_corners=True)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        v = F.adaptive_avg_pool2d(chips, 4).flatten(1)
        return self.proj(v) * 4
