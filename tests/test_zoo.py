"""The weights store (facekit.zoo) and its command line, ``facekit weights``; checkpoints of the one loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekit.cli import main
from facekit.entropy_models import ContextPrior
from facekit.errors import TrainingError, WeightsError
from facekit.models import RATE_POINTS, build_model
from facekit.models.autoencoder import FaceCodecNet
from facekit.training import JointConfig, TrainConfig, finetune_joint, train
from facekit.zoo import (
    install_prior,
    install_weights,
    list_models,
    load_model,
    load_prior,
    read_manifest,
    verify,
    weights_dir,
)

from .fakes import TinyRecognizer
from .test_joint import TINY, data


def tiny(rate: str, seed: int = 0) -> FaceCodecNet:
    torch.manual_seed(seed)
    k = RATE_POINTS[rate].stages
    return build_model(rate, enc_widths=(8,) * k, dec_widths=(8,) * k, dec_blocks=1)


@pytest.fixture
def folder(tmp_path):
    """A weights folder with tiny mse models for q1 and q3, and a prior for q1."""
    f = tmp_path / "weights"
    for rate in ("q3", "q1"):
        install_weights(tiny(rate), "mse", folder=f, info={"metrics": {"held_out_split": {"bpp": 0.5, "psnr": 20.0}}})
    model, _ = load_model("mse", "q1", folder=f)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    install_prior(ContextPrior.fit(list(model.codes(x).numpy()), model.rate_point.bits, bins=2), "mse", "q1", folder=f)
    return f


def test_store_lists_loads_and_verifies(folder):
    rows = list_models(folder)
    assert [r["name"] for r in rows] == ["mse-q1", "mse-q3"]  # sorted in the manifest
    assert rows[0]["prior"]["file"] == "mse-q1-ctx.pt" and rows[1]["prior"] is None
    assert rows[0]["metrics"] == {"held_out_split": {"bpp": 0.5, "psnr": 20.0}}
    assert rows[0]["bytes"] == (folder / "mse-q1.pt").stat().st_size
    model, entry = load_model("mse", "q1", folder=folder)
    assert load_prior(entry, folder, model.fingerprint()).bits == model.rate_point.bits
    assert verify(folder) == []
    with pytest.raises(WeightsError, match="no weights for 'mse-q2'"):
        load_model("mse", "q2", folder=folder)
    with pytest.raises(WeightsError, match="before its prior"):
        install_prior(load_prior(entry, folder, model.fingerprint()), "joint", "q1", folder=folder)


def test_shipped_weights_are_in_the_package_folder():
    assert weights_dir().name == "weights" and weights_dir().parent.name == "facekit"
    assert (weights_dir() / "manifest.json").exists() == bool(read_manifest()["models"])


def test_weights_command_lists_and_verifies(folder, capsys):
    assert main(["weights", "list", "--folder", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "rate", "bytes", "sha256"]
    assert out[1].startswith("mse-q1") and "facekit-prior/" in out[1] and "bpp 0.5" in out[1]
    assert main(["weights", "list", "--folder", str(folder), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["mse-q1", "mse-q3"]
    assert main(["weights", "verify", "--folder", str(folder)]) == 0
    assert "all 3 files of 2 models match" in capsys.readouterr().out
    raw = bytearray((folder / "mse-q1-ctx.pt").read_bytes())
    raw[-1] ^= 1
    (folder / "mse-q1-ctx.pt").write_bytes(bytes(raw))
    (folder / "mse-q3.pt").unlink()
    assert main(["weights", "verify", "--folder", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "mse-q1: mse-q1-ctx.pt has sha256" in err and "mse-q3: mse-q3.pt cannot be read" in err
    assert "2 of 3 files" in err and err.count("\n") == 3


def test_weights_command_installs_a_joint_run_and_exports_a_model(tmp_path, capsys):
    cfg = JointConfig(rate="q3", steps=2, batch_size=2, lr=1e-3, lambda_id=0.5, lambda_rate=0.0,
                      checkpoint_every=2, log_every=2, val_images=1)
    torch.manual_seed(0)
    finetune_joint(cfg, FaceCodecNet(TINY), tmp_path / "run", data(), recognizer=TinyRecognizer(), device="cpu",
                   verbose=False)
    w = tmp_path / "w"
    assert main(["weights", "install", str(tmp_path / "run"), "--folder", str(w), "--variant", "jointface"]) == 2
    assert "ships as the 'joint' variant" in capsys.readouterr().err
    assert main(["weights", "install", str(tmp_path / "run"), "--folder", str(w)]) == 0
    line = json.loads(capsys.readouterr().out)
    entry = read_manifest(w)["models"]["joint-q3"]
    assert line["variant"] == "joint" and line["sha256"] == entry["sha256"]
    assert entry["training"]["command"].startswith("facekit joint --rate q3 --steps 2")
    assert main(["weights", "export", str(tmp_path / "run" / "model.pt"), str(tmp_path / "x.pt"), "--float32"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"] == (tmp_path / "x.pt").stat().st_size
    (tmp_path / "half").mkdir()
    assert main(["weights", "install", str(tmp_path / "half"), "--folder", str(w)]) == 2
    assert "not a training run folder" in capsys.readouterr().err


def test_one_checkpoint_format_for_both_phases(tmp_path):
    """Both phases write the loop's checkpoint; an older format or the other phase's checkpoint is refused."""
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    cfg = TrainConfig(rate="q1", steps=2, batch_size=2, crop=32, arch={"enc_widths": [8] * 4, "dec_widths": [8] * 4,
                      "dec_blocks": 1}, checkpoint_every=1, log_every=1, val_images=1)
    train(cfg, tmp_path / "d", images=imgs, device="cpu", verbose=False)
    jcfg = JointConfig(rate="q3", steps=2, batch_size=2, lambda_id=0.5, checkpoint_every=1, log_every=1, val_images=1)
    finetune_joint(jcfg, FaceCodecNet(TINY), tmp_path / "j", data(), recognizer=TinyRecognizer(), device="cpu",
                   verbose=False)
    d = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    j = torch.load(tmp_path / "j" / "checkpoint.pt", weights_only=True)
    assert d.keys() == j.keys() and (d["phase"], j["phase"]) == ("distortion", "joint")
    assert d["version"] == j["version"] == 2 and "rng" in j and "scheduler" in j
    assert json.loads((tmp_path / "j" / "summary.json").read_text())["phase"] == "joint"
    with pytest.raises(TrainingError, match="checkpoint of distortion training, not joint"):
        finetune_joint(jcfg, FaceCodecNet(TINY), tmp_path / "d", data(), recognizer=TinyRecognizer(),
                       device="cpu", resume=True, verbose=False)
    torch.save({**j, "version": 1}, tmp_path / "j" / "checkpoint.pt")
    with pytest.raises(TrainingError, match="older checkpoints cannot resume"):
        finetune_joint(jcfg, FaceCodecNet(TINY), tmp_path / "j", data(), recognizer=TinyRecognizer(),
                       device="cpu", resume=True, verbose=False)
