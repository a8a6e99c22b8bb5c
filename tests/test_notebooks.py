"""The notebooks: each .ipynb agrees with its percent-format source, is clean, and runs (papermill).

The runs use each notebook's quick setting on the CPU in a temporary folder and check
what the notebook wrote into ``out_dir`` (figures and ``summary.json``), never widget
output. Each run's time is printed. They need the real LFW (``FACEKIT_LFW``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NAMES = (
    "01_build_autoencoder",
    "02_train_on_gpu",
    "03_joint_finetune",
    "04_codec_comparison",
    "05_interactive_explorer",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: what a notebook's out_dir (results/quick/ under `facekit reproduce`) must not hold
WORKING_FILES = ("*.pt", "*.lock", "*checkpoint*", "manifest.json", "history.jsonl")


def assert_no_working_files(out: Path) -> None:
    """Checkpoints, weights and their manifest's lock belong in a temporary folder, not in out_dir."""
    found = sorted(str(f.relative_to(out)) for pattern in WORKING_FILES for f in out.rglob(pattern))
    found += sorted(str(f.relative_to(out)) for f in out.rglob(".*.lock"))
    assert not found, f"out_dir holds working files: {found}"


# --------------------------------------------------------------------------- static checks


def test_every_notebook_is_committed_without_outputs():
    found = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert found == list(NAMES)
    for name in NAMES:
        nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", name
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name} cell {i} has outputs"
                assert cell.execution_count is None, f"{name} cell {i} has an execution count"
            assert "execution" not in cell.metadata, f"{name} cell {i} has execution metadata"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
        params = tagged[0].source
        for p in ("lfw_root = None", 'device = "auto"', "quick = True", "out_dir ="):
            assert p in params, f"{name}: parameters cell lacks {p!r}"
        first = nb.cells[1].source
        assert '"google.colab" in sys.modules' in first and "pip install" in first, name


def test_every_notebook_has_its_percent_source_and_the_pairing():
    sources = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))
    assert sources == list(NAMES)
    assert not (NB_DIR / "_make_notebooks.py").exists()
    config = (NB_DIR / "jupytext.toml").read_text().splitlines()
    assert 'formats = "ipynb,py:percent"' in config


@pytest.mark.parametrize("name", NAMES)
def test_notebook_agrees_with_its_percent_source(name):
    """The .ipynb holds the cells of its .py (types, sources, tags): `make notebooks` after an edit."""
    jupytext = pytest.importorskip("jupytext")
    src = jupytext.read(NB_DIR / f"{name}.py")
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)

    def cells(book):  # type: ignore[no-untyped-def]
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in book.cells]

    a, b = cells(src), cells(nb)
    stale = f"{name}.py and {name}.ipynb differ: run `make notebooks` (jupytext --sync)"
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        assert x == y, f"{stale}; first at cell {i}:\n{x}\n!=\n{y}"
    assert len(a) == len(b), stale
    assert src.metadata["kernelspec"]["name"] == "python3"


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def run_notebook(lfw_root, tmp_path_factory, capsys_module):
    pm = pytest.importorskip("papermill")
    base = tmp_path_factory.mktemp("notebooks")

    def run(name: str, **params) -> tuple[Path, dict]:
        out = base / name
        out.mkdir()
        parameters = {"lfw_root": str(lfw_root), "device": "cpu", "quick": True, "out_dir": str(out), **params}
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(NB_DIR / f"{name}.ipynb"), str(base / f"{name}.ipynb"), parameters=parameters,
                kernel_name="python3", cwd=str(out), progress_bar=False,
            )
        finally:
            with capsys_module.disabled():
                print(f"\n[notebook] {name}: {time.perf_counter() - t0:.1f} s (quick, CPU)", flush=True)
        summary = json.loads((out / "summary.json").read_text())
        assert_no_working_files(out)
        for fig in summary["figures"]:
            data = (out / fig).read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 2000, f"{name}: figure {fig} is not a real PNG"
        return out, summary

    return run


