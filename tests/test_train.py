"""Training: losses, bit-identical resume, logs, and DDP with gloo on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facekit.errors import TrainingError
from facekit.metrics import psnr_torch as psnr
from facekit.training import ImageSet, TrainConfig, train
from facekit.training.losses import JointLoss, distortion_loss, ms_ssim
from facekit.zoo import export_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: fast and steady under load

REPO = Path(__file__).resolve().parents[1]
ARCH = {"enc_widths": [8, 8], "dec_widths": [8, 8], "dec_blocks": 1}


def images(n: int = 6, size: int = 40) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, size + 4)[None, :, None]
    imgs = [(rng.random((size, size + 4, 3)) * 50 + ramp).astype(np.uint8) for _ in range(n)]
    return imgs, [f"p{i}/img.png" for i in range(n)]


def tiny_cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(
        rate="q4",
        steps=6,
        batch_size=4,
        crop=24,
        lr=1e-3,
        warmup=2,
        checkpoint_every=3,
        log_every=1,
        val_every=3,
        val_images=2,
        arch=dict(ARCH),
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run(cfg: TrainConfig, out: Path, **kw) -> dict:
    """``train`` on :func:`images`, on the CPU, quietly."""
    imgs, names = images()
    return train(cfg, out, images=imgs, names=names, device="cpu", verbose=False, **kw)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]


# --------------------------------------------------------------------------- losses


def test_joint_loss_terms_and_identity_hook():
    x = torch.rand(2, 3, 32, 32)
    x_hat = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    terms = distortion_loss("mse")(x, {"x_hat": x_hat})
    assert set(terms) == {"loss", "mse", "psnr"}
    assert torch.isclose(terms["loss"], ((x - x_hat) ** 2).mean())
    calls = []

    def identity(a, b):
        calls.append((a.shape, b.shape))
        return (a - b).abs().mean()

    loss = JointLoss(lambda_mse=1.0, lambda_id=0.5, identity_fn=identity, lambda_msssim=0.1)
    t = loss(x, {"x_hat": x_hat})
    assert calls and {"identity", "ms_ssim"} <= set(t)
    expected = t["mse"] + 0.5 * t["identity"] + 0.1 * (1 - t["ms_ssim"])
    assert torch.isclose(t["loss"], expected)
    with pytest.raises(ValueError, match="identity_fn"):
        JointLoss(lambda_id=1.0)
    with pytest.raises(ValueError, match="entropy model"):
        JointLoss(lambda_rate=0.01)(x, {"x_hat": x_hat, "likelihoods": {}})
    lk = {"y": torch.full((2, 4, 8, 8), 0.5)}
    r = JointLoss(lambda_rate=0.01)(x, {"x_hat": x_hat, "likelihoods": lk})
    assert torch.isclose(r["bpp"], torch.tensor(2 * 4 * 8 * 8 / (2 * 32 * 32)))


def test_ms_ssim_and_psnr():
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-4)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(ms_ssim(x, noisy).max()) < 0.95
    small = torch.rand(1, 3, 16, 16)
    assert torch.isfinite(ms_ssim(small, small * 0.9)).all()
    assert float(psnr(x, (x + 0.1).clamp(0, 1))[0]) < 25


# --------------------------------------------------------------------------- data


def test_data_order_is_a_function_of_seed_and_position():
    imgs, names = images()
    data = ImageSet(imgs, names)
    a = data.batch(5, 4, seed=1, crop=16, jitter=0.1)
    b = data.batch(5, 4, seed=1, crop=16, jitter=0.1)
    assert torch.equal(a, b) and a.shape == (4, 3, 16, 16)
    assert not torch.equal(a, data.batch(5, 4, seed=2, crop=16, jitter=0.1))
    halves = torch.cat(
        [
            data.batch(5, 4, 1, 16, 0.1, rank=0, world=2),
            data.batch(5, 4, 1, 16, 0.1, rank=1, world=2),
        ]
    )
    assert torch.equal(halves.sort(0).values, a.sort(0).values)
    big = data.sample(0, seed=0, crop=64, jitter=0.0)  # smaller images are upscaled
    assert big.shape == (3, 64, 64)


# --------------------------------------------------------------------------- training


def test_resume_is_bit_identical(tmp_path):
    full = run(tiny_cfg(), tmp_path / "full")
    part = run(tiny_cfg(), tmp_path / "part", stop_after=3)
    assert part["steps_done"] == 3 and not part["finished"]
    assert not (tmp_path / "part" / "model.pt").exists()
    resumed = run(tiny_cfg(), tmp_path / "part", resume=True)
    assert resumed["finished"] and full["finished"]
    a = weights(tmp_path / "full")
    b = weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert torch.equal(ca["rng"]["torch"], cb["rng"]["torch"])
    assert ca["scheduler"] == cb["scheduler"] and ca["samples_seen"] == cb["samples_seen"] == 24
    ha = [json.loads(x) for x in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (tmp_path / "part" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ha] == [r["step"] for r in hb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in ha] == [r["loss"] for r in hb]
    assert (tmp_path / "full" / "history.csv").read_text().splitlines()[0].startswith("step,")
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert (
        summary["val_psnr"] > 0 and summary["train_images"] == 4 and len(summary["val_images"]) == 2
    )


def test_noise_quantiser_resume_is_bit_identical(tmp_path):
    arch = {**ARCH, "quant_mode": "noise"}
    full = run(tiny_cfg(arch=arch, steps=4), tmp_path / "a")
    run(tiny_cfg(arch=arch, steps=4), tmp_path / "b", stop_after=2)
    run(tiny_cfg(arch=arch, steps=4), tmp_path / "b", resume=True)
    assert full["finished"]
    a = weights(tmp_path / "a")
    b = weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_config_and_missing_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        run(tiny_cfg(), tmp_path / "x", resume=True)
    run(tiny_cfg(steps=2), tmp_path / "x")
    with pytest.raises(TrainingError, match="lr"):
        run(tiny_cfg(steps=4, lr=0.5), tmp_path / "x", resume=True)
    # a longer run may continue from it
    out = run(tiny_cfg(steps=3), tmp_path / "x", resume=True)
    assert out["steps_done"] == 3
    (tmp_path / "x" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(TrainingError, match="cannot be read"):
        run(tiny_cfg(steps=4), tmp_path / "x", resume=True)


def test_export_weights_to_shipped_format(tmp_path):
    from facekit.models import load_weights

    run(tiny_cfg(steps=2), tmp_path / "run")
    info = export_weights(tmp_path / "run" / "model.pt", tmp_path / "w.pt")
    model = load_weights(tmp_path / "w.pt", sha256=info["sha256"])
    assert model.fingerprint() == info["fingerprint"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_images(folder: Path) -> None:
    folder.mkdir()
    imgs, names = images()
    for im, n in zip(imgs, names, strict=True):
        Image.fromarray(im).save(folder / n.replace("/", "_"))


@pytest.mark.slow
def test_ddp_gloo_two_processes_matches_single_process(tmp_path):
    _write_images(tmp_path / "imgs")
    args = [
        "-m",
        "facekit.cli",
        "train",
        "--rate",
        "q4",
        "--images",
        str(tmp_path / "imgs"),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--crop",
        "24",
        "--lr",
        "1e-3",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--val-images",
        "2",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--arch",
        "enc_widths=[8,8]",
        "dec_widths=[8,8]",
        "dec_blocks=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
        "--out",
        str(tmp_path / "ddp"),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp_summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp_summary["world_size"] == 2 and ddp_summary["finished"]
    from facekit.cli import main

    assert main([*args[2:], "--out", str(tmp_path / "single")]) == 0
    a = weights(tmp_path / "ddp")
    b = weights(tmp_path / "single")
    # the same global batches: DDP's averaged gradients equal the single-process ones up to rounding
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_init_from_weights(tmp_path):
    run(tiny_cfg(steps=2), tmp_path / "a")
    init = str(tmp_path / "a" / "model.pt")
    out = run(tiny_cfg(steps=1, lr=1e-12, warmup=0, init=init), tmp_path / "b")
    assert out["finished"]
    a = weights(tmp_path / "a")
    b = weights(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(TrainingError, match="init"):
        run(tiny_cfg(rate="q5", steps=1, init=init), tmp_path / "c")
