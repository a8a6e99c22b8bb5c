"""Recipes (facekit.training.recipe): loading and checking, ``facekit train --recipe``, and ``make weights``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facekit import zoo
from facekit.cli import main
from facekit.errors import TrainingError
from facekit.training.recipe import (
    RecipeError,
    install_recipe_run,
    load_recipe,
    parse_toml,
    parse_toml_subset,
)

from .test_hyperprior import TINY, face_like

pytest.importorskip("constriction")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "recipes").glob("*.toml"))

TINY_RECIPE = """
[model]
name = "tinyhp"
kind = "hyperprior"
[model.arch]
{arch}
[data]
source = "folder"
folder = "images"
held_out = 1
[train]
seed = 3
batch_size = 2
crop = 64
warmup = 2
lambda_min = 1e-3
lambda_max = 0.05
log_every = 1
checkpoint_every = 2
val_every = 3
[preset.cpu]
steps = 5
device = "cpu"
threads = 1
[preset.gpu]
steps = 5
device = "cuda"
[joint]
enabled = false
"""


def tiny_recipe(tmp: Path) -> Path:
    """A recipe of a tiny model that trains on six 64x64 images in ``tmp/images``."""
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    for i in range(6):
        im = (face_like(64, 64, seed=i)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(im).save(tmp / "images" / f"face{i}.png")
    arch = "\n".join(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in TINY.to_dict().items()
                     if k != "name")
    path = tmp / "tiny.toml"
    path.write_text(TINY_RECIPE.format(arch=arch))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipes_load_and_read_alike_everywhere(path: Path) -> None:
    recipe = load_recipe(path)
    text = path.read_text()
    assert parse_toml_subset(text) == parse_toml(text)  # what Python 3.10 without tomli reads
    cpu, cpu_opts = recipe.config("cpu")
    gpu, gpu_opts = recipe.config("gpu")
    assert cpu_opts["device"] == "cpu" and cpu_opts["threads"] == 1
    assert gpu_opts["device"] == "cuda" and 0 < gpu_opts["time_limit_s"] <= 15 * 60
    assert cpu.seed == gpu.seed and cpu.lambda_min == gpu.lambda_min and cpu.lambda_max == gpu.lambda_max
    assert recipe.data["source"] == "lfw-identity-disjoint" and not recipe.joint.get("enabled")
    assert cpu.checkpoint_every <= 3000  # at most about 10 minutes between checkpoints on one CPU thread


BAD = {  # case: (text of the good recipe, what replaces it, what the error says)
    "not toml": ("[model]", "[model", "not valid TOML"),
    "unknown key": ("[train]\nseed = 3", "[train]\nsed = 3", "unknown key(s) sed in [train]"),
    "wrong type": ("batch_size = 2\n", 'batch_size = "2"\n', "batch_size = '2' should be a int"),
    "unknown preset": ("[preset.cpu]", "[preset.fast]", "should be some of cpu, gpu"),
    "lambda order": ("lambda_min = 1e-3\nlambda_max = 0.05", "lambda_min = 0.05\nlambda_max = 1e-3", "0 < min < max"),
    "joint on": ("enabled = false", "enabled = true", "not implemented yet"),
    "bad arch": ("[model.arch]", "[model.arch]\nwidth = 3", "[model.arch]"),
    "bad source": ('source = "folder"', 'source = "faces"', "source 'faces'"),
    "bad threads": ("threads = 1", "threads = 0", "threads = 0 should be a positive number"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_recipe_gives_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    good = tiny_recipe(tmp_path).read_text()
    old, new, expect = BAD[case]
    assert old in good
    bad = tmp_path / "bad.toml"
    bad.write_text(good.replace(old, new, 1))
    with pytest.raises(RecipeError, match="bad.toml") as err:
        load_recipe(bad)
    assert expect in str(err.value)
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facekit: error: recipe ") and expect in lines[0]
    with pytest.raises(RecipeError, match="cannot be read"):
        load_recipe(tmp_path / "missing.toml")


def test_cli_recipe_trains_resumes_and_installs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tiny_recipe(tmp_path)
    a, b, store = tmp_path / "a", tmp_path / "b", tmp_path / "weights"
    assert main(["train", "--recipe", str(recipe), "--out", str(a)]) == 0
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--stop-after", "2"]) == 0
    assert not (b / "rd" / "model.pt").exists()
    assert main(["train", "--recipe", str(recipe), "--out", str(b)]) == 2  # a run is there: --resume or another --out
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume", "--install",
                 "--weights-folder", str(store)]) == 0
    wa = torch.load(a / "rd" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "rd" / "model.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # resumed = uninterrupted
    assert (b / "recipe.toml").read_bytes() == recipe.read_bytes()
    assert len((b / "chunks.jsonl").read_text().splitlines()) == 2
    curve = [r for r in (json.loads(x) for x in (b / "rd" / "history.jsonl").read_text().splitlines()) if "val_bpp_t0" in r]
    assert [r["step"] for r in curve] == [3, 5]
    # the installed model and its manifest entry
    model, entry = zoo.load_hyperprior("tinyhp", folder=store)
    assert all(torch.equal(model.state_dict()[k], wb[k]) for k in wb)
    assert entry["recipe"]["file"] == "tiny.toml" and entry["recipe"]["preset"] == "cpu"
    assert entry["recipe"]["config"]["lambda_max"] == 0.05 and entry["steps"] == 5 and entry["chunks"] == 2
    assert entry["commit"] and "CPU" in entry["hardware"]
    assert [r["step"] for r in entry["curve"]] == [3, 5]
    assert set(entry["metrics"]) == {f"val_{m}_t{t}" for m in ("psnr", "bpp") for t in ("0", "0.5", "1")}
    assert min(entry["metrics"].values()) > 0
    assert entry["metrics"]["val_psnr_t0.5"] == pytest.approx(curve[-1]["val_psnr_t0.5"], abs=1e-4)
    assert not zoo.verify(store)
    # a changed recipe does not resume the run
    recipe.write_text(recipe.read_text().replace("lambda_max = 0.05", "lambda_max = 0.06"))
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    with pytest.raises(TrainingError, match="settings other than"):
        install_recipe_run(load_recipe(recipe), b, folder=store)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_weights_trains_and_installs_every_recipe(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["make", "-s", "-C", str(REPO), "weights", f"FACEKIT={sys.executable} -m facekit.cli", f"RECIPES={recipe}",
            f"WEIGHTS_RUNS={tmp_path / 'runs'}", f"WEIGHTS_FOLDER={tmp_path / 'store'}"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    entry = zoo.read_manifest(tmp_path / "store")["models"]["tinyhp"]
    assert entry["file"] == "tinyhp.pt" and entry["steps"] == 5 and entry["curve"]
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)  # finished: resumes, reinstalls
    assert again.returncode == 0 and "--resume" in again.stdout
    assert zoo.read_manifest(tmp_path / "store")["models"]["tinyhp"]["sha256"] == entry["sha256"]
