"""facekit-hyperprior through the evaluation engine and benchmarks/rate_accuracy.py, on a tiny seeded model.

Made-up faces and a cheap recogniser (:mod:`tests.fakes`); the model is the fuzz corpus's tiny
random one (``tests/corpus/fkh1.py``), installed into a temporary weights folder.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("constriction")

from facekit.codecs.names import HYPERPRIOR  # noqa: E402
from facekit.errors import DataError  # noqa: E402
from facekit.evaluate import evaluate, load_results, merge_results  # noqa: E402
from facekit.goals import TAR_KEY  # noqa: E402
from facekit.zoo import read_manifest  # noqa: E402

from .fakes import TinyRecognizer, make_faces  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "corpus"))

from fkh1 import install_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def faces(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    return make_faces(tmp_path / "faces")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return install_tiny(tmp_path_factory.mktemp("hp-weights"))


@pytest.fixture(scope="module")
def other_store(tmp_path_factory) -> Path:
    return install_tiny(tmp_path_factory.mktemp("hp-weights-1"), seed=1)


def sha_of(folder: Path) -> str:
    return read_manifest(folder)["models"]["hyperprior"]["sha256"]


def run(faces: Path, store: Path, settings) -> dict:  # type: ignore[no-untyped-def]
    return evaluate(faces, codecs={HYPERPRIOR: settings}, recognizer=TinyRecognizer(), progress=False,
                    codec_options={HYPERPRIOR: {"folder": store}})


def test_settings_are_floats_and_points_record_their_weights(faces, store):
    res = run(faces, store, ("q2", 0.25, 0, "0.6"))
    pts = res["codecs"][HYPERPRIOR]
    assert [p["setting"] for p in pts] == [0.25, 0.0, 0.6]  # q2 and 0.25 are one point; 0 is 0.0
    assert all(isinstance(p["setting"], float) for p in pts)
    for p in pts:
        assert p["bpp"] > 0 and p["psnr"] is not None and TAR_KEY in p and p["n_pairs"] == 8
        entry = read_manifest(store)["models"]["hyperprior"]
        assert p["weights"]["sha256"] == entry["sha256"] and p["weights"]["fingerprint"] == entry["fingerprint"]
    assert pts[1]["bpp"] < pts[2]["bpp"]  # the tiny model's rate grows with t


def test_only_continuous_settings_become_floats():
    from facekit.codecs import get_codec

    jpeg = get_codec("jpeg")
    assert jpeg.normalise_setting(50) == 50 and isinstance(jpeg.normalise_setting(50), int)
    assert repr(get_codec("jpeg2000").normalise_setting(1)) == "1.0"
    assert get_codec("facekit-mse-entropy").normalise_setting("q2") == "q2"  # the first generation: names only


def test_points_of_other_weights_are_never_merged_into_one_curve(faces, store, other_store):
    a = run(faces, store, (0.0, 0.5))
    b = run(faces, other_store, (0.5,))
    with pytest.raises(DataError, match="weights sha256"):
        merge_results(a, b, by_point=True)
    whole = merge_results(a, b)  # the codec replaced whole: one set of weights again
    assert {p["weights"]["sha256"] for p in whole["codecs"][HYPERPRIOR]} == {sha_of(other_store)}
    same = merge_results(a, run(faces, store, (0.5, 1.0)), by_point=True)
    assert [p["setting"] for p in sorted(same["codecs"][HYPERPRIOR], key=lambda p: p["setting"])] == [0.0, 0.5, 1.0]


def load_benchmark():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("rate_accuracy_bench", REPO / "benchmarks" / "rate_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_measures_the_presets_resumes_and_refuses_other_weights(faces, store, other_store, tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "ra.json"
    common = ["--root", str(faces), "--recognizer", "tests.fakes:TinyRecognizer", "--out", str(out),
              "--codecs", HYPERPRIOR, "--also", f"{HYPERPRIOR}:0.6", "--skip-done", "--no-figure"]
    bench.main([*common, "--hyperprior-weights", str(store)])
    text = capsys.readouterr().out
    assert "6 jobs" in text and "[6/6" in text and "issue 28's goals" in text
    assert not out.with_suffix(".png").exists()  # --no-figure
    res = load_results(out)
    assert [p["setting"] for p in sorted(res["codecs"][HYPERPRIOR], key=lambda p: p["setting"])] == [
        0.0, 0.25, 0.5, 0.6, 0.75, 1.0]

    # a sweep stopped after four points: the rerun measures only the two left
    data = json.loads(out.read_text())
    data["codecs"][HYPERPRIOR] = [p for p in data["codecs"][HYPERPRIOR] if p["setting"] not in (0.5, 1.0)]
    out.write_text(json.dumps(data))
    bench.main([*common, "--hyperprior-weights", str(store)])
    assert "2 jobs" in capsys.readouterr().out
    assert len(load_results(out)["codecs"][HYPERPRIOR]) == 6

    # other weights: refused before any job runs (nothing measured is lost) ...
    with pytest.raises(DataError, match="weights sha256"):
        bench.main([*common, "--hyperprior-weights", str(other_store)])
    assert "jobs in" not in capsys.readouterr().out
    with pytest.raises(DataError, match="weights sha256"):  # --workers 2 too: no pool is started
        bench.main([*common, "--hyperprior-weights", str(other_store), "--workers", "2"])
    assert "jobs in" not in capsys.readouterr().out
    assert {p["weights"]["sha256"] for p in load_results(out)["codecs"][HYPERPRIOR]} == {sha_of(store)}
    # ... unless --replace drops the earlier curve (--only q1, and --also's 0.6)
    bench.main([*common, "--hyperprior-weights", str(other_store), "--replace", "--only", f"{HYPERPRIOR}:q1"])
    pts = load_results(out)["codecs"][HYPERPRIOR]
    assert sorted((p["setting"], p["weights"]["sha256"]) for p in pts) == [(0.0, sha_of(other_store)),
                                                                          (0.6, sha_of(other_store))]


def test_out_of_another_recogniser_or_other_data_is_refused_before_any_job(faces, store, tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "ra.json"
    common = ["--root", str(faces), "--recognizer", "tests.fakes:TinyRecognizer", "--out", str(out),
              "--only", f"{HYPERPRIOR}:q1", "--skip-done", "--no-figure", "--hyperprior-weights", str(store)]
    bench.main(common)
    good = json.loads(out.read_text())
    capsys.readouterr()
    for key, value, match in (("recognizer", {**good["recognizer"], "name": "dlib-resnet"}, "recogniser 'dlib-resnet'"),
                              ("data_sha256", {**good["data_sha256"], "images": "0" * 64}, "other data")):
        out.write_text(json.dumps({**good, key: value}))
        with pytest.raises(DataError, match=match):
            bench.main(common)  # --skip-done would otherwise skip the point as done
        assert "jobs in" not in capsys.readouterr().out
    out.write_text(json.dumps(good))
    bench.main(common)
    assert "0 jobs" in capsys.readouterr().out


def test_bad_settings_fail_before_the_data_is_read(store, tmp_path):
    from facekit.codecs import get_codec
    from facekit.errors import CodecError

    hp = get_codec(HYPERPRIOR, folder=store)
    assert hp.normalise_setting("q2") == hp.normalise_setting(0.25) == hp.normalise_setting("0.25") == 0.25
    for bad in (1.5, -1, "q9", float("nan"), True, [0.5]):
        with pytest.raises(CodecError):
            hp.normalise_setting(bad)
    j2k = get_codec("jpeg2000")
    assert j2k.normalise_setting("0.5") == 0.5
    for bad in (10, "abc", float("nan")):
        with pytest.raises(CodecError):
            j2k.normalise_setting(bad)
    with pytest.raises(CodecError):  # not a DataError about the missing data: the setting fails first
        evaluate(tmp_path / "no-lfw", codecs={HYPERPRIOR: (0.5, 1.5)}, recognizer=TinyRecognizer(), progress=False,
                 codec_options={HYPERPRIOR: {"folder": store}})


def test_weights_record_is_the_hyperprior_codecs_own(store):
    from facekit.codecs import get_codec

    assert get_codec("jpeg").weights_record() is None and get_codec("jpeg").presets == {}
    rec = get_codec(HYPERPRIOR, folder=store).weights_record()
    entry = read_manifest(store)["models"]["hyperprior"]
    assert rec["sha256"] == entry["sha256"] and rec["fingerprint"] == entry["fingerprint"]
