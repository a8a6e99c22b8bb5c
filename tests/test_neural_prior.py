"""facekit-prior/4: integer networks as the range coder's model (facekit.entropy_models.neural)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facekit.entropy_models.neural import PREV, SAME, NeuralPrior, exp_table
from facekit.errors import BitstreamError


def _smooth_codes(rng, c, h, w, bits):
    base = rng.integers(0, 1 << bits, (c, 1, 1))
    q = (base + np.cumsum(rng.integers(-1, 2, (c, h, w)), axis=2)) % (1 << bits)
    q[1:] = (q[:1] + rng.integers(0, 2, (c - 1, h, w))) % (1 << bits)  # later channels follow the first
    return q.astype(np.uint8)


@pytest.fixture(scope="module")
def fitted() -> NeuralPrior:
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    return NeuralPrior.fit([_smooth_codes(rng, 3, 9, 11, 3) for _ in range(40)], 3, steps=150, batch=512)


def test_neural_prior_roundtrip_state_and_length(fitted):
    rng = np.random.default_rng(1)
    assert fitted.format == "facekit-prior/4" and fitted.channels == 3 and fitted.levels == 8
    for _ in range(3):
        q = _smooth_codes(rng, 3, 9, 11, 3)
        data = fitted.encode(q)
        assert np.array_equal(fitted.decode(data, 9, 11), q)
        assert len(data) <= fitted.bits_estimate(q) / 8 + 8
        assert fitted.bits_estimate(q) < 0.8 * q.size * 3  # it learned the structure: well under 3 bits a code
    again = NeuralPrior.from_state(fitted.state())
    assert again.digest() == fitted.digest()
    q = _smooth_codes(rng, 3, 9, 11, 3)
    assert again.encode(q) == fitted.encode(q)
    # every code size decodes (the position inputs scale with the size)
    for h, w in ((1, 1), (2, 7), (13, 4)):
        q = _smooth_codes(rng, 3, h, w, 3)
        assert np.array_equal(fitted.decode(fitted.encode(q), h, w), q)


def test_neural_prior_probabilities_are_integer_exact(fitted):
    """Each row is the stored exp table over its sum: a ratio of integers, the same on every machine."""
    rng = np.random.default_rng(2)
    q = _smooth_codes(rng, 3, 9, 11, 3)
    ii, jj = (a.ravel() for a in np.indices((9, 11)))
    rows = fitted._rows(q, 2, ii, jj)
    assert np.allclose(rows.sum(1), 1.0) and (rows > 0).all()
    t = fitted.table
    for r in rows[:5]:
        ratios = r / r.max()
        k = np.round(-np.log(ratios) * 16).astype(int)  # each entry is table[k] / sum
        np.testing.assert_array_equal(r, t[k] / t[k].sum())


def test_fast_rows_equal_the_int64_reference_bit_for_bit(fitted):
    """The float32/float64 path computes exactly the integers of plain int64 arithmetic, also for
    weights near the bounds the constructor allows."""
    rng = np.random.default_rng(5)
    q = _smooth_codes(rng, 3, 9, 11, 3)
    ii, jj = (a.ravel() for a in np.indices((9, 11)))
    for c in range(3):
        np.testing.assert_array_equal(fitted._rows(q, c, ii, jj), fitted._rows_int64(q, c, ii, jj))
    big = []
    for c, lay in enumerate(fitted.layers):
        n = fitted.n_inputs(c) + 2
        emb = rng.integers(-(2**24) // n + 1, 2**24 // n - 1, lay["emb"].shape)
        w2 = rng.integers(-2000, 2000, lay["w2"].shape)
        w3 = rng.integers(-2000, 2000, lay["w3"].shape)
        big.append({"emb": emb, "b1": np.zeros_like(lay["b1"]), "w2": w2, "b2": rng.integers(-(2**40), 2**40, lay["b2"].shape),
                    "w3": w3, "b3": rng.integers(-(2**40), 2**40, lay["b3"].shape)})
    near = NeuralPrior(3, big)
    for c in range(3):
        np.testing.assert_array_equal(near._rows(q, c, ii, jj), near._rows_int64(q, c, ii, jj))


def test_every_neural_input_is_decoded_before_the_position_that_reads_it(fitted):
    """Changing a code on the same or a later front, or in a later channel, changes no earlier row."""
    rng = np.random.default_rng(3)
    q = _smooth_codes(rng, 3, 9, 11, 3)
    assert all(dj + 2 * di < 0 for di, dj in SAME) and len(PREV) == 25
    for c in range(3):
        for i, j in ((0, 0), (4, 5), (8, 10), (3, 0)):
            before = fitted._rows(q, c, np.array([i]), np.array([j]))
            later = q.copy()
            fi, fj = np.indices((9, 11))
            front = fj + 2 * fi >= j + 2 * i
            later[c][front] = (later[c][front] + 3) % 8
            later[c + 1 :] = (later[c + 1 :] + 5) % 8
            np.testing.assert_array_equal(fitted._rows(later, c, np.array([i]), np.array([j])), before)
    # and an earlier channel does count
    moved = q.copy()
    moved[0] = (moved[0] + 4) % 8
    assert not np.array_equal(fitted._rows(moved, 1, np.array([4]), np.array([5])), fitted._rows(q, 1, np.array([4]), np.array([5])))


def test_neural_prior_codes_only_the_masked_positions_and_refuses_short_payloads(fitted):
    rng = np.random.default_rng(4)
    q = _smooth_codes(rng, 3, 9, 11, 3)
    keep = np.zeros((9, 11), bool)
    keep[2:7, 3:9] = True
    fill = np.array([1, 7, 0], np.uint8)
    q[:, ~keep] = fill[:, None]
    masked = fitted.encode(q, mask=keep)
    assert len(masked) < len(fitted.encode(q))
    assert np.array_equal(fitted.decode(masked, 9, 11, mask=keep, fill=fill.tolist()), q)
    data = fitted.encode(_smooth_codes(rng, 3, 9, 11, 3))
    with pytest.raises(BitstreamError, match="ran out|damaged"):
        fitted.decode(data[: len(data) // 3], 9, 11)
    with pytest.raises(BitstreamError, match="ran out|damaged"):
        fitted.decode(data, 90, 110)
    with pytest.raises(ValueError):
        fitted.encode(np.zeros((4, 9, 11), np.uint8))


def test_neural_prior_refuses_bad_states(fitted):
    state = fitted.state()
    with pytest.raises(ValueError, match="table"):
        NeuralPrior.from_state({**state, "table": torch.from_numpy(exp_table() + 5)})
    layers = [dict(lay) for lay in state["layers"]]
    layers[1]["w3"] = layers[1]["w3"][:, :3]
    with pytest.raises(ValueError, match="shapes"):
        NeuralPrior.from_state({**state, "layers": layers})
    layers = [dict(lay) for lay in state["layers"]]
    layers[0]["emb"] = torch.full_like(layers[0]["emb"], 2**30)
    layers[0]["w2"] = torch.full_like(layers[0]["w2"], 2**30)
    with pytest.raises(ValueError, match="exact arithmetic"):
        NeuralPrior.from_state({**state, "layers": layers})
    with pytest.raises(ValueError, match="facekit-prior/4"):
        NeuralPrior.from_state({**state, "format": "facekit-prior/3"})
    tweaked = [dict(lay) for lay in state["layers"]]
    tweaked[2]["b3"] = tweaked[2]["b3"] + 1
    assert NeuralPrior.from_state({**state, "layers": tweaked}).digest() != fitted.digest()
    with pytest.raises(ValueError, match="codes"):
        NeuralPrior.fit([np.zeros((1, 4, 4), np.uint8), np.zeros((1, 4, 5), np.uint8)], 2, steps=1)
    with pytest.raises(ValueError, match="bits"):
        NeuralPrior.fit([np.full((1, 4, 4), 9, np.uint8)], 3, steps=1)


def test_training_rate_term_refuses_a_neural_prior(fitted):
    from facekit.entropy_models import ContextRate

    with pytest.raises(TypeError, match="count tables"):
        ContextRate(fitted)
