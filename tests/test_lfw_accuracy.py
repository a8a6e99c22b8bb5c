"""`facekit lfw eval`: the dlib ResNet port on real LFW, and the command on made-up faces.

On real LFW, 600 pairs of pairs.txt (60 from each fold): the full 6,000-pair figure
(98.83 ± 0.26 %, the ``uncompressed`` row of results/rate_accuracy.json) is a benchmark
run; this checks the same code path on a tenth of it, in CI. A second run reads the
embedding cache instead of embedding again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facekit.cli import main
from facekit.recognition.align import FaceLocation
from facekit.recognition.lfw_eval import describe_fallbacks, evaluate_uncompressed

from .fakes import TinyRecognizer, make_faces


def count_embeddings(monkeypatch, cls) -> list[int]:
    """Patch ``cls.forward`` to record the batch size of every embedding computed."""
    calls: list[int] = []
    real = cls.forward

    def forward(self, chips):
        calls.append(len(chips))
        return real(self, chips)

    monkeypatch.setattr(cls, "forward", forward)
    return calls


def test_second_lfw_eval_reads_the_embedding_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    root = make_faces(tmp_path / "lfw")
    calls = count_embeddings(monkeypatch, TinyRecognizer)
    argv = ["lfw", "eval", "--root", str(root), "--recognizer", "tests.fakes:TinyRecognizer",
            "--device", "cpu", "--out", str(tmp_path / "first.json")]
    assert main(argv) == 0
    first = capsys.readouterr().out.splitlines()
    n_images = json.loads((tmp_path / "first.json").read_text())["n_images"]
    assert sum(calls) == n_images == 14
    calls.clear()
    argv[-1] = str(tmp_path / "second.json")
    assert main(argv) == 0
    second = capsys.readouterr().out.splitlines()
    assert calls == []  # no embedding computed: all read from the cache
    assert first[0] == second[0] and first[0].startswith("tiny on uncompressed LFW (8 pairs, 2-fold): ")
    assert first[0].endswith("% accuracy")  # the accuracy line comes first
    assert second[2] == "detector fallbacks: none; dlib's HOG detector found a face in all 14 images."
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("first.json", "second.json"))
    assert a["fold_accuracies"] == b["fold_accuracies"] and a["auc"] == b["auc"]


def test_fallbacks_are_explained_in_words(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    root = make_faces(tmp_path / "lfw")
    methods = {"Person_B/Person_B_0002.jpg": "mtcnn", "Person_B/Person_B_0003.jpg": "centre"}
    real_locate = TinyRecognizer.locate

    def locate_named(self, image):  # find_alignments passes images, not names: match by pixels
        loc = real_locate(self, image)
        for name, method in methods.items():
            if np.array_equal(image, self.read_original(root / name)):
                return FaceLocation(loc.theta, loc.matrix, loc.landmarks, loc.box, method, loc.image_size, True)
        return loc

    monkeypatch.setattr(TinyRecognizer, "locate", locate_named)
    r = evaluate_uncompressed(root, "tests.fakes:TinyRecognizer", device="cpu", progress=False)
    assert r["fallbacks"] == {"hog": 12, "mtcnn": 1, "centre": 1, "fallbacks": 2}
    assert r["fallback_images"] == sorted(methods)
    text = describe_fallbacks(r)
    assert text == (
        "detector fallbacks: 2 of 14 images (14.29 %): dlib's HOG detector found no face in them, "
        "so MTCNN was used for 1 and a centred crop (LFW centres the named person) for 1. "
        "Their pairs are still scored; `--out` lists them."
    )


@pytest.mark.lfw
@pytest.mark.slow
def test_uncompressed_accuracy_on_600_pairs(lfw_root):
    r = evaluate_uncompressed(lfw_root, recognizer="dlib-resnet", limit=60, progress=False)
    assert r["n_pairs"] == 600
    print(f"dlib-resnet, 600 LFW pairs: {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %")
    assert r["acc_mean"] >= 0.97
    assert r["auc"] > 0.99


@pytest.mark.lfw
def test_second_run_on_real_lfw_computes_no_embeddings(lfw_root, monkeypatch):
    from facekit.recognition.dlib_resnet import DlibResNet

    first = evaluate_uncompressed(lfw_root, recognizer="dlib-resnet", limit=2, device="cpu", progress=False)
    calls = count_embeddings(monkeypatch, DlibResNet)
    second = evaluate_uncompressed(lfw_root, recognizer="dlib-resnet", limit=2, device="cpu", progress=False)
    assert calls == []
    assert second["n_pairs"] == first["n_pairs"] == 20
    assert second["fold_accuracies"] == first["fold_accuracies"]
