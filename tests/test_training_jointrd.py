"""The joint phase of the second-generation codec (facekit.training.jointrd): its loss terms, the
identity term's gradient into the codec, exact resume, and the real path through dlib's ResNet."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facekit.errors import RecognizerError, TrainingError
from facekit.models.hyperprior import FaceHyperprior
from facekit.training.identity import IdentityLoss
from facekit.training.jointrd import JointRDConfig, joint_objective, load_start, train_joint_rd

from .fakes import TinyRecognizer
from .test_hyperprior import TINY, face_like

pytest.importorskip("constriction")


def faces(n: int = 6, size: int = 64) -> tuple[list[np.ndarray], list[str]]:
    images = [(face_like(size, size, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8) for i in range(n)]
    return images, [f"face{i}" for i in range(n)]


def start(path: Path, seed: int = 0) -> Path:
    """A phase-one ``model.pt`` of the tiny widths."""
    torch.manual_seed(seed)
    model = FaceHyperprior(TINY)
    torch.save({"rate_point": TINY.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def cfg(**kw: object) -> JointRDConfig:
    base = dict(steps=4, batch_size=2, lr=1e-3, warmup=1, arch=TINY.to_dict(), val_images=1, lambda_min=1e-3,
                lambda_max=0.05, lambda_id=0.5, background_weight=0.5, checkpoint_every=2, log_every=1, val_every=2)
    return JointRDConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_terms_are_finite_and_the_identity_term_reaches_the_codec() -> None:
    torch.manual_seed(0)
    model = FaceHyperprior(TINY).train()
    objective = joint_objective(cfg(), IdentityLoss(TinyRecognizer()))
    assert objective.needs_theta
    x = face_like(64, 64).repeat(2, 1, 1, 1)
    theta = torch.tensor([[[0.6, 0.0, 0.05], [0.0, 0.6, 0.0]]]).repeat(2, 1, 1)
    terms = objective(x, model(x, 0.5), theta)
    assert {"loss", "mse", "mse_weighted", "identity", "bpp", "psnr", "t"} <= set(terms)
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert float(terms["mse_weighted"].detach()) < float(terms["mse"].detach())  # the background counts half
    lmbda = cfg().lmbda(0.5) * 255**2
    expect = lmbda * terms["mse_weighted"] + terms["bpp"] + 0.5 * terms["identity"]
    torch.testing.assert_close(terms["loss"], expect)
    terms["identity"].backward()  # the identity term alone moves the analysis and synthesis transforms
    for net in (model.g_a, model.g_s):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    with pytest.raises(ValueError, match="face transforms"):
        objective(x, model(x, 0.5))


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    images, names = faces()
    init = start(tmp_path / "rd.pt")
    kw = dict(images=images, names=names, device="cpu", threads=1, verbose=False)
    full = train_joint_rd(cfg(), tmp_path / "a", init, recognizer=TinyRecognizer(), **kw)  # type: ignore[arg-type]
    part = train_joint_rd(cfg(), tmp_path / "b", init, recognizer=TinyRecognizer(), stop_after=3, **kw)  # type: ignore[arg-type]
    assert not part["finished"] and not (tmp_path / "b" / "model.pt").exists()
    again = train_joint_rd(cfg(), tmp_path / "b", init, recognizer=TinyRecognizer(), resume=True, **kw)  # type: ignore[arg-type]
    assert full["finished"] and again["finished"] and again["steps_done"] == 4
    wa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], v) for k, v in torch.load(init, weights_only=True)["state_dict"].items())
    rows = [json.loads(r) for r in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "identity" in rows[0] and "mse_weighted" in rows[0]
    assert [r["step"] for r in rows if "val_idcos_t0" in r] == [2, 4]
    assert again["val_images"] == full["val_images"] and len(again["val_images"]) == 1 and again["train_images"] == 5
    with pytest.raises(TrainingError, match="different config: lambda_id"):
        train_joint_rd(cfg(lambda_id=0.7), tmp_path / "b", init, recognizer=TinyRecognizer(), resume=True, **kw)  # type: ignore[arg-type]
    other = dataclasses.replace(cfg(), arch={**TINY.to_dict(), "latent": 12})
    with pytest.raises(TrainingError, match="other widths"):
        train_joint_rd(other, tmp_path / "c", init, recognizer=TinyRecognizer(), **kw)  # type: ignore[arg-type]


def test_the_start_is_read_once_and_a_resume_keeps_it(tmp_path: Path) -> None:
    init = start(tmp_path / "rd.pt")
    sha = hashlib.sha256(init.read_bytes()).hexdigest()
    assert load_start(init, TINY)[1] == sha
    torch.save({"rate_point": TINY.to_dict(), "state_dict": {"g_a.0.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(TrainingError, match="does not hold phase one's weights"):
        load_start(tmp_path / "bad.pt", TINY)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot be read"):
        load_start(tmp_path / "junk.pt", TINY)
    images, names = faces()
    kw = dict(images=images, names=names, device="cpu", threads=1, verbose=False)
    run = tmp_path / "run"
    train_joint_rd(cfg(), run, init, recognizer=TinyRecognizer(), stop_after=2, **kw)  # type: ignore[arg-type]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["origin"] == {"init_sha256": sha}
    assert json.loads((run / "config.json").read_text())["origin"] == {"init_sha256": sha}
    other = start(tmp_path / "other.pt", seed=1)  # phase one's model.pt after more training, say
    with pytest.raises(TrainingError, match=f"init_sha256 '{sha}', now"):
        train_joint_rd(cfg(), run, other, recognizer=TinyRecognizer(), resume=True, **kw)  # type: ignore[arg-type]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    del ckpt["origin"]  # a checkpoint that keeps no origin is compared with the summary beside it
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(TrainingError, match="init_sha256"):
        train_joint_rd(cfg(), run, other, recognizer=TinyRecognizer(), resume=True, **kw)  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match="nothing would train"):
        train_joint_rd(cfg(), run, init, recognizer=TinyRecognizer(), resume=True, stop_after=2, **kw)  # type: ignore[arg-type]
    done = train_joint_rd(cfg(), run, init, recognizer=TinyRecognizer(), resume=True, **kw)  # type: ignore[arg-type]
    assert done["finished"] and done["init_sha256"] == sha


def test_the_real_identity_term_through_dlib_resnet(lfw, tmp_path: Path) -> None:
    """Two steps through the ported dlib ResNet on real LFW faces aligned by dlib's detector."""
    from facekit.recognition import get_recognizer

    try:
        rec = get_recognizer("dlib-resnet")
    except RecognizerError as e:
        pytest.skip(f"dlib's ResNet weights are not available: {e}")
    names = lfw.pair_images()[:3]
    images = [rec.read_original(lfw.path(n)) for n in names]
    s = train_joint_rd(cfg(steps=2, val_every=2, checkpoint_every=2), tmp_path / "run", start(tmp_path / "rd.pt"),
                       images=images, names=names, recognizer=rec, device="cpu", threads=1, verbose=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert s["finished"] and all(np.isfinite(r["identity"]) and r["identity"] > 0 for r in rows)
    assert 0 < s["val_idcos_t0.5"] <= 1 and s["val_iddist_t0.5"] > 0 and s["alignment"] == rec.alignment_id
