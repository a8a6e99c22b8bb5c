"""The learned codec's networks, quantiser, PNG storage and weights files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from facekit.errors import BitstreamError, ImageError, WeightsError
from facekit.models import (
    RATE_POINTS,
    FaceCodecNet,
    Quantizer,
    RatePoint,
    build_model,
    load_weights,
    pack_png,
    save_weights,
    unpack_png,
)

TINY = {"enc_widths": (8, 8, 8), "dec_widths": (8, 8, 8), "dec_blocks": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


# --------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("shape,bits", [((1, 9, 7), 1), ((2, 8, 8), 4), ((3, 5, 6), 6), ((4, 16, 16), 3), ((6, 4, 5), 8), ((4, 3, 3), 2)])
def test_png_roundtrip_is_lossless_and_standard(shape, bits):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1 << bits, shape).astype(np.uint8)
    for effort in (0, 1, 2):
        png = pack_png(q, bits, effort=effort)
        assert np.array_equal(unpack_png(png, *shape, bits), q)
    with Image.open(io.BytesIO(png)) as im:  # any PNG reader can open it
        im.load()
    assert len(pack_png(q, bits, effort=2)) <= len(pack_png(q, bits, effort=0))


def test_png_smaller_than_pillow_optimize():
    q = np.zeros((1, 32, 32), np.uint8)
    q[0, 8:24, 8:24] = 9
    buf = io.BytesIO()
    Image.fromarray(q[0]).save(buf, format="PNG", optimize=True)
    assert len(pack_png(q, 4)) <= len(buf.getvalue())


def test_png_header_checked_before_decoding():
    q = np.zeros((2, 8, 8), np.uint8)
    png = pack_png(q, 4)
    with pytest.raises(BitstreamError, match="promises"):
        unpack_png(png, 2, 16, 8, 4)
    with pytest.raises(BitstreamError, match="colour type|cannot hold"):
        unpack_png(png, 5, 8, 8, 4)
    with pytest.raises(BitstreamError, match="not a PNG"):
        unpack_png(b"GIF89a" + png, 2, 8, 8, 4)
    big = pack_png(np.full((1, 4, 4), 200, np.uint8), 8)
    with pytest.raises(BitstreamError, match="above"):
        unpack_png(big, 1, 4, 4, 4)
    broken = bytearray(png)
    broken[-20] ^= 0xFF  # inside the IDAT data
    with pytest.raises(BitstreamError):
        unpack_png(bytes(broken), 2, 8, 8, 4)


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


# --------------------------------------------------------------------------- context prior


def _smooth_codes(rng, c, h, w, bits):
    base = rng.integers(0, 1 << bits, (c, 1, 1))
    return ((base + np.cumsum(rng.integers(-1, 2, (c, h, w)), axis=2)) % (1 << bits)).astype(np.uint8)


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
@pytest.mark.parametrize("c,h,w,bits", [(4, 16, 16, 3), (3, 9, 13, 6), (1, 5, 7, 1), (2, 1, 1, 4), (2, 7, 2, 2)])
def test_context_prior_roundtrip(c, h, w, bits, left):
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(1)
    prior = ContextPrior.fit([_smooth_codes(rng, c, h, w, bits) for _ in range(10)], bits, left=left)
    assert prior.left is left and prior.format.endswith("/2" if left else "/1")
    for _ in range(3):
        q = _smooth_codes(rng, c, h, w, bits)
        data = prior.encode(q)
        assert np.array_equal(prior.decode(data, h, w), q)
        assert len(data) <= prior.bits_estimate(q) / 8 + 8  # within a few bytes of the ideal length
    again = ContextPrior.from_state(prior.state())
    assert again.digest() == prior.digest()
    with pytest.raises(ValueError):
        prior.encode(np.full((c + 1, h, w), 0, np.uint8))


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
def test_context_prior_codes_only_the_masked_positions(left):
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(4)
    prior = ContextPrior.fit([_smooth_codes(rng, 3, 12, 14, 4) for _ in range(10)], 4, left=left)
    q = _smooth_codes(rng, 3, 12, 14, 4)
    keep = np.zeros((12, 14), bool)
    keep[3:9, 2:11] = True
    keep[5, 0] = True  # a lone kept cell, and rows with nothing kept
    fill = np.array([1, 7, 15], np.uint8)
    q[:, ~keep] = fill[:, None]
    masked, whole = prior.encode(q, mask=keep), prior.encode(q)
    assert len(masked) < len(whole)
    assert np.array_equal(prior.decode(masked, 12, 14, mask=keep, fill=fill.tolist()), q)
    assert prior.information(q, mask=keep) < prior.information(q)
    # one fill value per channel, each a level of the code
    for bad in ([1, 7], [1, 7, 16]):
        with pytest.raises(BitstreamError, match="fill"):
            prior.decode(masked, 12, 14, mask=keep, fill=bad)
    with pytest.raises(ValueError, match="mask"):
        prior.encode(q, mask=keep[:-1])
    with pytest.raises(ValueError, match="mask"):
        prior.encode(q, mask=keep.astype(np.uint8))


def test_context_prior_beats_png_on_correlated_codes():
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(2)

    def vertical(c=4, h=16, w=16, bits=3):  # correlated down the columns, like a learned code
        return np.swapaxes(_smooth_codes(rng, c, w, h, bits), 1, 2).copy()

    prior = ContextPrior.fit([vertical() for _ in range(50)], 3)
    q = vertical()
    assert len(prior.encode(q)) < len(pack_png(q, 3))


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
def test_context_prior_refuses_payload_too_short_for_declared_size(left):
    import time

    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(3)
    prior = ContextPrior.fit([_smooth_codes(rng, 4, 16, 16, 3) for _ in range(10)], 3, left=left)
    q = _smooth_codes(rng, 4, 16, 16, 3)
    data = prior.encode(q)
    t = time.time()
    for bad in (b"", b"\xff" * 8, data[: len(data) // 2]):
        with pytest.raises(BitstreamError, match="ran out|cannot be decoded"):
            prior.decode(bad, 1024, 1024)
    with pytest.raises(BitstreamError, match="ran out"):
        prior.decode(data, 64, 64)  # a real payload claiming a bigger code
    assert time.time() - t < 2


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 6), (6, 1), (5, 8), (9, 4)])
def test_coding_steps_visit_each_position_once_after_its_neighbours(h, w, left):
    """Every neighbour a context reads lies on an earlier step (or is "not available")."""
    from facekit.models.quantizer import ContextPrior

    prior = ContextPrior(np.zeros((1, 4**4 if left else 4**3, 4), np.int64), 2, 3, left=left)
    when = np.full((h, w), -1)
    for t, (ii, jj) in enumerate(prior.steps(h, w)):
        assert (when[ii, jj] == -1).all()
        when[ii, jj] = t
    assert (when >= 0).all()
    for i in range(h):
        for j in range(w):
            needed = [(i - 1, j), (i - 1, max(j - 1, 0)), (i - 1, min(j + 1, w - 1))] + ([(i, j - 1)] if left else [])
            for a, b in needed:
                if a >= 0 and b >= 0:
                    assert when[a, b] < when[i, j], ((i, j), (a, b))


def test_left_prior_codes_row_correlated_codes_in_fewer_bytes_and_keeps_its_tables():
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(7)
    train = [_smooth_codes(rng, 2, 20, 20, 4) for _ in range(30)]  # correlated along rows
    rows, left = ContextPrior.fit(train, 4), ContextPrior.fit(train, 4, left=True)
    q = _smooth_codes(rng, 2, 20, 20, 4)
    assert len(left.encode(q)) < 0.8 * len(rows.encode(q))
    assert left.bins_per == (8, 8, 6, 3) and "left (8 bins)" in left.describe()
    state = left.state()
    assert "counts" not in state and state["counts_zlib"].dtype == torch.uint8
    again = ContextPrior.from_state(state)
    assert again.digest() == left.digest() and np.array_equal(again.counts, left.counts)
    assert again.digest() != ContextPrior.fit(train, 4, bins=(8, 8, 6, 2), left=True).digest()
    short = {**state, "counts_zlib": state["counts_zlib"][:-3]}
    with pytest.raises(ValueError, match="packed counts"):
        ContextPrior.from_state(short)
    with pytest.raises(ValueError, match="state"):
        ContextPrior.from_state({**state, "format": "facekit-prior/9"})
    with pytest.raises(ValueError, match="bins"):
        ContextPrior(rows.counts, 4, (8, 8, 6), left=True)
    for channels, bits in ((2, 4), (3, 6), (5, 6), (1, 1)):
        per = ContextPrior.default_bins(bits, channels, left=True)
        assert np.prod([b + 1 for b in per]) * (1 << bits) * channels <= 250_000


#: sha256 of the two streams below as the row-by-row coder wrote them before the left layout existed
GOLDEN_ROWS_STREAMS = "21e07a54b78100ba3d3254b0a7230c95d3d0a822dd081fba3153bf70784278aa"


def test_rows_layout_streams_do_not_change():
    """facekit-prior/1 streams stay byte for byte what earlier releases wrote (and decoded)."""
    import hashlib

    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(11)
    prior = ContextPrior.fit([_smooth_codes(rng, 3, 10, 12, 4) for _ in range(10)], 4)
    q = _smooth_codes(rng, 3, 10, 12, 4)
    keep = np.zeros((10, 12), bool)
    keep[2:8, 3:10] = True
    streams = prior.encode(q) + b"|" + prior.encode(np.where(keep, q, 0).astype(np.uint8), mask=keep)
    assert hashlib.sha256(streams).hexdigest() == GOLDEN_ROWS_STREAMS


# --------------------------------------------------------------------------- facekit-prior/3


@pytest.mark.parametrize("c,h,w,bits", [(4, 16, 16, 3), (3, 9, 13, 6), (1, 5, 7, 1), (2, 1, 1, 4), (2, 7, 2, 2)])
def test_selected_prior_roundtrip_state_and_masks(c, h, w, bits):
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(11)
    prior = ContextPrior.select([_smooth_codes(rng, c, h, w, bits) for _ in range(12)], bits)
    assert prior.format == "facekit-prior/3" and prior.left
    assert prior.selection[0]["neighbours"] == [] and [s["neighbours"] for s in prior.selection][-1] == list(prior.neighbours)
    assert np.allclose(prior.probs.sum(axis=2), 1.0) and (prior.probs > 0).all()
    for _ in range(3):
        q = _smooth_codes(rng, c, h, w, bits)
        data = prior.encode(q)
        assert np.array_equal(prior.decode(data, h, w), q)
        assert len(data) <= prior.bits_estimate(q) / 8 + 8
    keep = np.zeros((h, w), bool)
    keep[h // 3 :, : max(1, w - 1)] = True
    q = _smooth_codes(rng, c, h, w, bits)
    fill = rng.integers(0, 1 << bits, c).astype(np.uint8)
    q[:, ~keep] = fill[:, None]
    assert np.array_equal(prior.decode(prior.encode(q, mask=keep), h, w, mask=keep, fill=fill.tolist()), q)
    again = ContextPrior.from_state(prior.state())
    assert again.digest() == prior.digest() and np.array_equal(again.probs, prior.probs)
    assert (again.neighbours, again.bins_per, again.beta) == (prior.neighbours, prior.bins_per, prior.beta)


def test_every_prior3_neighbour_is_decoded_before_the_position_that_reads_it():
    """Same-channel offsets lie on earlier wavefronts; each offset alone round-trips a random code."""
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(12)
    steps = ContextPrior(np.zeros((1, 1, 4), np.int64), 2, [], neighbours=[]).steps(6, 7)
    when = np.full((6, 7), -1)
    for t, (ii, jj) in enumerate(steps):
        when[ii, jj] = t
    for name, (dc, di, dj) in ContextPrior.OFFSETS.items():
        if dc == 0:
            assert dj + 2 * di < 0, name
            for i in range(6):
                for j in range(7):
                    if 0 <= i + di < 6 and 0 <= j + dj < 7:
                        assert when[i + di, j + dj] < when[i, j], (name, i, j)
        codes = [rng.integers(0, 4, (3, 6, 7)).astype(np.uint8) for _ in range(5)]
        prior = ContextPrior.fit(codes, 2, [4], neighbours=[name], beta=1.0)
        assert np.array_equal(prior.decode(prior.encode(codes[0]), 6, 7), codes[0]), name


def test_select_finds_the_neighbour_that_predicts_and_backs_off_in_its_order():
    from facekit.models.quantizer import ContextPrior

    rng = np.random.default_rng(13)
    train = [_smooth_codes(rng, 2, 20, 20, 4) for _ in range(30)]  # correlated along rows: "left" predicts
    prior = ContextPrior.select(train, 4)
    assert prior.neighbours[0] == "left" and prior.bins_per[0] == 16
    held = [s["held_out_bytes"] for s in prior.selection]
    assert held == sorted(held, reverse=True) and held[-1] < 0.7 * held[0]
    q = _smooth_codes(rng, 2, 20, 20, 4)
    assert len(prior.encode(q)) < len(ContextPrior.fit(train, 4, left=True).encode(q))
    # the table cap bounds the context: with room for one 16-level neighbour only, one is chosen
    small = ContextPrior.select(train, 4, cap=2 * 17 * 16)
    assert len(small.neighbours) == 1 and small.counts.size <= 2 * 17 * 16
    assert "back-off 4" in prior.describe() and "left (16 bins)" in prior.describe()
    # an unseen context gets the distribution of the context of its first neighbours
    fine = ContextPrior.fit(train[:3], 4, [16, 16], neighbours=["left", "up"], beta=4.0)
    coarse = ContextPrior.fit(train[:3], 4, [16], neighbours=["left"], beta=4.0)
    unseen = np.flatnonzero(fine.counts[0].sum(axis=1) == 0)
    seen_left = unseen[coarse.counts[0].sum(axis=1)[unseen // 17] > 0]
    assert len(seen_left) > 10
    assert np.allclose(fine.probs[0, seen_left], coarse.probs[0, seen_left // 17])
    assert fine.probs[0, seen_left].max(axis=1).mean() > 2.0 / fine.levels  # not a uniform guess


def test_prior3_refuses_bad_layouts():
    from facekit.models.quantizer import ContextPrior

    zeros = np.zeros((1, 5, 4), np.int64)
    with pytest.raises(ValueError, match="distinct names"):
        ContextPrior(zeros, 2, [4], neighbours=["below"])
    with pytest.raises(ValueError, match="distinct names"):
        ContextPrior(np.zeros((1, 25, 4), np.int64), 2, [4, 4], neighbours=["up", "up"])
    with pytest.raises(ValueError, match="beta"):
        ContextPrior(zeros, 2, [4], neighbours=["up"], beta=-1)
    with pytest.raises(ValueError, match="back-off"):
        ContextPrior(np.zeros((1, 64, 4), np.int64), 2, 3, beta=2.0)
    with pytest.raises(ValueError, match="counts"):
        ContextPrior(zeros, 2, [8], neighbours=["up"])
    with pytest.raises(ValueError, match="bins"):
        ContextPrior.fit([np.zeros((1, 3, 3), np.uint8)], 2, neighbours=["up"])
    with pytest.raises(ValueError, match="two training codes"):
        ContextPrior.select([np.zeros((1, 3, 3), np.uint8)], 2)
    a = ContextPrior(zeros, 2, [4], neighbours=["up"], beta=1.0)
    assert a.digest() != ContextPrior(zeros, 2, [4], neighbours=["left"], beta=1.0).digest()
    assert a.digest() != ContextPrior(zeros, 2, [4], neighbours=["up"], beta=2.0).digest()