@pytest.fixture(scope="module")
def capsys_module(request):
    """Print past pytest's capture from a module-scoped fixture."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    class _Disabled:
        def disabled(self):
            return capman.global_and_fixture_disabled()

    return _Disabled()


def _learned_available() -> tuple[bool, str]:
    from facekit.codecs.registry import available_codecs

    d = available_codecs().get("paper-mse", {})
    return bool(d.get("available")), d.get("reason", "")


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.lfw
def test_01_build_autoencoder(run_notebook):
    ok, why = _learned_available()
    if not ok:
        pytest.skip(f"no shipped weights: {why}")
    out, s = run_notebook("01_build_autoencoder")
    assert {"pipeline.png", "code.png", "reconstruction.png"} <= set(s["figures"])
    png = (out / f"code_{s['rate_point']}.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) == s["png_bytes"]
    assert s["png_bpp"] == pytest.approx(8 * len(png) / (250 * 250))
    assert s["png_bpp"] < s["bpp"] < s["raw_bpp"] * 1.5
    assert s["file_bytes"] > s["png_bytes"]
    assert s["params_encoder"] > 0 and s["params_decoder"] > s["params_encoder"]
    assert s["psnr"] > 24, "the shipped weights should reconstruct a face well"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.lfw
def test_02_train_on_gpu(run_notebook):
    out, s = run_notebook("02_train_on_gpu")
    assert {"loss.png", "reconstructions.png"} <= set(s["figures"])
    # the run folder (checkpoints) was a temporary folder, outside out_dir
    run = Path(s["run_dir"])
    assert run.name == f"run_{s['rate_point']}" and out.resolve() not in run.resolve().parents
    for f in ("checkpoint.pt", "model.pt", "history.jsonl", "summary.json", "config.json"):
        assert f in s["run_files"], f
    assert s["steps"] == 24 and s["device"] == "cpu"
    assert s["loss_end"] < 0.8 * s["loss_start"], "two dozen steps should already lower the loss"
    for r in s["reconstructions"]:
        assert r["trained_bpp"] > 0 and r["trained_psnr"] > 5


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.lfw
def test_03_joint_finetune(run_notebook):
    ok, why = _learned_available()
    if not ok:
        pytest.skip(f"no shipped weights: {why}")
    out, s = run_notebook("03_joint_finetune")
    assert {"before_after.png", "tradeoff.png"} <= set(s["figures"])
    before = s["before"]
    assert before["bpp"] > 0 and before["psnr"] > 15 and before["identity_distance"] > 0
    sweep = s["sweeps"]["paper-mse"]
    rates = list(sweep)
    assert sweep[rates[-1]]["bpp"] > sweep[rates[0]]["bpp"]
    assert sweep[rates[-1]]["identity_distance"] < sweep[rates[0]]["identity_distance"]
    # one fine-tuning run per identity weight, each installed and measured through the codec
    assert list(s["runs"]) == ["0", "0.5"]
    for lam, m in s["runs"].items():
        run = Path(m["run_dir"])  # a temporary folder, outside out_dir
        assert run.name == f"joint_{s['rate_point']}_lambda{lam}" and out.resolve() not in run.resolve().parents
        assert "model.pt" in m["run_files"] and "weights/manifest.json" in m["run_files"]
        assert m["bpp"] > 0 and m["identity_distance"] > 0
    # a few fine-tuning steps at the library's learning rate keep the distortion training
    assert abs(s["runs"]["0"]["psnr"] - before["psnr"]) < 1.5
    assert abs(s["runs"]["0"]["bpp"] - before["bpp"]) < 0.2 * before["bpp"]


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.lfw
def test_04_codec_comparison(run_notebook):
    out, s = run_notebook("04_codec_comparison")
    assert {"rate_accuracy.png", "rate_tar.png", "equal_bpp.png", "roi_example.png"} <= set(s["figures"])
    from facekit.evaluate import load_results

    res = load_results(out / "rate_accuracy.json")
    assert s["source"] == "evaluated" and res["protocol"]["per_fold"] == s["per_fold"]
    assert s["n_pairs"] == 10 * s["per_fold"]
    for name in ("uncompressed", "jpeg", "jpeg2000", "webp"):
        assert name in s["codecs"], name
    from facekit.codecs import PAPER, RECOGNITION_FIRST, RECOMMENDED
    from facekit.codecs.names import is_learned
    from facekit.codecs.registry import available_codecs

    avail = available_codecs()
    for name in (RECOMMENDED, RECOGNITION_FIRST, PAPER):  # the headline codecs are in the quick sweep
        assert name in s["codecs"] or not avail.get(name, {}).get("available"), name
    # the figure is the committed full-LFW result with this run's points over it
    assert s["full_results"] is not None and s["full_results"].endswith("rate_accuracy.json")
    if "facekit-joint-roi" in s["codecs"]:  # the ROI section drew its curves, and ROI saved bits
        assert "rate_accuracy_roi.png" in s["figures"]
        roi, plain = s["codecs"]["facekit-joint-roi"][0], s["codecs"][PAPER]
        same = [p for p in plain if p["setting"] == roi["setting"]]
        assert same and roi["bpp"] < 0.7 * same[0]["bpp"], (roi, same)
    for name, pts in s["codecs"].items():
        if name == "uncompressed":
            assert pts[0]["acc_mean"] > 0.85
            continue
        bpps = [p["bpp"] for p in pts]
        assert bpps == sorted(bpps), f"{name}: bpp must grow with the setting"
        assert all(0.5 <= p["acc_mean"] <= 1 for p in pts)
    for name, v in s["equal_bpp"].items():
        assert v["bpp"] <= s["target_bpp"] * 1.05 or is_learned(name), (name, v)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.lfw
def test_05_interactive_explorer(run_notebook):
    out, s = run_notebook("05_interactive_explorer")
    assert "sweep.png" in s["figures"]
    assert s["codecs"] and s["codec"] == s["codecs"][0]
    from facekit.codecs import RECOMMENDED

    if RECOMMENDED not in s["unavailable"]:
        assert s["codec"] == RECOMMENDED, "the explorer opens on the recommended codec"
    views = s["views"]
    bpps = [v["bpp"] for v in views]
    assert len(views) >= 3 and bpps == sorted(bpps)
    assert views[-1]["psnr"] > views[0]["psnr"]
    if s["recognizer"] is not None:
        assert all(v["distance"] is not None for v in views)
        assert views[-1]["distance"] < views[0]["distance"]
        assert views[-1]["same"] is True


# --------------------------------------------------------------------------- facekit reproduce


def _fake_notebook(path: Path, body: str) -> None:
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell('quick = True\nout_dir = "nb_out"\nlfw_root = None\nsteps = 1')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.notebook
def test_reproduce_runs_in_order_and_reports(tmp_path, capsys):
    """The runner itself, on stand-in notebooks: parameters, outputs, report, a failure."""
    pytest.importorskip("papermill")
    from facekit.cli import main

    src = tmp_path / "nbs"
    src.mkdir()
    _fake_notebook(src / "01_build_autoencoder.ipynb", """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from facekit.reproduce import Record
