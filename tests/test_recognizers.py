"""The recogniser registry, facenet offline behaviour, embedding helpers, the embed command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facekit.data.lfw import Pair
from facekit.errors import RecognizerError
from facekit.recognition import (
    Recognizer,
    available_recognizers,
    embed_images,
    find_transforms,
    get_recognizer,
)
from facekit.recognition.lfw_eval import limit_pairs


@pytest.fixture(scope="module")
def dlib_rec() -> Recognizer:
    return get_recognizer("dlib-resnet", cache=False)


def test_registry_names() -> None:
    assert set(available_recognizers()) == {
        "dlib-resnet",
        "facenet-vggface2",
        "facenet-casia-webface",
        "sface-opencv",
    }
    with pytest.raises(RecognizerError, match="unknown recogniser"):
        get_recognizer("arcface")


def test_dlib_from_registry(dlib_rec: Recognizer) -> None:
    assert dlib_rec.name == "dlib-resnet" and dlib_rec.embedding_dim == 128
    assert dlib_rec.distance == "euclidean" and dlib_rec.threshold == 0.6
    assert not any(p.requires_grad for p in dlib_rec.parameters())


# -- facenet ----------------------------------------------------------------------------------


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, no weights variable, and downloads that fail."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FACEKIT_FACENET_WEIGHTS", raising=False)

    def no_network(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    return tmp_path


@pytest.mark.parametrize("name", ["facenet-vggface2", "facenet-casia-webface"])
def test_facenet_offline_without_weights_is_a_clear_error(offline: Path, name: str) -> None:
    with pytest.raises(RecognizerError, match="not available offline"):
        get_recognizer(name, allow_download=False)
    with pytest.raises(RecognizerError, match="download failed"):
        get_recognizer(name)
    assert not list((offline / "torch").rglob("*.pt"))  # no half-downloaded file left


def test_facenet_explicit_missing_weights(offline: Path) -> None:
    with pytest.raises(RecognizerError, match="do not exist"):
        get_recognizer("facenet-vggface2", weights=offline / "nope.pt")


@pytest.mark.slow
def test_facenet_weights_found_in_torch_hub_cache(offline: Path) -> None:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None)
    ckpt = offline / "torch" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(net.state_dict(), ckpt / "20180402-114759-vggface2.pt")
    rec = get_recognizer("facenet-vggface2", allow_download=False)
    assert rec.name == "facenet-vggface2"
    for a, b in zip(rec.net.state_dict().values(), net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_facenet_random_weights_only_when_asked() -> None:
    torch.manual_seed(0)
    rec = get_recognizer("facenet-vggface2", pretrained=None)
    assert rec.name == "facenet-random" and rec.chip_size == 160
    img = torch.rand(2, 3, 250, 250, requires_grad=True)
    theta = torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]]).expand(2, 2, 3)
    emb = rec.embed(img, theta)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    emb[0].sum().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


# -- embedding helpers --------------------------------------------------------------------------


def test_embed_images_accepts_lists_arrays_and_tensors(dlib_rec: Recognizer) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (60, 50, 3), dtype=np.uint8) for _ in range(5)]
    theta = np.array([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]], dtype=np.float32)
    thetas = np.repeat(theta[None], 5, axis=0)
    a = embed_images(dlib_rec, imgs, thetas, batch_size=2, progress=False)
    b = embed_images(dlib_rec, np.stack(imgs), thetas, batch_size=5, progress=False)
    c = embed_images(
        dlib_rec, torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2), thetas, progress=False
    )
    assert a.shape == (5, 128) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a, c, atol=1e-5)
    with pytest.raises(RecognizerError):
        embed_images(dlib_rec, imgs, thetas[:3], progress=False)
    with pytest.raises(RecognizerError):
        embed_images(dlib_rec, [imgs[0], imgs[1][:30]], thetas[:2], progress=False)


def test_limit_pairs_keeps_both_labels() -> None:
    pairs = [Pair(f, f"a{i}", f"b{i}", i < 5) for f in range(2) for i in range(10)]
    kept = limit_pairs(pairs, 4)
    assert len(kept) == 8
    assert sum(p.same for p in kept) == 4
    assert limit_pairs(pairs, None) is pairs


# -- with LFW -----------------------------------------------------------------------------------


@pytest.mark.lfw
def test_find_transforms_is_cached(lfw, dlib_rec: Recognizer, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg"]
    t1 = find_transforms(dlib_rec, lfw, names)
    assert set(t1) == set(names) and t1[names[0]].shape == (2, 3)
    assert list((tmp_path / "cache" / "alignments").glob("*.npz"))

    def boom(image):  # noqa: ANN001, ANN202
        raise AssertionError("located again despite the cache")

    monkeypatch.setattr(dlib_rec, "locate", boom)
    t2 = find_transforms(dlib_rec, lfw, names)
    np.testing.assert_array_equal(t1[names[1]], t2[names[1]])
    emb = embed_images(
        dlib_rec, [lfw.load(n) for n in names], [t1[n] for n in names], progress=False
    )
    assert np.linalg.norm(emb[0] - emb[1]) < 0.6  # the same person


@pytest.mark.lfw
def test_embed_command(lfw_root: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from facekit.cli import main

    out = tmp_path / "emb.npz"
    names = ["Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0003.jpg"]
    rc = main(
        [
            "embed",
            "--root",
            str(lfw_root),
            "--names",
            *names,
            "-o",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    with np.load(out) as z:
        assert list(z["names"]) == names
        assert z["embeddings"].shape == (2, 128) and z["thetas"].shape == (2, 2, 3)
        assert str(z["recognizer"]) == "dlib-resnet"
