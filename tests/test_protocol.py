"""The 10-fold protocol on embeddings whose answer is known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from facekit.protocol import (
    accuracy,
    auc,
    best_threshold,
    evaluate_pairs,
    kfold_accuracy,
    pair_distances,
    roc_curve,
    tar_at_far,
)


def labels(n_folds=10, per=60):
    same = np.tile(np.r_[np.ones(per // 2, bool), np.zeros(per // 2, bool)], n_folds)
    folds = np.repeat(np.arange(n_folds), per)
    return same, folds


def test_perfectly_separable_gives_100_percent():
    same, folds = labels()
    d = np.where(same, 0.3, 1.2) + np.linspace(0, 0.1, same.size)
    r = kfold_accuracy(d, same, folds)
    assert r.mean == 1.0 and r.std == 0.0
    assert all(0.4 < t < 1.2 for t in r.thresholds)
    assert auc(d, same) == pytest.approx(1.0)
    assert tar_at_far(d, same, 1e-3) == 1.0


def test_random_distances_give_chance():
    rng = np.random.default_rng(1)
    same, folds = labels(per=600)
    d = rng.random(same.size)
    r = kfold_accuracy(d, same, folds)
    assert 0.45 < r.mean < 0.55
    assert 0.45 < auc(d, same) < 0.55


def test_known_overlap():
    # same-person distances uniform on [0, 1], different on [0.8, 1.8]: the best threshold
    # sits in [0.8, 1.0]; the optimum accepts all same pairs and rejects all but 20% of
    # the different ones at 1.0, or rejects 20% of the same at 0.8: accuracy 90%.
    n = 20000
    same = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    d = np.r_[np.linspace(0, 1, n), np.linspace(0.8, 1.8, n)]
    thr, acc = best_threshold(d, same)
    assert 0.79 <= thr <= 1.01
    assert acc == pytest.approx(0.9, abs=2e-3)
    rng = np.random.default_rng(0)
    perm = rng.permutation(2 * n)
    folds = np.arange(2 * n) % 10
    r = kfold_accuracy(d[perm], same[perm], folds)
    assert r.mean == pytest.approx(0.9, abs=0.01)


def test_threshold_chosen_on_other_folds_not_test_fold():
    # fold 0 has its own scale: a threshold fitted on it would score 100%, the protocol must not
    same = np.tile(np.r_[np.ones(10, bool), np.zeros(10, bool)], 3)
    folds = np.repeat(np.arange(3), 20)
    d = np.where(same, 0.2, 0.6).astype(float)
    d[:20] = np.where(same[:20], 1.0, 2.0)
    r = kfold_accuracy(d, same, folds)
    assert r.accuracies[0] == 0.5  # threshold ~0.4 from folds 1-2 rejects everything in fold 0
    assert r.accuracies[1] == 1.0


def test_pair_distances_metrics():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [0.0, 4.0]])
    np.testing.assert_allclose(pair_distances(a, b), [np.sqrt(2), 2.0])
    np.testing.assert_allclose(pair_distances(a, b, "cosine"), [1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="unknown metric"):
        pair_distances(a, b, "manhattan")
    with pytest.raises(ValueError, match="shape"):
        pair_distances(a, b[:1])


def test_roc_is_monotone_and_ends_at_one():
    rng = np.random.default_rng(3)
    same = rng.random(500) < 0.5
    d = rng.normal(np.where(same, 0.5, 1.0), 0.2)
    far, tar, thr = roc_curve(d, same)
    assert far[0] == 0 and tar[0] == 0 and far[-1] == 1 and tar[-1] == 1
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0) and np.all(np.diff(thr) > 0)
    assert 0.9 < auc(d, same) < 1.0


def test_evaluate_pairs_and_bad_input():
    same, folds = labels()
    d = np.where(same, 0.1, 0.9)
    r = evaluate_pairs(d, same, folds)
    assert r["acc_mean"] == 1.0 and r["n_pairs"] == same.size and len(r["fold_accuracies"]) == 10
    assert accuracy(d, same, 0.5) == 1.0
    with pytest.raises(ValueError, match="labels"):
        kfold_accuracy(d, same[:-1], folds)
    with pytest.raises(ValueError, match="finite"):
        kfold_accuracy(np.r_[d[:-1], np.nan], same, folds)
    with pytest.raises(ValueError, match="both"):
        roc_curve(d[same], same[same])
