"""Face recognisers that work offline and let gradients through.

* :class:`~facekit.recognition.dlib_resnet.DlibResNet` (``dlib-resnet``): dlib's face
  ResNet ported to PyTorch, weights parsed from dlib's own ``.dat``;
* :class:`~facekit.recognition.facenet.FacenetRecognizer` (``facenet-vggface2``,
  ``facenet-casia-webface``): facenet-pytorch's InceptionResnetV1;
* alignment (:mod:`facekit.recognition.align`): landmarks found once on originals, chips
  cut by a differentiable ``grid_sample``;
* :func:`get_recognizer`, :func:`embed_images`, :func:`find_transforms`.

Example::

    from facekit.data import open_lfw
    from facekit.recognition import get_recognizer, find_transforms, embed_images

    lfw = open_lfw()
    rec = get_recognizer("dlib-resnet")
    names = lfw.pair_images()[:8]
    thetas = find_transforms(rec, lfw, names)          # cached on disk
    emb = embed_images(rec, [lfw.load(n) for n in names], [thetas[n] for n in names])
"""

from __future__ import annotations

from .align import FaceAligner, FaceLocation, warp_chips
from .base import Recognizer
from .registry import (
    available_recognizers,
    embed_images,
    fallback_counts,
    find_alignments,
    find_transforms,
    get_recognizer,
)

__all__ = [
    "FaceAligner",
    "FaceLocation",
    "Recognizer",
    "available_recognizers",
    "embed_images",
    "fallback_counts",
    "find_alignments",
    "find_transforms",
    "get_recognizer",
    "warp_chips",
]
