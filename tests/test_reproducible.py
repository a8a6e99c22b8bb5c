"""Reproducible results: safe weights, identical evaluations, the same decode everywhere.

* every ``torch.load`` in facekit uses ``weights_only=True`` (checked on the source), and
  weights are checked against the manifest's sha256 *before* they are unpickled;
* the same evaluation run twice on CPU gives identical numbers, and its results record
  facekit's version, the git commit, package versions, device, seed and data checksums;
* bytes made on CPU decode to the same image in another process, on CUDA (within 1/255,
  skipped without a GPU), and as the corpus' reference decodes say.

A tiny made-up LFW (four people, 80x64 faces, two folds) and a tiny deterministic
recogniser stand in for LFW and dlib, so the evaluation takes about a second.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import facekit
from facekit.codecs.learned import LearnedCodec
from facekit.errors import WeightsError
from facekit.evaluate import evaluate, load_results, save_results
from facekit.models.autoencoder import load_weights
from facekit.recognition.align import FaceLocation
from facekit.recognition.base import Recognizer
from facekit.zoo import install_weights, load_hyperprior, read_manifest, weights_dir

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
WEIGHTS = CORPUS / "weights"
sys.path.insert(0, str(CORPUS))

from make_corpus import face_image, tiny_model  # noqa: E402
from targets import FKC, decode_corpus, digest  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # torch on one thread: fast and steady under load


# --------------------------------------------------------------------------- weights


def _load_calls(tree: ast.AST) -> list[ast.Call]:
    """Calls of ``torch.load`` (also via ``import torch as t`` / ``from torch import load``)."""
    torch_names, load_names = {"torch"}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            torch_names |= {a.asname or a.name for a in node.names if a.name == "torch"}
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            load_names |= {a.asname or a.name for a in node.names if a.name == "load"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name)
                and f.value.id in torch_names) or (isinstance(f, ast.Name) and f.id in load_names):
            calls.append(node)
    return calls


def test_every_torch_load_in_facekit_uses_weights_only():
    sources = sorted((REPO / "facekit").rglob("*.py"))
    assert len(sources) > 20
    found, unsafe = 0, []
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _load_calls(tree):
            found += 1
            kw = {k.arg: k.value for k in call.keywords}
            value = kw.get("weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                unsafe.append(f"{path.relative_to(REPO)}:{call.lineno}")
        text = path.read_text()
        for pattern in (r"\bpickle\.loads?\(", r"allow_pickle\s*=\s*True", r"\bdill\b", r"\bjoblib\.load\("):
            for m in re.finditer(pattern, text):
                unsafe.append(f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1} ({m.group(0)})")
    assert found >= 3, "the AST search found no torch.load at all: is it still looking at the right code?"
    assert not unsafe, f"unsafe deserialisation: {unsafe}"


def test_the_check_itself_catches_unsafe_loads():
    bad = "import torch as T\nfrom torch import load as L\nT.load(f)\nL(f, weights_only=False)\ntorch.load(f, weights_only=True)\n"
    calls = _load_calls(ast.parse(bad))
    assert len(calls) == 3
    flags = [any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in c.keywords) for c in calls]
    assert flags == [False, False, True]


def is_second_generation(entry: dict) -> bool:
    """A manifest entry of the second-generation codec (a recipe's model), not of a first-generation rate point."""
    return entry.get("kind") == "hyperprior"


def _folders() -> list[Path]:
    """The shipped weights folder when it lists weights, and the corpus' (same layout)."""
    shipped = weights_dir()
    return ([shipped] if read_manifest(shipped)["models"] else []) + [WEIGHTS]


@pytest.mark.parametrize("folder", _folders(), ids=lambda p: p.parent.name + "/" + p.name)
def test_manifest_sha256_matches_every_weights_file(folder):
    manifest = read_manifest(folder)
    assert manifest["models"]
    for name, entry in manifest["models"].items():
        path = folder / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], name
        if is_second_generation(entry):
            load_hyperprior(name, folder=folder)  # checks the sha256 and the fingerprint itself
            continue
        assert load_weights(path, sha256=entry["sha256"]).fingerprint() == entry["fingerprint"], name
        prior = entry.get("prior")
        if prior:
            assert hashlib.sha256((folder / prior["file"]).read_bytes()).hexdigest() == prior["sha256"], name


