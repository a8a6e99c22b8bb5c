"""LFW's verification protocol as small pure-numpy functions.

The protocol of Huang et al. (2007), as the paper reports it (Bian et al. 2019, Sec. 4)
and as insightface evaluates it: the 6,000 pairs of ``pairs.txt`` fall into 10 folds;
for each fold the distance threshold is chosen on the other nine (the one that
maximises their accuracy) and accuracy is measured on the held-out fold. The result is
the mean and (population) standard deviation over the 10 folds.

Also here: ROC curve, AUC, and TAR at a fixed FAR. A pair is predicted "same person"
when its distance is at most the threshold. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

METRICS = ("euclidean", "cosine")


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Row-wise distances between two ``(N, D)`` embedding arrays.

    ``euclidean``: ``||a - b||``; ``cosine``: ``1 - cos(a, b)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"embeddings must be two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    if metric == "euclidean":
        return np.linalg.norm(a - b, axis=1)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        if np.any(na == 0) or np.any(nb == 0):
            raise ValueError("cosine distance of a zero embedding is undefined")
        return 1.0 - np.sum(a * b, axis=1) / (na * nb)
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def _check(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(distances, dtype=np.float64).ravel()
    s = np.asarray(same).astype(bool).ravel()
    if d.shape != s.shape:
        raise ValueError(f"{d.size} distances but {s.size} labels")
    if d.size == 0:
        raise ValueError("no pairs")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite")
    return d, s


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy on these pairs, and that accuracy.

    Every split between two distinct sorted distances is a candidate (their midpoint),
    plus one below all and one above all; ties keep the smallest threshold.
    """
    d, s = _check(distances, same)
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    n = d.size
    # accept the first i pairs (distance <= threshold) for i = 0..n
    same_cum = np.concatenate([[0], np.cumsum(s)])
    diff_total = n - s.sum()
    diff_cum = np.concatenate([[0], np.cumsum(~s)])
    correct = same_cum + (diff_total - diff_cum)
    # a split after position i-1 is valid only between distinct values
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = d[1:] > d[:-1]
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        thr = d[0] - 1e-6 - abs(d[0]) * 1e-9
    elif i == n:
        thr = d[-1] + 1e-6 + abs(d[-1]) * 1e-9
    else:
        thr = 0.5 * (d[i - 1] + d[i])
    return float(thr), float(correct[i] / n)


def accuracy(distances: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified correctly at ``threshold``."""
    d, s = _check(distances, same)
    return float(np.mean((d <= threshold) == s))


@dataclass
class KFoldResult:
    """Per-fold accuracies and thresholds of the 10-fold protocol."""

    accuracies: list[float]
    thresholds: list[float]
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean = float(np.mean(self.accuracies))
        self.std = float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} ± {100 * self.std:.2f} % ({len(self.accuracies)} folds)"


def kfold_accuracy(
    distances: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None, n_folds: int = 10
) -> KFoldResult:
    """LFW's k-fold accuracy: each fold's threshold is chosen on the other folds.

    ``folds`` gives each pair's fold index (as in ``pairs.txt``); without it the pairs are
    split into ``n_folds`` contiguous folds, which is ``pairs.txt``'s own order.
    """
    d, s = _check(distances, same)
    if folds is None:
        if d.size < n_folds:
            raise ValueError(f"{d.size} pairs cannot make {n_folds} folds")
        folds = np.repeat(np.arange(n_folds), int(np.ceil(d.size / n_folds)))[: d.size]
    folds = np.asarray(folds).ravel()
    if folds.shape != d.shape:
        raise ValueError(f"{folds.size} fold indices for {d.size} pairs")
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError("the k-fold protocol needs at least two folds")
    accs, thrs = [], []
    for k in ids:
        test = folds == k
        thr, _ = best_threshold(d[~test], s[~test])
        thrs.append(thr)
        accs.append(accuracy(d[test], s[test], thr))
    return KFoldResult(accuracies=accs, thresholds=thrs)


def roc_curve(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(far, tar, thresholds)``, thresholds ascending from below the smallest distance.

    FAR = accepted different-person pairs / all different-person pairs;
    TAR = accepted same-person pairs / all same-person pairs.
    """
    d, s = _check(distances, same)
    n_same, n_diff = int(s.sum()), int((~s).sum())
    if n_same == 0 or n_diff == 0:
        raise ValueError("a ROC curve needs both same-person and different-person pairs")
    order = np.argsort(d, kind="stable")
    d, s = d[order], s[order]
    last = np.r_[d[1:] > d[:-1], True]  # keep the last of each run of equal distances
    tp = np.cumsum(s)[last]
    fp = np.cumsum(~s)[last]
    thr = d[last]
    far = np.r_[0.0, fp / n_diff]
    tar = np.r_[0.0, tp / n_same]
    thr = np.r_[d[0] - 1.0, thr]
    return far, tar, thr


def auc(distances: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve (trapezoidal; 1.0 when perfectly separable)."""
    far, tar, _ = roc_curve(distances, same)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def tar_at_far(distances: np.ndarray, same: np.ndarray, far: float = 1e-3) -> float:
    """The highest TAR whose FAR does not exceed ``far``."""
    fars, tars, _ = roc_curve(distances, same)
    ok = fars <= far
    return float(tars[ok].max()) if np.any(ok) else 0.0


def evaluate_pairs(
    distances: np.ndarray, same: np.ndarray, folds: np.ndarray | None = None, far: float = 1e-3
) -> dict:
    """All protocol figures in one dict: ``acc_mean``, ``acc_std``, per-fold, AUC, TAR@FAR."""
    res = kfold_accuracy(distances, same, folds)
    return {
        "acc_mean": res.mean,
        "acc_std": res.std,
        "fold_accuracies": res.accuracies,
        "thresholds": res.thresholds,
        "auc": auc(distances, same),
        f"tar_at_far_{far:g}": tar_at_far(distances, same, far),
        "n_pairs": int(np.asarray(distances).size),
    }
