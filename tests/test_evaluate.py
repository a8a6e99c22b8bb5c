"""The evaluation engine on a tiny made-up data set with a cheap recogniser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facekit.errors import RecognizerError
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


def test_merge_by_point_keeps_other_settings(faces):
    kw = dict(recognizer=TinyRecognizer(), progress=False)
    a = evaluate(faces, codecs={"jpeg": (5, 50)}, **kw)
    b = evaluate(faces, codecs={"jpeg": (20,), "webp": (10,)}, **kw)
    m = merge_results(a, b, by_point=True)
    assert [p["setting"] for p in m["codecs"]["jpeg"]] == [5, 20, 50]  # ordered by bpp
    bpps = [p["bpp"] for p in m["codecs"]["jpeg"]]
    assert bpps == sorted(bpps) and set(m["codecs"]) == {"jpeg", "webp"}
    c = evaluate(faces, codecs={"jpeg": (50,)}, **kw)
    c["codecs"]["jpeg"][0]["acc_mean"] = -1.0  # a re-measured point replaces the old one
    m2 = merge_results(m, c, by_point=True)
    assert [p["setting"] for p in m2["codecs"]["jpeg"]] == [5, 20, 50]
    assert m2["codecs"]["jpeg"][-1]["acc_mean"] == -1.0
    assert [p["setting"] for p in merge_results(m, c)["codecs"]["jpeg"]] == [50]  # whole-codec default


def test_batches_give_the_same_numbers_as_single_images(faces):
    kw = dict(codecs={"jpeg": (10,)}, recognizer=TinyRecognizer(), progress=False, use_cache=False)
    one = evaluate(faces, batch_size=1, **kw)
    many = evaluate(faces, batch_size=7, **kw)
    a, b = one["codecs"]["jpeg"][0], many["codecs"]["jpeg"][0]
    for key in ("bpp", "psnr", "acc_mean", "acc_std", "n_pairs"):  # the bytes and the verdicts
        assert a[key] == b[key], key
    # embeddings of a batch differ from one-image batches by float rounding alone
    assert np.allclose(a["thresholds"], b["thresholds"], rtol=1e-6)


def test_codec_batch_defaults_loop_over_images():
    from facekit.codecs import get_codec

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    c = get_codec("jpeg")
    datas = c.encode_batch(imgs, 30)
    assert datas == [c.encode(im, 30) for im in imgs]
    assert all(np.array_equal(a, c.decode(d)) for a, d in zip(c.decode_batch(datas), datas, strict=True))


def test_sweep_script_runs_jobs_in_workers_and_merges_points(faces, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "ra.json"
    cmd = [sys.executable, str(root / "benchmarks" / "rate_accuracy.py"), "--root", str(faces), "--workers", "2",
           "--recognizer", "tests.fakes:TinyRecognizer", "--only", "jpeg:50", "jpeg:5", "webp:10", "nope:1",
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nope@1: failed (CodecError" in r.stdout
    res = load_results(out)
    assert [p["setting"] for p in res["codecs"]["jpeg"]] == [5, 50] and len(res["codecs"]["webp"]) == 1
    assert res["recognizer"]["name"] == "tiny" and len(res["runs"]) == 3
    assert out.with_suffix(".png").exists() and "jpeg" in out.with_suffix(".md").read_text()


def test_recognizer_by_import_path():
    from facekit.errors import RecognizerError
    from facekit.recognition import get_recognizer

    assert get_recognizer("tests.fakes:TinyRecognizer").name == "tiny"
    with pytest.raises(RecognizerError, match="cannot import"):
        get_recognizer("tests.fakes:Nope")
    with pytest.raises(RecognizerError, match="not a facekit"):
        get_recognizer("tests.fakes:make_faces")


def test_provenance_records_the_commit_a_run_started_with(faces, monkeypatch):
    import facekit.provenance as prov

    prov.code_commit.cache_clear()
    monkeypatch.setattr(prov, "git_commit", lambda path=None: "a" * 40)

    def checkout_moves_on(name, point):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(prov, "git_commit", lambda path=None: "b" * 40)

    res = evaluate(faces, codecs={"jpeg": (10, 20)}, recognizer=TinyRecognizer(), progress=False,
                   on_point=checkout_moves_on)
    assert res["provenance"]["git_commit"] == "a" * 40
    assert prov.git_commit() == "b" * 40
    prov.code_commit.cache_clear()


def _rerate_module(root):
    """benchmarks/rerate.py as a module (benchmarks/ is not a package)."""
    import sys

    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import rerate
    finally:
        sys.path.remove(str(root / "benchmarks"))
    return rerate


def test_rerate_script_keeps_the_accuracy_and_checks_every_stream(faces, tmp_path, monkeypatch):
    """benchmarks/rerate.py: new bpp of a range-coded point, its accuracy carried, its codes checked."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from facekit.codecs import get_codec
    from facekit.errors import CodecError

    root = Path(__file__).resolve().parent.parent
    res = evaluate(faces, codecs={"facekit-jointrate-entropy": ("q1",)}, recognizer=TinyRecognizer(), progress=False)
    src = save_results(res, tmp_path / "ra.json")
    out = tmp_path / "rr.json"
    cmd = [sys.executable, str(root / "benchmarks" / "rerate.py"), "--results", str(src), "--root", str(faces),
           "--recognizer", "tests.fakes:TinyRecognizer", "--only", "facekit-jointrate-entropy:q1", "--out", str(out)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-2000:]
    before, after = res["codecs"]["facekit-jointrate-entropy"][0], load_results(out)["codecs"]["facekit-jointrate-entropy"][0]
    assert after["bpp"] == pytest.approx(before["bpp"])  # same prior, same bytes
    assert after["acc_mean"] == before["acc_mean"] and after["fold_accuracies"] == before["fold_accuracies"]
    rec = after["rate_remeasured"]
    assert rec["images_checked"] == before["n_images"] and rec["bpp_before"] == before["bpp"]
    assert rec["prior_format"].startswith("facekit-prior/")
    merged = merge_results(res, load_results(out), by_point=True)
    assert merged["codecs"]["facekit-jointrate-entropy"][0]["rate_remeasured"] == rec
    # a stream that decoded to other codes than the model makes would stop it
    rerate = _rerate_module(root)
    from facekit.data.lfw import image_name, open_lfw

    one = [image_name("Person_A", 1)]
    codec = get_codec("facekit-jointrate-entropy")
    real = codec.entropy_codes
    monkeypatch.setattr(codec, "entropy_codes", lambda *a: real(*a) ^ 1)
    lfw = open_lfw(faces)
    with pytest.raises(CodecError, match="other codes"):
        rerate.rerate_point(codec, "q1", lfw, one, TinyRecognizer().read_original, progress=False)
    with pytest.raises(CodecError, match="not range-coded"):
        rerate.rerate_point(get_codec("facekit-jointrate"), "q1", lfw, one, lfw.path, progress=False)


