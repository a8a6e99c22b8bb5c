"""Training data of the learned codec, with augmentation that is a pure function of the seed.

Phase one of Bian et al. (arXiv:1907.01714) trains for distortion on random crops
(:class:`ImageSet`); phase two fine-tunes jointly with a face recogniser on whole images
with the face transform found on each original (:class:`AlignedImageSet`). Both train on
faces the evaluation never sees: the identity-disjoint split of LFW (people in no pair of
``pairs.txt``, 1,549 images of 1,468 people, :func:`load_split`,
:func:`split_with_transforms`), or any folder of images (:func:`load_images_folder`).
A training pack (:func:`write_split_pack`) carries that split, with its transforms, to a
machine without LFW or dlib's detector.

Every random choice of a sample (which image, crop position, flip, colour jitter) comes
from a generator seeded by ``(seed, sample position)``, so the data order is a function of
the seed and the number of samples seen, and a resumed run sees the same batches as one
that never stopped. With ``world`` processes, process ``rank`` takes samples
``rank, rank + world, ...`` of each global batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TrainingError
from ..fileio import atomic_path
from ..imageio import open_image
from .identity import mirror_theta

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
PACK_FORMAT = "facekit-joint-pack/1"


def mix(*values: int) -> int:
    """A 63-bit seed from integers (a hash, so nearby inputs give unrelated seeds)."""
    h = hashlib.sha256(repr(values).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class ImageSet:
    """Training images in memory (uint8 ``(H, W, 3)`` each) plus deterministic augmentation."""

    def __init__(self, images: Sequence[np.ndarray], names: Sequence[str]) -> None:
        if not images:
            raise TrainingError("no training images")
        self.images = [torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)) for im in images]
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, position: int, seed: int, crop: int, jitter: float) -> torch.Tensor:
        """The augmented crop ``(3, crop, crop)`` in [0, 1] at a global sample position."""
        n = len(self.images)
        epoch, offset = divmod(position, n)
        perm_gen = torch.Generator().manual_seed(mix(seed, epoch, 0x5EED))
        index = int(torch.randperm(n, generator=perm_gen)[offset])
        g = torch.Generator().manual_seed(mix(seed, position, 0xA06))
        img = self.images[index]
        h, w = img.shape[:2]
        r = torch.rand(8, generator=g).tolist()
        if h < crop or w < crop:
            scale = crop / min(h, w)
            t = img.permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(max(crop, round(h * scale)), max(crop, round(w * scale))), mode="bilinear", align_corners=False)
            img_t = t[0]
            h, w = img_t.shape[-2:]
        else:
            img_t = None
        top = int(r[0] * (h - crop + 1))
        left = int(r[1] * (w - crop + 1))
        if img_t is None:
            x = img[top : top + crop, left : left + crop].permute(2, 0, 1).float()
        else:
            x = img_t[:, top : top + crop, left : left + crop]
        x = x / 255.0
        if r[2] < 0.5:
            x = x.flip(-1)
        if jitter > 0:
            b = 1.0 + jitter * (2 * r[3] - 1)
            c = 1.0 + jitter * (2 * r[4] - 1)
            s = 1.0 + jitter * (2 * r[5] - 1)
            x = x * b
            mean = x.mean()
            x = (x - mean) * c + mean
            gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
            x = (x - gray) * s + gray
            x = x.clamp(0.0, 1.0)
        return x.contiguous()

    def batch(self, step: int, batch_size: int, seed: int, crop: int, jitter: float, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This process's share of the global batch of ``step``: samples ``rank, rank+world, ...``."""
        start = step * batch_size
        xs = [self.sample(start + j, seed, crop, jitter) for j in range(rank, batch_size, world)]
        return torch.stack(xs)