@pytest.mark.parametrize("folder", _folders(), ids=lambda p: p.parent.name + "/" + p.name)
def test_tampered_weights_are_refused_before_unpickling(folder, tmp_path, monkeypatch):
    copy = tmp_path / "weights"
    shutil.copytree(folder, copy)
    manifest = read_manifest(copy)
    name, entry = next((n, e) for n, e in sorted(manifest["models"].items()) if not is_second_generation(e))
    variant, rate = entry.get("variant", name.split("-")[0]), entry["rate_point"]
    path = copy / entry["file"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit, deep inside a tensor
    path.write_bytes(bytes(raw))
    loads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real(*a, **k))
    codec = LearnedCodec(variant, folder=copy)
    with pytest.raises(WeightsError, match="sha256.*(modified|damaged)"):
        codec.encode(face_image(), rate)
    assert loads == [], "torch.load saw the tampered file before its sha256 was checked"
    for name, entry in manifest["models"].items():  # the second generation's file alike
        if is_second_generation(entry):
            raw = bytearray((copy / entry["file"]).read_bytes())
            raw[len(raw) // 2] ^= 0x01
            (copy / entry["file"]).write_bytes(bytes(raw))
            with pytest.raises(WeightsError, match="sha256"):
                load_hyperprior(name, folder=copy)
            assert loads == []


def test_a_malicious_pickle_with_a_matching_manifest_is_refused(tmp_path):
    """Someone replaced the file *and* its digest: weights_only=True still runs no code."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS, copy)
    buf = io.BytesIO()
    torch.save({"format": "facekit-weights/1", "evil": Evil()}, buf)
    (copy / "mse-q1.pt").write_bytes(buf.getvalue())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["models"]["mse-q1"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="cannot be loaded"):
        LearnedCodec("mse", folder=copy).encode(face_image(), "q1")
    assert not marker.exists()


# --------------------------------------------------------------------------- evaluation


class TinyRecognizer(Recognizer):
    """A deterministic stand-in for dlib: whole-image 16x16 chips, a fixed random projection."""

    name = "tiny-test"
    chip_size = 16
    embedding_dim = 8
    distance = "euclidean"
    threshold = 1.0
    alignment_id = "tiny-test-whole-image"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(3 * 16 * 16, 8)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(8, 3 * 16 * 16, generator=g) / 28)
            self.proj.bias.zero_()
        self.requires_grad_(False)

    def locate(self, image: np.ndarray) -> FaceLocation:
        h, w = image.shape[:2]
        return FaceLocation(
            theta=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
            matrix=np.array([[w / 16, 0, 0], [0, h / 16, 0]]),
            landmarks=np.zeros((5, 2)),
            box=np.array([0.0, 0.0, w, h]),
            method="centre",
            image_size=(h, w),
        )

    def align(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [images.shape[0], 3, 16, 16], align_corners=True)
        return F.grid_sample(images, grid, align_corners=True)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.proj(chips.flatten(1))


PEOPLE = {"Ann_Aa": 3, "Bob_Bb": 3, "Cid_Cc": 2, "Dee_Dd": 2}
PAIRS = "2 2\nAnn_Aa 1 2\nBob_Bb 1 2\nAnn_Aa 1 Bob_Bb 1\nCid_Cc 1 Dee_Dd 1\nCid_Cc 1 2\nDee_Dd 1 2\nAnn_Aa 3 Cid_Cc 2\nBob_Bb 3 Dee_Dd 2\n"
SWEEP = {"uncompressed": (None,), "jpeg": (10, 50), "jpeg2000": (0.5,), "webp": (30,), "paper-mse": ()}


def make_lfw(root: Path) -> Path:
    """A made-up LFW: ``<Person>/<Person>_NNNN.jpg`` plus a 2-fold ``pairs.txt``."""
    for i, (person, n) in enumerate(PEOPLE.items()):
        (root / person).mkdir(parents=True)
        for k in range(1, n + 1):
            img = face_image(seed=10 * i + k).astype(np.int16)
            img[..., i % 3] += 25 * i
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / person / f"{person}_{k:04d}.jpg", quality=90)
    (root / "pairs.txt").write_text(PAIRS)
    return root


@pytest.fixture
def lfw_env(tmp_path, monkeypatch):
    """A made-up LFW, a private cache, the corpus weights as the shipped ones."""
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("facekit.codecs.learned.weights_dir", lambda: WEIGHTS)
    return make_lfw(tmp_path / "lfw")


def _run(root: Path, sweep=None, **kw):  # type: ignore[no-untyped-def]
    return evaluate(root, codecs=dict(sweep or SWEEP), recognizer=TinyRecognizer(), progress=False, seed=7, **kw)


def test_evaluate_runs_with_a_recognizer_instance(lfw_env):
    """(Until b51d2dd, make_context passed progress= to find_transforms and raised TypeError.)"""
    out = _run(lfw_env, {"uncompressed": (None,)}, use_cache=False)
    assert out["recognizer"]["name"] == "tiny-test"


def test_same_evaluation_twice_gives_identical_numbers_and_full_provenance(lfw_env, tmp_path):
    a = _run(lfw_env, use_cache=False)
    b = _run(lfw_env, use_cache=False)
    assert a["codecs"] == b["codecs"]
    c = _run(lfw_env, use_cache=True)  # a cold cache computes the same
    d = _run(lfw_env, use_cache=True)  # and a warm one returns it
    assert a["codecs"] == c["codecs"] == d["codecs"]
    assert set(a["codecs"]) == set(SWEEP)
    assert [p["setting"] for p in a["codecs"]["paper-mse"]] == ["q1", "q3"]
    for points in a["codecs"].values():
        for p in points:
            assert 0.0 <= p["acc_mean"] <= 1.0 and p["n_pairs"] == 8 and p["bpp"] > 0

    prov = a["provenance"]
    assert prov["facekit"] == facekit.__version__
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_commit"] or ""), prov["git_commit"]
    for pkg in ("torch", "numpy", "pillow"):
        assert prov["packages"][pkg], pkg
    assert prov["device"].startswith("cpu") and prov["seed"] == 7
    assert a["data_sha256"]["pairs.txt"] == hashlib.sha256(PAIRS.encode()).hexdigest()
    assert 50 < prov["peak_rss_mib"] < 4096  # MiB: the bound for an evaluation
    varying = ("created", "seconds", "peak_rss_mib")
    stable = {k: v for k, v in prov.items() if k not in varying}
    assert stable == {k: v for k, v in b["provenance"].items() if k not in varying}

    path = save_results(a, tmp_path / "results.json")
    back = load_results(path)
    assert json.dumps(back["codecs"], sort_keys=True) == json.dumps(
        json.loads(json.dumps(a["codecs"], default=str)), sort_keys=True
    )
    assert back["provenance"]["git_commit"] == prov["git_commit"]


def test_cached_results_follow_a_changed_image(lfw_env):
    sweep = {"jpeg": (10,)}
    before = _run(lfw_env, sweep, use_cache=True)
    path = lfw_env / "Ann_Aa" / "Ann_Aa_0001.jpg"
    Image.fromarray(255 - np.asarray(Image.open(path))).save(path, quality=90)
    fresh = _run(lfw_env, sweep, use_cache=False)
    assert fresh["codecs"] != before["codecs"], "the edit does not change the results: pick another"
    cached = _run(lfw_env, sweep, use_cache=True)
    assert cached["codecs"] == fresh["codecs"], "the cache returned results of the old image"


def test_results_checksum_the_images_they_were_computed_on(lfw_env):
    sweep = {"uncompressed": (None,)}
    before = _run(lfw_env, sweep, use_cache=False)
    path = lfw_env / "Bob_Bb" / "Bob_Bb_0002.jpg"
    Image.fromarray(255 - np.asarray(Image.open(path))).save(path, quality=90)
    after = _run(lfw_env, sweep, use_cache=False)
    assert before["data_sha256"] != after["data_sha256"]


def test_cached_results_follow_new_learned_weights(lfw_env, tmp_path, monkeypatch):
    sweep = {"facekit-mse": ("q1",)}
    before = _run(lfw_env, sweep, use_cache=True)
    other = tmp_path / "other-weights"
    for seed, rate in enumerate(("q1", "q3"), 42):  # the same rate points as before, other weights
        install_weights(tiny_model(rate, seed=seed), "mse", folder=other)
    monkeypatch.setattr("facekit.codecs.learned.weights_dir", lambda: other)
    fresh = _run(lfw_env, sweep, use_cache=False)
    assert fresh["codecs"] != before["codecs"]
    cached = _run(lfw_env, sweep, use_cache=True)
    assert cached["codecs"] == fresh["codecs"], "the cache returned results of the old weights"


# --------------------------------------------------------------------------- decoding everywhere


def test_corpus_decodes_as_its_reference_images():
    """The reference PNGs were decoded on the CPU that built the corpus: any CPU is within 1/255."""
    decoded = decode_corpus()
    for name in FKC:
        ref = np.asarray(Image.open(CORPUS / name.replace(".fkc", ".decoded.png")).convert("RGB"))
        diff = np.abs(decoded[name].astype(int) - ref.astype(int)).max()
        assert diff <= 1, f"{name}: differs from the corpus reference by {diff}/255"


def test_decode_is_deterministic_across_processes(tmp_path):
    here = {name: digest(img) for name, img in decode_corpus().items()}
    script = (
        "import json, sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]); "
        "from targets import decode_corpus, digest; "
        "print(json.dumps({k: digest(v) for k, v in decode_corpus().items()}))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", script, str(CORPUS)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == here


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_bytes_decode_the_same_on_cuda():
    codec = LearnedCodec("mse", folder=WEIGHTS)
    images = [face_image(seed=s) for s in range(3)] + [face_image(250, 250, seed=9)]
    datas = [codec.encode(im, rate) for im in images for rate in codec.settings]
    cpu = [codec.decode(d) for d in datas]
    gpu_codec = LearnedCodec("mse", folder=WEIGHTS, device="cuda")
    gpu = [gpu_codec.decode(d) for d in datas]
    worst = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(cpu, gpu, strict=True))
    assert worst <= 1, f"CPU and CUDA decodes differ by {worst}/255"
    on_cpu = decode_corpus()
    for name, img in decode_corpus("cuda").items():
        assert np.abs(img.astype(int) - on_cpu[name].astype(int)).max() <= 1, name
