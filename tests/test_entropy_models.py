"""The entropy models: the PNG storage of the codes and the count-table context priors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from facekit.entropy_models import ContextPrior, pack_png, unpack_png
from facekit.errors import BitstreamError

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



# --------------------------------------------------------------------------- context prior


def _smooth_codes(rng, c, h, w, bits):
    base = rng.integers(0, 1 << bits, (c, 1, 1))
    return ((base + np.cumsum(rng.integers(-1, 2, (c, h, w)), axis=2)) % (1 << bits)).astype(np.uint8)


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
@pytest.mark.parametrize("c,h,w,bits", [(4, 16, 16, 3), (3, 9, 13, 6), (1, 5, 7, 1), (2, 1, 1, 4), (2, 7, 2, 2)])
def test_context_prior_roundtrip(c, h, w, bits, left):
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
    rng = np.random.default_rng(2)

    def vertical(c=4, h=16, w=16, bits=3):  # correlated down the columns, like a learned code
        return np.swapaxes(_smooth_codes(rng, c, w, h, bits), 1, 2).copy()

    prior = ContextPrior.fit([vertical() for _ in range(50)], 3)
    q = vertical()
    assert len(prior.encode(q)) < len(pack_png(q, 3))


@pytest.mark.parametrize("left", [False, True], ids=["rows", "left"])
def test_context_prior_refuses_payload_too_short_for_declared_size(left):
    import time

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
