import numpy as np
import pytest

from facekit.bdrate import bd_quality, bd_rate, monotone_envelope, quality_at, rate_at


def test_half_the_bits_is_fifty_percent_saving():
    r = np.array([0.1, 0.2, 0.4, 0.8])
    q = np.array([0.80, 0.90, 0.95, 0.98])
    res = bd_rate(r / 2, q, r, q)
    assert res["saving"] == pytest.approx(0.5)
    assert res["range"] == (0.80, 0.98)
    assert bd_rate(r, q, r, q)["saving"] == pytest.approx(0.0)
    assert bd_rate(r * 2, q, r, q)["saving"] == pytest.approx(-1.0)


def test_no_overlap_and_envelope():
    assert bd_rate([0.1, 0.2], [0.5, 0.6], [0.1, 0.2], [0.7, 0.8])["saving"] is None
    r, q = monotone_envelope([0.4, 0.1, 0.2, 0.3], [0.9, 0.8, 0.95, 0.85])
    np.testing.assert_allclose(r, [0.1, 0.2])
    np.testing.assert_allclose(q, [0.8, 0.95])


def test_rate_and_quality_at():
    r, q = [0.1, 0.4], [0.8, 0.9]
    assert rate_at(r, q, 0.85) == pytest.approx(0.2)
    assert rate_at(r, q, 0.95) is None
    assert quality_at(r, q, 0.2) == pytest.approx(0.85)
    assert quality_at(r, q, 1.0) is None


def test_bd_quality_is_the_mean_difference_at_equal_rate_over_the_common_range():
    r = bd_quality([0.1, 0.4], [27.0, 33.0], [0.1, 0.4], [28.0, 34.0])
    assert r["delta"] == pytest.approx(-1.0) and r["range"] == (0.1, 0.4)
    r = bd_quality([0.05, 0.2, 0.8], [20.0, 30.0, 40.0], [0.1, 0.4], [25.0, 35.0], lo=0.1, hi=0.3)
    assert r["range"] == pytest.approx((0.1, 0.3)) and r["delta"] == pytest.approx(0.0, abs=1e-9)
    assert bd_quality([0.05, 0.08], [20, 22], [0.1, 0.4], [25, 35])["delta"] is None