class AlignedImageSet:
    """Whole training images with their transforms, and deterministic augmentation."""

    def __init__(self, images: Sequence[np.ndarray], thetas: Sequence[np.ndarray], names: Sequence[str]) -> None:
        if not images:
            raise TrainingError("no training images for joint fine-tuning")
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise TrainingError(f"joint fine-tuning needs images of one size, got {sorted(shapes)}")
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.thetas = np.stack([np.asarray(t, np.float32) for t in thetas])
        self.names = list(names)
        #: read from a training pack (:func:`read_split_pack`), for the record
        self.from_pack = False

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> AlignedImageSet:
        """The images at ``indices``, in that order."""
        idx = list(indices)
        out = AlignedImageSet.__new__(AlignedImageSet)
        out.images = self.images[idx]
        out.thetas = self.thetas[idx]
        out.names = [self.names[i] for i in idx]
        out.from_pack = self.from_pack
        return out

    def head(self, count: int) -> AlignedImageSet:
        """The first ``count`` images (views, not copies)."""
        out = self.subset([])
        out.images, out.thetas, out.names = self.images[:count], self.thetas[:count], self.names[:count]
        return out

    def sample(self, position: int, seed: int, jitter: float) -> tuple[torch.Tensor, np.ndarray]:
        """The augmented image ``(3, H, W)`` in [0, 1] at a global sample position, and its transform."""
        n = len(self)
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(mix(seed, epoch, 0x10147)))
        i = int(perm[offset])
        r = torch.rand(3, generator=torch.Generator().manual_seed(mix(seed, position, 0x1D))).tolist()
        x = self.images[i].float() / 255.0
        theta = self.thetas[i]
        if r[0] < 0.5:
            x = x.flip(-1)
            theta = mirror_theta(theta)
        if jitter > 0:
            x = (x * (1 + jitter * (2 * r[1] - 1))).clamp(0, 1)
            mean = x.mean()
            x = ((x - mean) * (1 + jitter * (2 * r[2] - 1)) + mean).clamp(0, 1)
        return x, theta

    def batch(
        self, step: int, batch_size: int, seed: int, jitter: float, rank: int = 0, world: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(b, 3, H, W)`` and transforms ``(b, 2, 3)`` of this process's share of the
        global batch of ``step``: samples ``rank, rank+world, ...``."""
        items = [self.sample(step * batch_size + j, seed, jitter) for j in range(rank, batch_size, world)]
        return torch.stack([a for a, _ in items]), torch.from_numpy(np.stack([b for _, b in items]))


def held_out(names: Sequence[str], count: int) -> set[str]:
    """A deterministic handful of names to validate on, chosen by a hash of the name."""
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return set(ranked[: max(0, min(count, len(names) - 1))])


def load_images_folder(folder: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str]]:
    """Every image under a folder (recursively), as RGB uint8, with its relative name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, names = [], []
    for p in paths:
        images.append(open_image(p, formats=None, error=TrainingError))
        names.append(str(p.relative_to(folder)))
    if not images:
        raise TrainingError(f"no images in {folder}")
    return images, names


def load_split(root: str | os.PathLike[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The identity-disjoint split of LFW (people in no pair of ``pairs.txt``), loaded."""
    from ..data.lfw import identity_disjoint_split, open_lfw

    lfw = open_lfw(root)
    split = identity_disjoint_split(lfw)
    names = sorted(n for imgs in split.values() for n in imgs)
    return [lfw.load(n) for n in names], names


def make_datasets(
    images: Sequence[np.ndarray], names: Sequence[str], val_images: int
) -> tuple[ImageSet, list[np.ndarray], list[str]]:
    """Split loaded images into a training :class:`ImageSet` and held-out validation images."""
    held = held_out(names, val_images)
    train = [(im, n) for im, n in zip(images, names, strict=True) if n not in held]
    val = [(im, n) for im, n in zip(images, names, strict=True) if n in held]
    return ImageSet([t[0] for t in train], [t[1] for t in train]), [v[0] for v in val], [v[1] for v in val]


def training_sets(
    val_images: int,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> tuple[ImageSet, list[np.ndarray], list[str]]:
    """The training set and held-out images of a run: ``images``/``names`` given directly, else a
    folder of images (``images_dir``), else LFW's identity-disjoint split under ``root``."""
    if images is None:
        images, names = load_images_folder(images_dir) if images_dir is not None else load_split(root)
    if names is None:
        names = [f"image{i:05d}" for i in range(len(images))]
    return make_datasets(images, names, val_images)


def split_with_transforms(
    recognizer: Any, root: str | os.PathLike[str] | None = None, progress: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The identity-disjoint LFW split: images, their transforms (cached), names."""
    from ..data.lfw import identity_disjoint_split, open_lfw
    from ..recognition import find_alignments

    lfw = open_lfw(root)
    names = sorted(n for imgs in identity_disjoint_split(lfw).values() for n in imgs)
    locs = find_alignments(recognizer, lfw, names, progress=progress)
    images = [recognizer.read_original(lfw.path(n)) for n in names]
    return images, [locs[n].theta for n in names], names


def write_split_pack(
    path: str | os.PathLike[str], recognizer: Any, root: str | os.PathLike[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write the identity-disjoint split as one small ``.npz`` to train on elsewhere.

    It holds each image's original file bytes (LFW's JPEGs, about 13 MB for the 1,549
    images), its name and the transform found on it, so a machine with a GPU but without
    LFW, dlib's detector or a network can run :func:`finetune_joint`
    (``facekit joint --pack FILE``). :func:`read_split_pack` decodes the files with Pillow;
    dlib's own JPEG decoder, which :func:`split_with_transforms` uses, may differ from it
    by a level or two in a few pixels.
    """
    from ..data.lfw import identity_disjoint_split, open_lfw
    from ..recognition import find_alignments

    lfw = open_lfw(root)
    names = sorted(n for imgs in identity_disjoint_split(lfw).values() for n in imgs)
    locs = find_alignments(recognizer, lfw, names, progress=progress)
    blobs = [Path(lfw.path(n)).read_bytes() for n in names]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out = Path(path)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(
            f, format=np.array(PACK_FORMAT), alignment_id=np.array(str(getattr(recognizer, "alignment_id", ""))),
            names=np.array(names), thetas=np.stack([np.asarray(locs[n].theta, np.float32) for n in names]),
            offsets=offsets, data=np.frombuffer(b"".join(blobs), np.uint8),
        )
    return {"path": str(out), "images": len(names), "bytes": out.stat().st_size}


def read_split_pack(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images (RGB uint8), transforms and names of a pack written by :func:`write_split_pack`."""
    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"training pack {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            fmt = str(z["format"])
            names = [str(n) for n in z["names"]]
            thetas = np.asarray(z["thetas"], np.float32)
            offsets = np.asarray(z["offsets"], np.int64)
            data = np.asarray(z["data"], np.uint8)
    except (OSError, ValueError, KeyError) as e:
        raise TrainingError(f"{p} is not a readable training pack: {e}") from e
    if fmt != PACK_FORMAT:
        raise TrainingError(f"{p} is a {fmt!r} file, not a {PACK_FORMAT!r} training pack")
    n = len(names)
    if thetas.shape != (n, 2, 3) or offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(data) \
            or np.any(np.diff(offsets) <= 0):
        raise TrainingError(f"training pack {p} is inconsistent (names, transforms and file offsets disagree)")
    images = []
    for i, name in enumerate(names):
        images.append(open_image(data[offsets[i] : offsets[i + 1]].tobytes(), formats=None, error=TrainingError,
                                 name=f"training pack {p}: image {name} cannot be decoded"))
    return images, list(thetas), names
