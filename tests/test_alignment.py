"""Face alignment: dlib's geometry, the grid_sample chips, landmarks and the on-disk cache."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facekit.errors import AlignmentError
from facekit.recognition.align import (
    FaceAligner,
    FaceLocation,
    dlib_chip_matrix,
    face_chip,
    find_similarity_transform,
    mtcnn_to_hog_box,
    pixel_to_theta,
    read_image,
    theta_to_pixel,
    warp_chips,
)
from facekit.recognition.locations import locate_many

REPO = Path(__file__).resolve().parents[1]


def golden_file() -> Path | None:
    """``$FACEKIT_DLIB_GOLDEN`` (folder or file), else ``../shared/data/dlib_golden``."""
    base = Path(
        os.environ.get("FACEKIT_DLIB_GOLDEN") or REPO.parent / "shared" / "data" / "dlib_golden"
    )
    f = base / "lfw_dlib_golden.npz" if base.is_dir() else base
    return f if f.is_file() else None


# -- geometry (no data needed) -------------------------------------------------------------


def test_similarity_transform_recovers_a_similarity() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -4.0])
    r = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = find_similarity_transform(src, src @ r.T + t)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-12)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-10)


def test_chip_matrix_maps_template_near_landmarks() -> None:
    # landmarks that are exactly a scaled, shifted template land on the template points
    from facekit.recognition.align import DLIB_TEMPLATE_5

    pts = (0.25 + DLIB_TEMPLATE_5) / 1.5 * 150 * 0.8 + [30, 40]
    m = dlib_chip_matrix(pts, 150, 0.25)
    chip_pts = (0.25 + DLIB_TEMPLATE_5) / 1.5 * 150
    mapped = chip_pts @ m[:, :2].T + m[:, 2]
    # dlib's centered_drect shrinks the rectangle by one pixel: within a pixel, not exact
    assert np.abs(mapped - pts).max() < 1.0
    with pytest.raises(AlignmentError):
        dlib_chip_matrix(np.zeros((4, 2)))


def test_theta_roundtrip_and_identity_warp() -> None:
    m = np.array([[1.1, -0.2, 30.0], [0.2, 1.1, 12.0]])
    theta = pixel_to_theta(m, (250, 200), 150)
    np.testing.assert_allclose(theta_to_pixel(theta, (250, 200), 150), m, atol=1e-4)
    img = torch.rand(2, 3, 20, 20)
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(warp_chips(img, eye, 20), img, atol=1e-5, rtol=0)
    # shifting by one pixel moves the content by one pixel
    shift = pixel_to_theta(np.array([[1.0, 0, 1], [0, 1.0, 0]]), (20, 20), 20)
    out = warp_chips(img, torch.from_numpy(shift)[None].expand(2, 2, 3), 20, dlib_border=True)
    torch.testing.assert_close(out[..., :19, :18], img[..., :19, 1:19], atol=1e-5, rtol=0)
    # dlib: 0 where a bilinear neighbour is outside (so the last row and column too)
    assert torch.all(out[..., 18:] == 0) and torch.all(out[..., 19, :] == 0)


def test_warp_gradients_reach_the_pixels() -> None:
    img = torch.rand(1, 3, 60, 50, requires_grad=True)
    m = np.array([[0.3, 0.05, 10.0], [-0.05, 0.3, 12.0]])
    theta = torch.from_numpy(pixel_to_theta(m, (60, 50), 32))[None]
    warp_chips(img, theta, 32, dlib_border=True).square().sum().backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


def test_bad_shapes() -> None:
    with pytest.raises(AlignmentError):
        warp_chips(torch.rand(3, 10, 10), torch.zeros(1, 2, 3), 5)
    with pytest.raises(AlignmentError):
        warp_chips(torch.rand(2, 3, 10, 10), torch.zeros(3, 2, 3), 5)
    with pytest.raises(AlignmentError):
        FaceAligner().locate_dlib(np.zeros((10, 10), dtype=np.uint8))


def test_mtcnn_box_calibration_is_square_and_centred() -> None:
    b = mtcnn_to_hog_box(np.array([100.0, 100.0, 180.0, 207.0]))
    assert b[2] - b[0] == pytest.approx(b[3] - b[1])
    assert 120 < (b[0] + b[2]) / 2 < 160


def test_no_face_falls_back_to_centre_box() -> None:
    img = np.full((250, 250, 3), 128, dtype=np.uint8)
    loc = FaceAligner().locate_dlib(img)
    assert loc.method == "centre" and loc.fallback
    assert loc.theta.shape == (2, 3) and loc.theta.dtype == np.float32


# -- the cache -------------------------------------------------------------------------------


def _fake_location(image: np.ndarray) -> FaceLocation:
    h, w = image.shape[:2]
    m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    return FaceLocation(
        theta=pixel_to_theta(m, (h, w), 8),
        matrix=m,
        landmarks=np.zeros((5, 2)),
        box=np.array([0, 0, w, h], dtype=float),
        method="hog",
        image_size=(h, w),
    )


def test_locate_many_caches_by_name_and_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    files = {}
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((12, 10 + i, 3), 40 * i, dtype=np.uint8)).save(p)
        files[f"P/img{i}.png"] = p
    calls = []

    def locate(img: np.ndarray) -> FaceLocation:
        calls.append(img.shape)
        return _fake_location(img)

    out = locate_many(locate, "test-v1", files.items(), progress=False)
    assert len(calls) == 3 and out["P/img2.png"].image_size == (12, 12)
    out2 = locate_many(locate, "test-v1", files.items(), progress=False)
    assert len(calls) == 3
    np.testing.assert_array_equal(out2["P/img1.png"].theta, out["P/img1.png"].theta)
    # a changed file is located again; another alignment id has its own cache
    Image.fromarray(np.zeros((14, 10, 3), dtype=np.uint8)).save(files["P/img0.png"])
    out3 = locate_many(locate, "test-v1", files.items(), progress=False)
    assert len(calls) == 4 and out3["P/img0.png"].image_size == (14, 10)
    locate_many(locate, "test-v2", files.items(), progress=False)
    assert len(calls) == 7
    with pytest.raises(AlignmentError):
        locate_many(locate, "test-v1", [("x", tmp_path / "missing.png")], progress=False)


# -- against dlib's own pipeline (golden data + LFW) ------------------------------------------


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    f = golden_file()
    if f is None:
        pytest.skip("dlib golden data not found: set FACEKIT_DLIB_GOLDEN")
    with np.load(f) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner()


@pytest.fixture(scope="module")
def golden_images(golden, lfw) -> dict[str, list[np.ndarray]]:  # noqa: ANN001
    names = [str(n) for n in golden["names"]]
    return {
        "dlib": [read_image(lfw.path(n), "dlib") for n in names],
        "pil": [lfw.load(n) for n in names],
    }


@pytest.mark.lfw
def test_geometry_reproduces_dlib_chips(golden, golden_images) -> None:  # noqa: ANN001
    """With dlib's landmarks and dlib's JPEG decoding, the chips are dlib's, bit for bit."""
    for img, lm, chip in zip(
        golden_images["dlib"], golden["landmarks"], golden["chips"], strict=True
    ):
        mine = face_chip(img, dlib_chip_matrix(lm, 150, 0.25), 150)
        diff = np.abs(mine.astype(int) - chip.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # the float grid_sample chips stay within a grey level (dlib truncates to uint8)
    img = golden_images["dlib"][0]
    m = dlib_chip_matrix(golden["landmarks"][0], 150, 0.25)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    theta = torch.from_numpy(pixel_to_theta(m, img.shape[:2], 150))[None]
    chip = warp_chips(x, theta, 150, dlib_border=True)[0].permute(1, 2, 0).numpy()
    assert np.abs(chip - golden["chips"][0]).max() < 1.0 + 1e-3


@pytest.mark.lfw
def test_landmarks_match_dlib(golden, golden_images, aligner: FaceAligner) -> None:  # noqa: ANN001
    for i in range(0, len(golden["names"]), 4):
        box = aligner.hog_box(golden_images["dlib"][i])
        np.testing.assert_array_equal(box, golden["boxes"][i])
        np.testing.assert_array_equal(
            aligner.landmarks(golden_images["dlib"][i], box), golden["landmarks"][i]
        )


def _descriptor_distance(rec, locate_imgs, pixel_imgs, golden) -> np.ndarray:  # noqa: ANN001
    thetas = torch.from_numpy(np.stack([rec.locate(im).theta for im in locate_imgs]))
    x = torch.from_numpy(np.stack(pixel_imgs)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        d = rec.embed(x, thetas).double().numpy()
    return np.linalg.norm(d - golden["desc_chip"][: len(d)], axis=1)


@pytest.mark.lfw
@pytest.mark.slow
def test_own_alignment_vs_dlib_descriptors(golden, golden_images) -> None:  # noqa: ANN001
    from facekit.recognition.dlib_resnet import DlibResNet

    rec = DlibResNet(cache=False)
    n = 24
    # dlib's decoder for landmarks (as find_transforms does), PIL pixels (as the codecs see)
    dist = _descriptor_distance(rec, golden_images["dlib"][:n], golden_images["pil"][:n], golden)
    assert dist.mean() < 0.02, dist.mean()
    # everything decoded by PIL: landmarks move by a pixel now and then
    n = 12
    dist = _descriptor_distance(rec, golden_images["pil"][:n], golden_images["pil"][:n], golden)
    assert dist.mean() < 0.05, dist.mean()


@pytest.mark.lfw
def test_mtcnn_fallback_on_lfw(lfw, aligner: FaceAligner) -> None:  # noqa: ANN001
    # HOG finds no face here; MTCNN does
    img = read_image(lfw.path("Abdoulaye_Wade/Abdoulaye_Wade_0003.jpg"), "dlib")
    assert aligner.hog_box(img) is None
    loc = aligner.locate_dlib(img)
    assert loc.method == "mtcnn" and loc.fallback
    assert np.all((loc.landmarks > 50) & (loc.landmarks < 200))