rec = Record(out_dir)
fig, ax = plt.subplots()
ax.plot([0, 1], [steps, 2 * steps])
rec.figure(fig, "line.png")
rec.update(steps=steps, quick=quick, lfw_root=lfw_root)
""")
    _fake_notebook(src / "03_joint_finetune.ipynb", "raise RuntimeError('on purpose')")
    _fake_notebook(src / "04_codec_comparison.ipynb", """
from pathlib import Path
from facekit.evaluate import save_results
from facekit.reproduce import Record
pts = lambda acc: [{"setting": s, "bpp": b, "acc_mean": a, "acc_std": 0.01, "psnr": 30.0 + b}
                   for s, b, a in zip((1, 2, 3), (0.1, 0.3, 0.6), acc)]
res = {"codecs": {"uncompressed": [{"setting": None, "bpp": 1.2, "acc_mean": 0.99, "acc_std": 0.01, "psnr": None}],
                  "jpeg": pts((0.7, 0.9, 0.97)), "facekit-mse": pts((0.9, 0.96, 0.98))},
       "recognizer": {"name": "dlib-resnet"}, "protocol": {"n_pairs": 60, "per_fold": 6, "pairs_file": "pairs.txt"}}
save_results(res, Path(out_dir) / "rate_accuracy.json")
Record(out_dir).update(points=3)
""")
    out = tmp_path / "out"
    rc = main(["reproduce", "--preset", "quick", "--out", str(out), "--notebooks", str(src),
               "--only", "01", "03", "04", "--root", str(tmp_path), "-p", "steps=7"])
    printed = capsys.readouterr().out
    assert rc == 1, "a failed notebook makes the command fail"
    assert "03_joint_finetune" in printed and "failed" in printed
    summary = json.loads((out / "summary.json").read_text())
    nbs = summary["notebooks"]
    assert list(nbs) == ["01_build_autoencoder", "03_joint_finetune", "04_codec_comparison"]
    assert nbs["01_build_autoencoder"]["status"] == "ok" and nbs["04_codec_comparison"]["status"] == "ok"
    assert "on purpose" in nbs["03_joint_finetune"]["error"]
    # only declared parameters are injected; the preset's and the override's values arrive
    p01 = nbs["01_build_autoencoder"]["parameters"]
    assert p01["quick"] is True and p01["steps"] == 7 and "device" not in p01
    assert nbs["01_build_autoencoder"]["numbers"] == {
        "steps": 7, "quick": True, "lfw_root": str(tmp_path.resolve()), "figures": ["line.png"]}
    assert (out / "01_build_autoencoder" / "line.png").read_bytes().startswith(PNG_MAGIC)
    for name in nbs:
        executed = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        assert any(c.get("outputs") or c.get("execution_count") for c in executed.cells if c.cell_type == "code")
    assert (out / "rate_accuracy.json").exists()
    report = (out / "report.md").read_text()
    assert "quick preset" in report and "**failed**" in report
    assert "| paper-mse |" in report and "Bitrate saving" in report  # old names are read as the new
    # 60 pairs: no goal is judged, no saving is given
    assert "The goals, checked" in report
    assert "| above JPEG wherever both are measured | not judged: 60 pairs (a goal needs all 6,000)" in report
    checked_here = report.split("The goals, checked")[1].split("The goals on all 6,000 pairs")[0]
    assert "**met**" not in checked_here and "%" not in report.split("Bitrate saving")[1].splitlines()[0]
    assert "![line.png](01_build_autoencoder/line.png)" in report
    assert "- steps: 7" in report


def test_reproduce_rejects_unknown_names(tmp_path):
    from facekit.errors import FacekitError
    from facekit.reproduce import preset_parameters, reproduce

    with pytest.raises(FacekitError, match="no notebook"):
        reproduce(tmp_path / "o", "quick", only=["07"], notebooks=tmp_path)
    with pytest.raises(FacekitError, match="unknown preset"):
        preset_parameters("huge", "01_build_autoencoder")
    assert preset_parameters("full", "02_train_on_gpu")["device"] == "auto"
    assert preset_parameters("quick", "04_codec_comparison") == {"quick": True, "device": "cpu"}
