"""The dlib ResNet port on real LFW: 600 pairs of pairs.txt (60 from each fold).

The full 6,000-pair figure (98.85 ± 0.28 %, `facekit lfw eval`) is a benchmark run;
this test checks the same code path on a tenth of it, in CI.
"""

from __future__ import annotations

import pytest

from facekit.recognition.lfw_eval import evaluate_uncompressed


@pytest.mark.lfw
@pytest.mark.slow
def test_uncompressed_accuracy_on_600_pairs(lfw_root):
    r = evaluate_uncompressed(lfw_root, recognizer="dlib-resnet", limit=60, progress=False)
    assert r["n_pairs"] == 600
    print(f"dlib-resnet, 600 LFW pairs: {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %")
    assert r["acc_mean"] >= 0.97
    assert r["auc"] > 0.99
