"""The differentiable rate term (facekit.entropy_models.rate): exact value, useful gradient, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekit.entropy_models import ContextPrior, ContextRate
from facekit.errors import TrainingError
from facekit.models.autoencoder import FaceCodecNet
from facekit.training import JointConfig, JointLoss, finetune_joint

from .fakes import TinyRecognizer
from .test_joint import TINY, data


def _prior(channels: int = 2, bits: int = 4, seed: int = 0, left: bool = False) -> ContextPrior:
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, 1 << bits, (channels, 9, 11), dtype=np.uint8) for _ in range(6)]
    return ContextPrior.fit(codes, bits=bits, left=left)


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
def test_contexts_are_those_of_the_range_coder(left):
    prior = _prior(left=left)
    rate = ContextRate(prior)
    q = np.random.default_rng(1).integers(0, 16, (3, 2, 7, 5), dtype=np.uint8)
    got = rate.contexts(torch.from_numpy(q)).numpy()
    for b in range(q.shape[0]):
        np.testing.assert_array_equal(got[b], prior.contexts(q[b]))
        for c in range(q.shape[1]):  # and those the decoder computes, step by step
            for ii, jj in prior.steps(q.shape[2], q.shape[3]):
                np.testing.assert_array_equal(got[b, c, ii, jj], prior.contexts_at(q[b], c, ii, jj))


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
def test_value_is_the_information_the_coder_counts(left):
    prior = _prior(seed=2, left=left)
    rate = ContextRate(prior)
    q = np.random.default_rng(3).integers(0, 16, (2, 2, 6, 8), dtype=np.uint8)
    y = torch.from_numpy(q).float() / 15 + 0.01  # off the grid, rounds back to q
    bits = rate.code_length(y).sum(dim=(1, 2, 3)).double().numpy()
    want = [prior.information(qi) for qi in q]
    np.testing.assert_allclose(bits, want, rtol=1e-5)
    lk = rate(y)
    assert lk.shape == y.shape and bool(((lk > 0) & (lk <= 1)).all())


def test_gradient_pulls_the_code_toward_cheaper_levels():
    bins = ContextPrior.default_bins(2, 2)
    counts = np.zeros((2, (bins + 1) ** 3, 4), np.int64)
    counts[..., :] = [1, 10, 100, 1000]  # in every context: the higher the level, the cheaper
    rate = ContextRate(ContextPrior(counts, bits=2, bins=bins))
    y = torch.full((1, 2, 4, 4), 0.45, requires_grad=True)
    rate.code_length(y).sum().backward()
    assert y.grad is not None and bool((y.grad < 0).all())  # raising y lowers the rate
    with pytest.raises(ValueError, match="expected codes"):
        rate.code_length(torch.zeros(1, 3, 4, 4))


def test_attached_rate_feeds_the_loss_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    model = FaceCodecNet(TINY).eval()
    before = (set(model.state_dict()), model.fingerprint())
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert model(x)["likelihoods"] == {}
    prior = _prior(channels=TINY.channels, bits=TINY.bits)
    model.attach_rate(prior)
    assert (set(model.state_dict()), model.fingerprint()) == before
    out = model(x)
    terms = JointLoss(lambda_rate=0.5)(x, out)
    q = model.codes(x).numpy()
    want = sum(prior.information(qi) for qi in q) / (2 * 32 * 32)
    assert float(terms["bpp"].detach()) == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        model.attach_rate(_prior(channels=3, bits=TINY.bits))
    assert model.attach_rate(None)(x)["likelihoods"] == {}


def test_joint_training_with_the_rate_term_logs_bpp_and_needs_a_prior(tmp_path):
    cfg = JointConfig(rate="q3", steps=4, batch_size=2, lr=1e-3, lambda_id=0.5, lambda_rate=0.1,
                      checkpoint_every=4, log_every=2, val_images=1)
    torch.manual_seed(0)
    with pytest.raises(TrainingError, match="needs the context prior"):
        finetune_joint(cfg, FaceCodecNet(TINY), tmp_path / "x", data(), recognizer=TinyRecognizer(),
                       device="cpu", verbose=False)
    model = FaceCodecNet(TINY)
    s = finetune_joint(cfg, model, tmp_path / "a", data(), recognizer=TinyRecognizer(), device="cpu",
                       verbose=False, rate_prior=_prior(channels=TINY.channels, bits=TINY.bits))
    assert s["finished"] and s["config"]["lambda_rate"] == 0.1
    rows = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert all(r["bpp"] > 0 for r in rows)
    assert model.rate_model is None  # detached again after training


def test_a_run_with_the_rate_term_ships_as_the_jointrate_variant(tmp_path):
    from facekit.codecs.learned import LearnedCodec
    from facekit.errors import WeightsError
    from facekit.zoo import install_joint, install_prior

    prior = _prior(channels=TINY.channels, bits=TINY.bits)
    runs = {}
    for lam in (0.0, 0.1):
        cfg = JointConfig(rate="q3", steps=2, batch_size=2, lr=1e-3, lambda_id=0.5, lambda_rate=lam,
                          checkpoint_every=2, log_every=2, val_images=1)
        torch.manual_seed(0)
        runs[lam] = tmp_path / f"run-{lam}"
        finetune_joint(cfg, FaceCodecNet(TINY), runs[lam], data(), recognizer=TinyRecognizer(), device="cpu",
                       verbose=False, rate_prior=prior if lam else None)
    folder = tmp_path / "weights"
    with pytest.raises(TrainingError, match="ships as the 'jointrate' variant"):
        install_joint(runs[0.1], folder=folder, variant="joint")
    assert not (folder / "joint-q3.pt").exists()
    plain = install_joint(runs[0.0], folder=folder)
    rated = install_joint(runs[0.1], folder=folder)
    assert (plain["variant"], rated["variant"]) == ("joint", "jointrate")
    assert "0.1 * bpp" in rated["training"]["loss"] and "bpp" not in plain["training"]["loss"]
    assert "--lambda-rate 0.1" in rated["training"]["command"]
    with pytest.raises(WeightsError, match="context prior"):
        LearnedCodec("jointrate", folder=folder, entropy=True)
    install_prior(prior, "jointrate", "q3", folder=folder)
    codec = LearnedCodec("jointrate", folder=folder, entropy=True)
    assert codec.name == "facekit-jointrate-entropy" and codec.settings == ("q3",)
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert codec.decode(codec.encode(img, "q3")).shape == img.shape