def test_rerate_from_twin_carries_the_png_twins_accuracy(faces, tmp_path):
    """--from-twin: the range-coded point gets its PNG twin's accuracy, which is its own (same decoded images)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    rerate = _rerate_module(root)
    assert rerate.twin_name("facekit-jointrate-entropy-roi") == "facekit-jointrate-roi"
    with pytest.raises(ValueError, match="not a range-coded"):
        rerate.twin_name("facekit-joint-roi")
    both = {"facekit-jointrate": ("q1",), "facekit-jointrate-entropy": ("q1",)}
    res = evaluate(faces, codecs=both, recognizer=TinyRecognizer(), progress=False)
    twin, own = res["codecs"]["facekit-jointrate"][0], res["codecs"]["facekit-jointrate-entropy"][0]
    assert own["fold_accuracies"] == twin["fold_accuracies"] and own["psnr"] == pytest.approx(twin["psnr"])
    only_twin = {**res, "codecs": {"facekit-jointrate": [twin]}}
    src = save_results(only_twin, tmp_path / "ra.json")
    out = tmp_path / "rr.json"
    cmd = [sys.executable, str(root / "benchmarks" / "rerate.py"), "--results", str(src), "--root", str(faces),
           "--recognizer", "tests.fakes:TinyRecognizer", "--only", "facekit-jointrate-entropy:q1", "--from-twin",
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-2000:]
    after = load_results(out)["codecs"]["facekit-jointrate-entropy"][0]
    assert after["bpp"] == pytest.approx(own["bpp"]) and after["acc_mean"] == own["acc_mean"]
    rec = after["rate_remeasured"]
    assert rec["accuracy_from"] == "facekit-jointrate:q1" and rec["twin_bpp"] == twin["bpp"] and rec["bpp_before"] is None
    # without --from-twin the range-coded point itself must be in the results
    r = subprocess.run(cmd[:-3] + ["--out", str(out)], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode != 0 and "no such point" in r.stderr


def test_recontainer_carries_format_1_points_to_what_format_2_measures(faces, tmp_path, monkeypatch):
    """benchmarks/recontainer.py: a point measured on format-1 files gets exactly the bpp format 2 measures."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from facekit import container

    root = Path(__file__).resolve().parent.parent
    sweep = {"facekit-jointrate": ("q1",), "facekit-joint-entropy": ("q1", "q2")}  # joint q1, q2: facekit-prior/2
    new = evaluate(faces, codecs=sweep, recognizer=TinyRecognizer(), progress=False, use_cache=False)
    with monkeypatch.context() as m:  # the codec as it was before format 2
        m.setattr(container, "pack", container.pack_format1)
        old = evaluate(faces, codecs=sweep, recognizer=TinyRecognizer(), progress=False, use_cache=False)
    for points in old["codecs"].values():
        for p in points:
            assert p.pop("container") == {"format": 2, "measured": True}  # what evaluate records now
    src = save_results(old, tmp_path / "ra.json")
    cmd = [sys.executable, str(root / "benchmarks" / "recontainer.py"), str(src), "--root", str(faces), "--check", "3"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = load_results(src)
    for name, points in new["codecs"].items():
        for want, before, after in zip(points, old["codecs"][name], got["codecs"][name], strict=True):
            assert after["bpp"] == pytest.approx(want["bpp"], rel=1e-12) and after["bpp"] < before["bpp"]
            assert after["acc_mean"] == before["acc_mean"] == want["acc_mean"]
            rec = after["container"]
            assert rec["format"] == 2 and rec["bpp_format1"] == before["bpp"] and rec["images_checked"] == 3
            variant = name.split("-")[1]
            assert rec["bytes_saved_per_image"] == 8 + len(
                f"{variant}-{after['setting']}" + ("-ctx" if "entropy" in name else ""))
    # a second run changes nothing: every point now says what it was measured on
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "0 points carried" in r.stderr
    assert load_results(src) == got
    # a range-coded point measured with another prior than the installed one is refused
    for stale in ({"rate_remeasured": {"prior": "0" * 64}}, {}):
        bad = {**got, "codecs": {"facekit-jointrate-entropy": [{**new["codecs"]["facekit-joint-entropy"][0], **stale}]}}
        bad["codecs"]["facekit-jointrate-entropy"][0].pop("container")
        save_results(bad, src)  # jointrate q1 has a facekit-prior/4, newer than format 2
        r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode != 0 and "re-measure it with benchmarks/rerate.py" in r.stderr, r.stderr[-500:]


def test_results_readme_says_how_many_streams_a_twin_point_checked(faces, tmp_path):
    """benchmarks/results_readme.py names a --check-every point's partial check; roi_face_psnr parses its --jobs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    both = {"facekit-jointrate": ("q1",), "facekit-jointrate-entropy": ("q1",)}
    res = evaluate(faces, codecs=both, recognizer=TinyRecognizer(), progress=False)
    point = res["codecs"]["facekit-jointrate-entropy"][0]
    point["rate_remeasured"] = {"accuracy_from": "facekit-jointrate:q1", "images_rated": 12, "images_checked": 2}
    src = save_results(res, tmp_path / "ra.json")
    out = tmp_path / "README.md"
    cmd = [sys.executable, str(root / "benchmarks" / "results_readme.py"), str(src), "--out", str(out)]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert "`facekit-jointrate-entropy:q1` (from `facekit-jointrate:q1`; codes checked on 2 of 12 streams)" in text
    point["rate_remeasured"]["images_checked"] = 12  # every stream checked: nothing to note
    save_results(res, src)
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0 and "codes checked on" not in out.read_text()

    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import roi_face_psnr
    finally:
        sys.path.remove(str(root / "benchmarks"))
    assert roi_face_psnr._job("avif:10") == ("avif", 10)
    assert roi_face_psnr._job("jpeg2000:0.1") == ("jpeg2000", 0.1)
    assert roi_face_psnr._job("facekit-jointface:q3") == ("facekit-jointface", "q3")
    with pytest.raises(SystemExit, match="CODEC:SETTING"):
        roi_face_psnr._job("avif")


# --------------------------------------------------------------------------- the embedding cache


def _jpeg10(faces, rec, **kw):  # type: ignore[no-untyped-def]
    return evaluate(faces, codecs={"jpeg": (10,)}, recognizer=rec, progress=False, **kw)["codecs"]["jpeg"][0]


def _cache_files(tmp_path):  # type: ignore[no-untyped-def]
    return sorted((tmp_path / "cache" / "embeddings").glob("*.npz"))


def test_cache_follows_the_recognisers_code_version_and_weights(faces, tmp_path):
    """Embeddings of an older recogniser code or other weights are never served from the cache."""
    rec = TinyRecognizer()
    first = _jpeg10(faces, rec)
    assert len(_cache_files(tmp_path)) == 1
    assert _jpeg10(faces, rec) == first and len(_cache_files(tmp_path)) == 1  # served from the cache

    rec.embedding_version = 2  # same weights, new code: a new entry
    assert _jpeg10(faces, rec) == first and len(_cache_files(tmp_path)) == 2

    with torch.no_grad():  # weights changed in place (a recogniser fine-tuned after the first run)
        rec.proj.weight.mul_(-1.0).add_(0.5)
    _jpeg10(faces, rec)
    assert len(_cache_files(tmp_path)) == 3
    ids = {TinyRecognizer().cache_id(), rec.cache_id()}
    assert len(ids) == 2 and all(i.startswith("tiny|v") for i in ids)


class _NanRecognizer(TinyRecognizer):
    name = "tiny-nan"

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        out = super().forward(chips)
        out[0, 0] = float("nan")  # the first image of every batch: the fault SFace's batches had
        return out


def test_non_finite_embeddings_raise_and_are_not_cached(faces, tmp_path):
    with pytest.raises(RecognizerError, match="non-finite embeddings for 1 images after jpeg@10.*nothing was cached"):
        evaluate(faces, codecs={"jpeg": (10,)}, recognizer=_NanRecognizer(), progress=False, batch_size=64)
    assert _cache_files(tmp_path) == []


def test_a_cached_file_with_non_finite_embeddings_is_computed_again(faces, tmp_path):
    rec = TinyRecognizer()
    good = _jpeg10(faces, rec)
    (path,) = _cache_files(tmp_path)
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    stored["embeddings"][:] = np.nan  # as an older, faulty recogniser code left it
    np.savez(path, **stored)
    assert _jpeg10(faces, rec) == good
    with np.load(path) as z:
        assert np.isfinite(z["embeddings"]).all()


def _point(setting, bpp: float) -> dict:
    return {"setting": setting, "bpp": bpp, "acc_mean": 0.9, "acc_std": 0.01}


def _named_results(codecs: dict) -> dict:
    return {"codecs": codecs, "recognizer": {"name": "fake"}, "data_sha256": {"images": "x"},
            "protocol": {"pairs_file": "pairs.txt", "n_pairs": 6000, "per_fold": None, "alignment": "a"},
            "provenance": {"created": "now"}}


def test_results_with_old_codec_names_load_under_the_catalogue_names(tmp_path):
    from facekit.errors import DataError
    from facekit.evaluate import canonical_results, codec_points

    old = _named_results({"facekit-jointface-entropy": [_point("q3", 0.1)], "facekit-mse": [_point("q3", 0.5)],
                          "facekit-joint": [_point("q3", 0.4)], "facekit-jointrate-entropy-roi-bg": [_point("q3", 0.09)],
                          "facekit-jointrate-entropy": [_point("q3", 0.12)], "avif": [_point(10, 0.3)]})
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    res = load_results(path)
    assert list(res["codecs"]) == ["facekit", "paper-mse", "paper", "facekit-roi", "facekit-jointrate-entropy", "avif"]
    for old_name, new_name in (("facekit-jointface-entropy", "facekit"), ("facekit-mse", "paper-mse")):
        assert codec_points(res, old_name) is codec_points(res, new_name) is res["codecs"][new_name]
        assert codec_points(old, new_name) == old["codecs"][old_name]  # lookups work on unconverted results too
    with pytest.raises(DataError, match="no codec 'webp'"):
        codec_points(res, "webp")
    with pytest.raises(DataError, match="twice"):
        canonical_results(_named_results({"facekit": [], "facekit-jointface-entropy": []}))
    # merging a new point measured under the old name into results under the new one: one codec
    new = _named_results({"facekit-jointface-entropy": [_point("q4", 0.2)]})
    merged = merge_results(res, new, by_point=True)
    assert [p["setting"] for p in merged["codecs"]["facekit"]] == ["q3", "q4"]
    assert "facekit-jointface-entropy" not in merged["codecs"]


def test_committed_results_use_the_catalogue_names():
    from pathlib import Path

    from facekit.codecs.names import SHORT_NAMES

    root = Path(__file__).resolve().parent.parent / "results"
    res = json.loads((root / "rate_accuracy.json").read_text())
    assert set(SHORT_NAMES) <= set(res["codecs"])
    for path in root.glob("*.json"):
        data = json.loads(path.read_text())
        for name in data.get("codecs", {}):
            assert SHORT_NAMES.get(name) is None or name in SHORT_NAMES, (path.name, name)
            assert name not in {s.long_name for s in SHORT_NAMES.values()}, (path.name, name)


def test_sweep_names_are_stored_by_their_catalogue_names():
    from facekit.evaluate import DEFAULT_SWEEP, resolve_sweep

    assert {"facekit", "facekit-roi", "paper", "paper-mse"} <= set(DEFAULT_SWEEP)
    sweep = resolve_sweep(["jpeg", "facekit-jointface-entropy"])
    assert list(sweep) == ["jpeg", "facekit"] and sweep["facekit"] == DEFAULT_SWEEP["facekit"]


def test_the_default_sweep_runs_every_codec_of_its_table(faces, monkeypatch):
    """``codecs=None`` sweeps ``DEFAULT_SWEEP`` (its available codecs), which ``resolve_sweep`` does not
    build early: ``evaluate`` builds them itself."""
    import facekit.evaluate as ev

    monkeypatch.setattr(ev, "DEFAULT_SWEEP", {"uncompressed": (None,), "jpeg": (10,), "no-such-codec": (1,)})
    res = evaluate(faces, codecs=None, recognizer=TinyRecognizer(), progress=False, use_cache=False)
    assert list(res["codecs"]) == ["uncompressed", "jpeg"] and res["codecs"]["jpeg"][0]["setting"] == 10


def test_cli_merge_keeps_the_points_of_earlier_calls(faces, tmp_path, monkeypatch):
    """``facekit evaluate --merge`` merges point by point: a sweep in two calls keeps both calls' points."""
    import facekit.evaluate as ev
    from facekit.cli import main

    runs = iter([evaluate(faces, codecs={"jpeg": (10,)}, recognizer=TinyRecognizer(), progress=False),
                 evaluate(faces, codecs={"jpeg": (50,)}, recognizer=TinyRecognizer(), progress=False)])
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: next(runs))
    out = tmp_path / "r.json"
    for setting in ("10", "50"):
        assert main(["evaluate", "--codecs", "jpeg", "--settings", setting, "--out", str(out), "--merge", "--quiet"]) == 0
    assert [p["setting"] for p in load_results(out)["codecs"]["jpeg"]] == [10, 50]
