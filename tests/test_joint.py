"""Joint fine-tuning: identity gradients reach the codec, flips keep alignment, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekit.errors import TrainingError
from facekit.models.autoencoder import FaceCodecNet, RatePoint
from facekit.training import (
    AlignedImageSet,
    IdentityLoss,
    JointConfig,
    finetune_joint,
    mirror_theta,
)

from .fakes import TinyRecognizer

TINY = RatePoint("q3", 4, 2, 4, (8, 8), (8, 8), dec_blocks=1)


def data(n=6, size=32):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    th = [np.array([[0.8, 0.05, 0.02], [-0.03, 0.8, 0.01]], np.float32)] * n
    return AlignedImageSet(imgs, th, [f"p{i}" for i in range(n)])


def test_identity_term_sends_gradient_to_the_codec():
    torch.manual_seed(0)
    model = FaceCodecNet(TINY).train()
    ident = IdentityLoss(TinyRecognizer())
    x, th = data().batch(0, 4, 0, 0.0)
    loss = ident(x, model(x)["x_hat"], th)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(ident(x, x, th).detach()) == 0.0


def test_mirror_theta_mirrors_the_chip():
    rec = TinyRecognizer()
    x = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    th = np.array([[0.7, 0.1, 0.05], [-0.1, 0.7, -0.02]], np.float32)
    c = rec.align(x, torch.from_numpy(th[None]))
    cm = rec.align(x.flip(-1), torch.from_numpy(mirror_theta(th)[None]))
    torch.testing.assert_close(c.flip(-1), cm, atol=1e-5, rtol=0)


def test_resume_equals_uninterrupted(tmp_path):
    cfg = JointConfig(rate="q3", steps=6, batch_size=2, lr=1e-3, lambda_id=0.5, checkpoint_every=3,
                      log_every=3, val_images=1)
    torch.manual_seed(0)
    full = FaceCodecNet(TINY)
    init = {k: v.clone() for k, v in full.state_dict().items()}
    finetune_joint(cfg, full, tmp_path / "a", data(), recognizer=TinyRecognizer(), device="cpu", verbose=False)
    part = FaceCodecNet(TINY)
    part.load_state_dict(init)
    s = finetune_joint(cfg, part, tmp_path / "b", data(), recognizer=TinyRecognizer(), device="cpu",
                       stop_after=3, verbose=False)
    assert s["finished"] is False and not (tmp_path / "b" / "model.pt").exists()
    resumed = FaceCodecNet(TINY)
    resumed.load_state_dict(init)
    s = finetune_joint(cfg, resumed, tmp_path / "b", data(), recognizer=TinyRecognizer(), device="cpu",
                       resume=True, verbose=False)
    assert s["finished"] and s["steps_done"] == 6
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=0, rtol=0)
    bad = JointConfig(**{**cfg.to_dict(), "lr": 1.0})
    with pytest.raises(TrainingError, match="different config: lr"):
        finetune_joint(bad, FaceCodecNet(TINY), tmp_path / "b", data(), recognizer=TinyRecognizer(),
                       device="cpu", resume=True, verbose=False)


def test_images_of_different_sizes_are_refused():
    with pytest.raises(TrainingError, match="one size"):
        AlignedImageSet([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)],
                        [np.zeros((2, 3))] * 2, ["a", "b"])


def test_face_weights_cover_the_chip_and_nothing_else():
    from facekit.training import face_weights

    # a chip covering the middle half of a 41x41 image: x_in = 0.5 * x_out, y_in = 0.5 * y_out
    th = np.array([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]], np.float32)
    w = face_weights(th, 41, 41, 0.1, margin=0.0)
    assert w.shape == (1, 1, 41, 41)
    assert float(w[0, 0, 20, 20]) == 1.0 and float(w[0, 0, 10, 10]) == 1.0 and float(w[0, 0, 30, 30]) == 1.0
    assert float(w[0, 0, 0, 0]) == pytest.approx(0.1) and float(w[0, 0, 20, 9]) == pytest.approx(0.1)
    assert int((w == 1).sum()) == 21 * 21  # pixels 10..30 in each direction
    # the region follows the transform: shifted right by a quarter of the image
    shifted = face_weights(np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.0]], np.float32), 41, 41, 0.0, margin=0.0)
    assert float(shifted[0, 0, 20, 40]) == 1.0 and float(shifted[0, 0, 20, 10]) == 0.0
    # a margin widens it; the mirrored transform gives the mirrored region
    assert int((face_weights(th, 41, 41, 0.0, margin=0.2) == 1).sum()) > 21 * 21
    t2 = np.array([[0.4, 0.1, 0.2], [-0.05, 0.45, -0.1]], np.float32)
    torch.testing.assert_close(face_weights(mirror_theta(t2)[None], 41, 41, 0.0).flip(-1), face_weights(t2[None], 41, 41, 0.0))
    with pytest.raises(ValueError, match="background weight"):
        face_weights(th, 41, 41, 1.5)
    with pytest.raises(ValueError, match="transforms"):
        face_weights(np.zeros((1, 3, 3), np.float32), 41, 41, 0.1)


def test_weighted_distortion_counts_the_background_less():
    from facekit.training import JointLoss

    x = torch.zeros(1, 3, 4, 4)
    x_hat = torch.zeros(1, 3, 4, 4)
    x_hat[..., 0, :] = 1.0  # error only in the first row
    weight = torch.ones(1, 1, 4, 4)
    weight[..., 0, :] = 0.1
    plain = JointLoss()(x, {"x_hat": x_hat})
    weighted = JointLoss()(x, {"x_hat": x_hat}, weight)
    assert float(plain["mse"]) == pytest.approx(0.25) and float(weighted["mse"]) == pytest.approx(0.25)
    assert float(weighted["mse_weighted"]) == pytest.approx(0.025) and float(weighted["loss"]) == pytest.approx(0.025)
    assert "mse_weighted" not in plain
    with pytest.raises(ValueError, match="dimensions"):
        JointLoss()(x, {"x_hat": x_hat}, torch.ones(4, 4))


def test_variant_of_a_config():
    assert JointConfig().variant() == "joint"
    assert JointConfig(lambda_rate=0.1).variant() == "jointrate"
    assert JointConfig(lambda_rate=0.1, background_weight=0.1).variant() == "jointface"
    assert JointConfig(background_weight=0.5).variant() == "jointface"


def test_time_limit_records_steps_and_lr_drop_and_repeats(tmp_path):
    cfg = JointConfig(rate="q3", steps=10**9, batch_size=2, lr=1e-3, lambda_id=0.5, background_weight=0.1,
                      checkpoint_every=10**6, log_every=1, val_images=1)
    torch.manual_seed(0)
    a = FaceCodecNet(TINY)
    init = {k: v.clone() for k, v in a.state_dict().items()}
    s = finetune_joint(cfg, a, tmp_path / "a", data(), recognizer=TinyRecognizer(), device="cpu", verbose=False,
                       time_limit_s=1.0)
    done, drop = s["steps_done"], s["config"]["lr_drop_at"]
    assert s["finished"] and s["steps"] == done == s["config"]["steps"] >= 2 and 0 < drop <= done
    assert s["time_limit_s"] == 1.0 and "val_face_psnr" in s and (tmp_path / "a" / "model.pt").exists()
    rows = [json.loads(r) for r in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == done and "mse_weighted" in rows[-1]
    # the recorded config repeats the run exactly, without a time limit
    b = FaceCodecNet(TINY)
    b.load_state_dict(init)
    again = JointConfig(**s["config"])
    s2 = finetune_joint(again, b, tmp_path / "b", data(), recognizer=TinyRecognizer(), device="cpu", verbose=False)
    assert s2["steps_done"] == done
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, atol=0, rtol=0)


def test_a_face_weighted_run_ships_as_jointface(tmp_path):
    from facekit.zoo import install_joint

    cfg = JointConfig(rate="q3", steps=2, batch_size=2, lr=1e-3, lambda_id=0.5, background_weight=0.1,
                      checkpoint_every=2, log_every=2, val_images=1)
    torch.manual_seed(0)
    finetune_joint(cfg, FaceCodecNet(TINY), tmp_path / "run", data(), recognizer=TinyRecognizer(), device="cpu",
                   verbose=False)
    with pytest.raises(TrainingError, match="ships as the 'jointface' variant"):
        install_joint(tmp_path / "run", folder=tmp_path / "w", variant="joint")
    e = install_joint(tmp_path / "run", folder=tmp_path / "w")
    assert e["variant"] == "jointface" and (tmp_path / "w" / "jointface-q3.pt").exists()
    assert "outside the face chip (margin 0.1) weighs 0.1" in e["training"]["loss"]
    assert "--background-weight 0.1" in e["training"]["command"]


def test_training_pack_round_trip_and_refusals(tmp_path):
    import io

    from PIL import Image

    from facekit.training.data import PACK_FORMAT, read_split_pack

    rng = np.random.default_rng(0)
    names, blobs = ["a/a_0001.jpg", "b/b_0001.jpg"], []
    for _ in names:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    thetas = np.stack([np.eye(2, 3, dtype=np.float32)] * 2)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)

    def write(path, **over):
        fields = dict(format=np.array(PACK_FORMAT), alignment_id=np.array("x"), names=np.array(names),
                      thetas=thetas, offsets=offsets, data=np.frombuffer(b"".join(blobs), np.uint8))
        fields.update(over)
        np.savez(path, **fields)
        return path

    images, ths, got = read_split_pack(write(tmp_path / "ok.npz"))
    assert got == names and len(images) == 2 and images[0].shape == (24, 24, 3)
    np.testing.assert_array_equal(images[1], np.asarray(Image.open(io.BytesIO(blobs[1])).convert("RGB")))
    np.testing.assert_array_equal(np.stack(ths), thetas)
    with pytest.raises(TrainingError, match="does not exist"):
        read_split_pack(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a pack")
    with pytest.raises(TrainingError, match="not a readable training pack"):
        read_split_pack(tmp_path / "junk.npz")
    with pytest.raises(TrainingError, match="not a 'facekit-joint-pack/1'"):
        read_split_pack(write(tmp_path / "fmt.npz", format=np.array("other/1")))
    with pytest.raises(TrainingError, match="inconsistent"):
        read_split_pack(write(tmp_path / "off.npz", offsets=offsets[:-1]))
    broken = np.frombuffer(b"".join(blobs), np.uint8).copy()
    broken[offsets[1] : offsets[1] + 40] = 0
    with pytest.raises(TrainingError, match="b/b_0001.jpg cannot be decoded"):
        read_split_pack(write(tmp_path / "bad.npz", data=broken))


def test_joint_fine_tuning_runs_through_facenet_on_real_faces(lfw, tmp_path):
    """The issue's "facenet-pytorch where its weights are available": the same loop with
    InceptionResnetV1 (random weights here, the pretrained ones download at run time) on
    LFW images aligned by its own MTCNN; the identity term reaches the codec."""
    from facekit.recognition import get_recognizer

    torch.manual_seed(0)
    rec = get_recognizer("facenet-vggface2", pretrained=None)
    names = lfw.pair_images()[:4]
    images = [rec.read_original(lfw.path(n)) for n in names]
    locs = [rec.locate(im) for im in images]
    assert all(loc.method == "mtcnn" for loc in locs)
    model = FaceCodecNet(TINY)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = JointConfig(rate="q3", steps=2, batch_size=2, lr=1e-3, lambda_id=1.0, recognizer=rec.name,
                      checkpoint_every=2, log_every=1, val_images=1)
    s = finetune_joint(cfg, model, tmp_path / "run", AlignedImageSet(images, [loc.theta for loc in locs], names),
                       recognizer=rec, device="cpu", verbose=False)
    assert s["finished"] and s["steps_done"] == 2 and s["config"]["recognizer"] == "facenet-random"
    assert np.isfinite(s["val_id_dist"]) and s["val_id_dist"] > 0
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in init.items())
