"""The learned codec's networks, quantiser and weights files."""

from __future__ import annotations

import pytest
import torch

from facekit.errors import BitstreamError, ImageError, WeightsError
from facekit.models import (
    RATE_POINTS,
    FaceCodecNet,
    Quantizer,
    RatePoint,
    build_model,
    load_weights,
    save_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: fast and steady under load

TINY = {"enc_widths": (8, 8, 8), "dec_widths": (8, 8, 8), "dec_blocks": 1}


def tiny(rate: str = "q3", seed: int = 0, **kw) -> FaceCodecNet:
    torch.manual_seed(seed)
    widths = RATE_POINTS[rate].stages  # one encoder and one decoder width per stride-2 stage
    arch = {"enc_widths": (8,) * widths, "dec_widths": (8,) * widths, "dec_blocks": 1, **kw}
    return build_model(rate, **arch).eval()


# --------------------------------------------------------------------------- quantiser


def test_quantizer_eval_rounds_exactly():
    q = Quantizer(4).eval()
    y = torch.rand(2, 3, 5, 5)
    y_hat = q(y)
    codes = q.quantize(y)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert torch.equal(y_hat, q.dequantize(codes))
    assert torch.equal(torch.round(y_hat * 15), codes.float())


def test_quantizer_straight_through_gradient():
    q = Quantizer(3, "ste").train()
    y = torch.rand(10, requires_grad=True)
    out = q(y)
    assert torch.allclose(out * 7, torch.round(out * 7))  # the decoder sees the stored values
    out.sum().backward()
    assert torch.equal(y.grad, torch.ones(10))


def test_quantizer_noise_mode_trains_and_stays_in_range():
    q = Quantizer(2, "noise").train()
    y = torch.rand(1000, requires_grad=True)
    out = q(y)
    o = out.detach()
    assert 0 <= float(o.min()) and float(o.max()) <= 1
    assert float((o - y.detach()).abs().max()) <= 0.5 / 3 + 1e-6
    out.sum().backward()
    assert y.grad is not None
    with pytest.raises(ValueError):
        Quantizer(2, "bogus")


# --------------------------------------------------------------------------- networks


def test_rate_points_are_ordered_by_code_size():
    names = list(RATE_POINTS)
    assert len(names) >= 5
    bits = [RATE_POINTS[n].raw_bits(250, 250) for n in names]
    assert bits == sorted(bits) and len(set(bits)) == len(bits)
    # lowest about 0.05 bpp, highest about 1 bpp before PNG
    assert bits[0] / 62500 < 0.07 and bits[-1] / 62500 > 0.8


def test_rate_point_validation():
    with pytest.raises(ValueError):
        RatePoint("x", 6, 2, 4, (8, 8), (8, 8))
    with pytest.raises(ValueError):
        RatePoint("x", 4, 2, 4, (8,), (8, 8))
    rp = RATE_POINTS["q2"]
    assert RatePoint.from_dict(rp.to_dict()) == rp
    with pytest.raises(KeyError, match="unknown rate point"):
        build_model("q99")


@pytest.mark.parametrize("rate", ["q1", "q3", "q5"])
@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (8, 8)])
def test_forward_any_size(rate, hw):
    model = tiny(rate)
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        out = model(x)
    assert out["x_hat"].shape == x.shape
    c, h, w = model.rate_point.code_shape(*hw)
    assert out["y"].shape == (2, c, h, w) == out["y_hat"].shape
    assert float(out["x_hat"].min()) >= 0 and float(out["x_hat"].max()) <= 1
    assert out["likelihoods"] == {}


def test_bad_input_shapes():
    model = tiny()
    with pytest.raises(ImageError):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ImageError):
        model(torch.rand(1, 3, 4, 32))


@pytest.mark.parametrize("rate", ["q1", "q2", "q4", "q5"])
def test_roundtrip_equals_eval_forward(rate):
    model = tiny(rate)
    x = torch.rand(3, 3, 45, 70)
    enc = model.compress(x)
    assert len(enc["strings"]) == 3 and enc["shape"] == (45, 70)
    x_dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    with torch.no_grad():
        x_fwd = model(x)["x_hat"]
    assert float((x_dec - x_fwd).abs().max()) <= 1 / 255
    # deterministic: the same bytes decode to the same image
    again = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    assert torch.equal(x_dec, again)


def test_decompress_checks_shape_against_payload():
    model = tiny("q3")
    enc = model.compress(torch.rand(1, 3, 64, 64))
    with pytest.raises(BitstreamError):
        model.decompress(enc["strings"], (128, 64))


def test_fingerprint_names_the_weights():
    a, b = tiny(seed=0), tiny(seed=0)
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.decoder.out.bias[0] += 1e-3
    assert a.fingerprint() != b.fingerprint()


def test_save_and_load_weights(tmp_path):
    model = tiny("q2")
    info = save_weights(model, tmp_path / "w.pt")
    loaded = load_weights(tmp_path / "w.pt", sha256=info["sha256"])
    assert loaded.fingerprint() == info["fingerprint"]
    assert loaded.rate_point == model.rate_point
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # float16 storage changes outputs only a little
        assert float((loaded(x)["x_hat"] - model(x)["x_hat"]).abs().max()) < 0.05
    raw = bytearray((tmp_path / "w.pt").read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "w.pt").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="sha256"):
        load_weights(tmp_path / "w.pt", sha256=info["sha256"])
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "junk.pt")
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "missing.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_decode_agree():
    model = tiny("q3")
    x = torch.rand(2, 3, 64, 80)
    enc = model.compress(x)
    cpu = model.decompress(enc["strings"], enc["shape"])["x_hat"]
    gpu = model.cuda().decompress(enc["strings"], enc["shape"])["x_hat"].cpu()
    assert float((torch.round(cpu * 255) - torch.round(gpu * 255)).abs().max()) <= 1
