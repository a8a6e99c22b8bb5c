"""The evaluation engine on a tiny made-up data set with a cheap recogniser."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facekit.evaluate import evaluate, load_results, merge_results, save_results, subset_pairs
from facekit.plots import rate_accuracy_figure, summary_table

from .fakes import TinyRecognizer, make_faces


@pytest.fixture
def faces(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    return make_faces(tmp_path / "faces")


def test_sweep_writes_the_promised_results(faces, tmp_path):
    res = evaluate(faces, codecs={"uncompressed": (None,), "jpeg": (5, 50), "jpeg2000": (0.1, 1.0)},
                   recognizer=TinyRecognizer(), progress=False)
    assert set(res["codecs"]) == {"uncompressed", "jpeg", "jpeg2000"}
    for pts in res["codecs"].values():
        for p in pts:
            assert {"setting", "bpp", "acc_mean", "acc_std", "psnr", "n_pairs"} <= set(p)
            assert 0 <= p["acc_mean"] <= 1 and p["n_pairs"] == 8
    j = res["codecs"]["jpeg"]
    assert j[0]["bpp"] < j[1]["bpp"] and j[0]["psnr"] < j[1]["psnr"]
    assert res["recognizer"]["name"] == "tiny" and res["protocol"]["folds"] == 2
    assert "pairs.txt" in res["data_sha256"]
    prov = res["provenance"]
    assert prov["facekit"] and "numpy" in prov["packages"] and prov["seed"] == 0 and prov["device"]
    path = save_results(res, tmp_path / "out" / "rate_accuracy.json")
    again = load_results(path)
    assert again["codecs"]["jpeg"][0]["bpp"] == pytest.approx(j[0]["bpp"])
    rate_accuracy_figure(again, tmp_path / "out" / "fig.png")
    assert (tmp_path / "out" / "fig.png").stat().st_size > 10_000
    assert "jpeg2000" in summary_table(again)


def test_same_run_twice_gives_identical_numbers(faces):
    kw = dict(codecs={"jpeg": (10,), "webp": (20,)}, recognizer=TinyRecognizer(), progress=False)
    a = evaluate(faces, use_cache=False, **kw)
    b = evaluate(faces, use_cache=False, **kw)
    assert json.dumps(a["codecs"]) == json.dumps(b["codecs"])
    c = evaluate(faces, **kw)  # first run fills the cache; the second reads it
    d = evaluate(faces, **kw)
    assert json.dumps(c["codecs"]) == json.dumps(d["codecs"]) == json.dumps(a["codecs"])


def test_end_to_end_reports_detection(faces):
    res = evaluate(faces, codecs={"jpeg": (20,)}, recognizer=TinyRecognizer(), end_to_end=True, progress=False)
    p = res["codecs"]["jpeg"][0]
    assert p["detection_failures"] == 0
    assert res["protocol"]["alignment"] == "detected on the decoded image"


def test_merge_and_bad_inputs(faces, tmp_path):
    a = evaluate(faces, codecs={"jpeg": (10,)}, recognizer=TinyRecognizer(), progress=False)
    b = evaluate(faces, codecs={"webp": (10,)}, recognizer=TinyRecognizer(), progress=False)
    m = merge_results(a, b)
    assert set(m["codecs"]) == {"jpeg", "webp"} and len(m["runs"]) == 2
    from facekit.errors import CodecError, DataError

    b["protocol"]["per_fold"] = 2
    with pytest.raises(DataError, match="protocols"):
        merge_results(a, b)
    with pytest.raises(CodecError, match="unknown codec"):
        evaluate(faces, codecs=["nope"], recognizer=TinyRecognizer(), progress=False)
    (faces / "Person_A" / "Person_A_0002.jpg").unlink()
    with pytest.raises(DataError, match="missing"):
        evaluate(faces, codecs=["jpeg"], recognizer=TinyRecognizer(), progress=False)
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "none.json")


def test_subset_keeps_balanced_folds():
    from facekit.data.lfw import Pair

    pairs = [Pair(f, f"a{i}", f"b{i}", s) for f in range(3) for s in (True, False) for i in range(10)]
    sub = subset_pairs(pairs, 4)
    assert len(sub) == 12
    assert sum(p.same for p in sub) == 6
    assert subset_pairs(pairs, None) == pairs
    assert np.unique([p.fold for p in sub]).size == 3
