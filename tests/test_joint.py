"""Joint fine-tuning: identity gradients reach the codec, flips keep alignment, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facekit.errors import TrainingError
from facekit.joint import AlignedImageSet, IdentityLoss, JointConfig, finetune_joint, mirror_theta
from facekit.models.autoencoder import FaceCodecNet, RatePoint

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
