"""Recipes (facekit.training.recipe): loading and checking, ``facekit train --recipe`` (phase one, then the
joint phase), ``--install``, and ``make weights``."""

from __future__ import annotations

import hashlib
import json
import math
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
from facekit.models.hyperprior import FaceHyperprior
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
RECIPES = sorted((REPO / "recipes").glob("*.toml"))

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
enabled = true
recognizer = "tests.fakes:TinyRecognizer"
lambda_id = 0.5
background_weight = 0.5
lr = 1e-3
val_every = 2
checkpoint_every = 2
[joint.preset.cpu]
steps = 4
[joint.preset.gpu]
steps = 4
time_limit_s = 60
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


@pytest.mark.parametrize("path", RECIPES, ids=[f"{p.parent.name}/{p.stem}" for p in RECIPES])
def test_recipes_load_and_read_alike_everywhere(path: Path) -> None:
    recipe = load_recipe(path)
    text = path.read_text()
    assert parse_toml_subset(text) == parse_toml(text)  # what Python 3.10 without tomli reads
    cpu, cpu_opts = recipe.config("cpu")
    gpu, gpu_opts = recipe.config("gpu")
    assert cpu_opts["device"] == "cpu" and cpu_opts["threads"] == 1
    assert gpu_opts["device"] == "cuda" and 0 < gpu_opts["time_limit_s"] <= 15 * 60
    assert cpu.seed == gpu.seed and cpu.lambda_min == gpu.lambda_min and cpu.lambda_max == gpu.lambda_max
    assert recipe.data["source"] == "lfw-identity-disjoint" and recipe.joint_enabled
    assert cpu.checkpoint_every <= 3000  # at most about 10 minutes between checkpoints on one CPU thread
    for preset, phase_one in (("cpu", cpu), ("gpu", gpu)):
        joint, options = recipe.joint_config(preset)
        assert (joint.lambda_min, joint.lambda_max, joint.arch) == (phase_one.lambda_min, phase_one.lambda_max, phase_one.arch)
        assert joint.recognizer == "dlib-resnet" and joint.lambda_id > 0 and 0 < joint.background_weight < 1
        assert options["device"] == (cpu_opts if preset == "cpu" else gpu_opts)["device"]
        assert preset == "cpu" or 0 < options["time_limit_s"] <= 15 * 60
        assert preset == "gpu" or joint.checkpoint_every <= 300  # about 10 minutes at 2 s a step


BAD = {  # case: (text of the good recipe, what replaces it, what the error says)
    "not toml": ("[model]", "[model", "not valid TOML"),
    "unknown key": ("[train]\nseed = 3", "[train]\nsed = 3", "unknown key(s) sed in [train]"),
    "wrong type": ("batch_size = 2\n", 'batch_size = "2"\n', "batch_size = '2' should be a int"),
    "unknown preset": ("[preset.cpu]", "[preset.fast]", "should be some of cpu, gpu"),
    "lambda order": ("lambda_min = 1e-3\nlambda_max = 0.05", "lambda_min = 0.05\nlambda_max = 1e-3", "0 < min < max"),
    "joint lambda": ("lambda_id = 0.5", "lambda_min = 0.5", "unknown key(s) lambda_min in [joint]"),
    "joint presets": ("[joint.preset.gpu]\nsteps = 4\n", "", "[joint.preset.*] should be the presets of phase one"),
    "joint weight": ("background_weight = 0.5", "background_weight = 2", "0 <= background_weight <= 1"),
    "joint switch": ("enabled = true", 'enabled = "yes"', "enabled = 'yes' should be true or false"),
    "bad arch": ("[model.arch]", "[model.arch]\nwidth = 3", "[model.arch]"),
    "bad source": ('source = "folder"', 'source = "faces"', "source 'faces'"),
    "bad threads": ("threads = 1", "threads = 0", "threads = 0 should be a positive number"),
    "bad val rates": ("val_every = 3", "val_every = 3\nval_rates = [0, 1.5]", "val_rates = [0, 1.5] should be a non-empty list"),
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


def test_cli_recipe_trains_both_phases_resumes_and_installs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tiny_recipe(tmp_path)
    a, b, store = tmp_path / "a", tmp_path / "b", tmp_path / "weights"
    assert main(["train", "--recipe", str(recipe), "--out", str(a)]) == 0
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--stop-after", "2"]) == 0
    assert not (b / "rd" / "model.pt").exists() and not (b / "joint").exists()
    assert main(["train", "--recipe", str(recipe), "--out", str(b)]) == 2  # a run is there: --resume or another --out
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume", "--stop-after", "7"]) == 0
    assert (b / "rd" / "model.pt").exists() and not (b / "joint" / "model.pt").exists()  # phase one, then 2 joint steps
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume", "--install",
                 "--weights-folder", str(store)]) == 0
    for phase in ("rd", "joint"):  # resumed = uninterrupted, in both phases
        wa = torch.load(a / phase / "model.pt", weights_only=True)["state_dict"]
        wb = torch.load(b / phase / "model.pt", weights_only=True)["state_dict"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (b / "recipe.toml").read_bytes() == recipe.read_bytes()
    assert len((b / "chunks.jsonl").read_text().splitlines()) == 3
    curve = [r for r in (json.loads(x) for x in (b / "joint" / "history.jsonl").read_text().splitlines()) if "val_bpp_t0" in r]
    assert [r["step"] for r in curve] == [2, 4] and all(0 < r["val_idcos_t0.5"] <= 1 for r in curve)
    assert "val_idcos_t1" in (b / "joint" / "history.csv").read_text().splitlines()[0]
    # the installed model is the joint phase's, and its manifest entry tells both phases
    model, entry = zoo.load_hyperprior("tinyhp", folder=store)
    assert all(torch.equal(model.state_dict()[k], wb[k]) for k in wb)
    assert entry["recipe"]["file"] == "tiny.toml" and entry["recipe"]["preset"] == "cpu" and entry["chunks"] == 3
    assert entry["commit"] and "CPU" in entry["hardware"] and entry["steps"] == 4
    rd, joint = entry["phases"]
    assert rd["phase"] == "rate-distortion" and joint["phase"] == "joint-rate-distortion"
    assert rd["config"]["lambda_max"] == joint["config"]["lambda_max"] == 0.05 and joint["config"]["lambda_id"] == 0.5
    assert [r["step"] for r in rd["curve"]] == [3, 5] and [r["step"] for r in joint["curve"]] == [2, 4]
    assert joint["init_sha256"] == hashlib.sha256((b / "rd" / "model.pt").read_bytes()).hexdigest()
    assert set(rd["metrics"]) == {f"val_{m}_t{t}" for m in ("psnr", "bpp") for t in ("0", "0.5", "1")}
    assert set(joint["metrics"]) == {f"val_{m}_t{t}" for m in ("psnr", "bpp", "idcos", "iddist") for t in ("0", "0.5", "1")}
    assert entry["metrics"] == joint["metrics"] and entry["curve"] == joint["curve"]
    assert entry["train_time_s"] == pytest.approx(rd["train_time_s"] + joint["train_time_s"], abs=0.2)
    assert joint["metrics"]["val_psnr_t0.5"] == pytest.approx(curve[-1]["val_psnr_t0.5"], abs=1e-4)
    assert not zoo.verify(store)
    # a changed recipe does not resume the run, nor install it
    changed = recipe.read_text().replace("lambda_id = 0.5", "lambda_id = 0.6")
    recipe.write_text(changed)
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume"]) == 2  # phase one's settings hold, not the joint one's
    assert "different config: lambda_id" in capsys.readouterr().err
    with pytest.raises(TrainingError, match=r"settings other than .*lambda_id \(0.5 != 0.6\)"):
        install_recipe_run(load_recipe(recipe), b, folder=store)
    recipe.write_text(changed.replace("lambda_max = 0.05", "lambda_max = 0.06"))
    assert main(["train", "--recipe", str(recipe), "--out", str(b), "--resume"]) == 2
    assert "settings other than" in (err := capsys.readouterr().err) and "lambda_max (0.05 != 0.06)" in err


def test_one_phase_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tiny_recipe(tmp_path)
    run, store = tmp_path / "run", tmp_path / "weights"
    assert main(["train", "--recipe", str(recipe), "--out", str(run), "--phase", "joint"]) == 2  # nothing to continue
    assert "add --resume" in capsys.readouterr().err
    assert main(["train", "--recipe", str(recipe), "--out", str(run), "--phase", "rd", "--install",
                 "--weights-folder", str(store)]) == 0
    assert (run / "rd" / "model.pt").exists() and not (run / "joint").exists()
    _, entry = zoo.load_hyperprior("tinyhp", folder=store)
    assert [p["phase"] for p in entry["phases"]] == ["rate-distortion"] and entry["steps"] == 5
    with pytest.raises(TrainingError, match="no finished joint phase"):
        install_recipe_run(load_recipe(recipe), run, folder=store)
    assert main(["train", "--recipe", str(recipe), "--out", str(run), "--resume", "--phase", "joint", "--install",
                 "--weights-folder", str(store)]) == 0
    _, entry = zoo.load_hyperprior("tinyhp", folder=store)
    assert [p["steps"] for p in entry["phases"]] == [5, 4] and entry["phases"][1]["curve"]


def test_validation_rates_are_the_recipes_and_may_change_on_resume(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path)
    text = recipe.read_text()
    recipe.write_text(text.replace("val_every = 3", "val_every = 3\nval_rates = [0, 0.25, 1]"))
    run, store = tmp_path / "run", tmp_path / "weights"
    train = ["train", "--recipe", str(recipe), "--out", str(run), "--phase", "rd"]
    assert main([*train, "--stop-after", "3"]) == 0
    assert {"val_psnr_t0.25", "val_bpp_t0.25"} <= set((run / "rd" / "history.csv").read_text().splitlines()[0].split(","))
    recipe.write_text(text)  # validation at the default rates from here on: the run resumes and installs
    assert main([*train, "--resume", "--install", "--weights-folder", str(store)]) == 0
    rd = zoo.load_hyperprior("tinyhp", folder=store)[1]["phases"][0]
    assert [sorted(k for k in r if k.startswith("val_psnr")) for r in rd["curve"]] == [
        ["val_psnr_t0", "val_psnr_t0.25", "val_psnr_t1"], ["val_psnr_t0", "val_psnr_t0.5", "val_psnr_t1"]]


def test_a_resumed_joint_phase_counts_its_own_steps_and_keeps_its_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tiny_recipe(tmp_path)
    run, store = tmp_path / "run", tmp_path / "weights"
    train = ["train", "--recipe", str(recipe), "--out", str(run)]
    assert main([*train, "--phase", "rd"]) == 0
    start = (run / "rd" / "model.pt").read_bytes()
    sha = hashlib.sha256(start).hexdigest()
    assert main([*train, "--resume", "--phase", "joint", "--stop-after", "2"]) == 0  # two joint steps
    ckpt = torch.load(run / "joint" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["origin"] == {"init_sha256": sha}
    capsys.readouterr()
    for args, expect in ((["--phase", "joint", "--stop-after", "2"], "nothing would train"),
                         (["--stop-after", "5"], "nothing would train"),  # of the whole run: phase one has 5
                         (["--stop-after", "3"], "with --phase joint, --stop-after counts"),
                         (["--stop-after", "0"], "trains nothing")):
        assert main([*train, "--resume", *args]) == 2
        assert expect in capsys.readouterr().err
    text = recipe.read_text()
    recipe.write_text(text.replace("[preset.cpu]\nsteps = 5", "[preset.cpu]\nsteps = 7"))
    assert main([*train, "--resume"]) == 2  # phase one would outgrow the weights the joint phase started from
    assert "steps (5 != 7)" in (err := capsys.readouterr().err) and "phase one trains no further" in err
    assert (run / "rd" / "model.pt").read_bytes() == start
    recipe.write_text(text)
    torch.manual_seed(1)
    torch.save({"rate_point": TINY.to_dict(), "state_dict": FaceHyperprior(TINY).state_dict()}, run / "rd" / "model.pt")
    assert main([*train, "--resume", "--phase", "joint"]) == 2
    assert f"init_sha256 '{sha}', now" in capsys.readouterr().err
    (run / "rd" / "model.pt").write_bytes(start)
    assert main([*train, "--resume", "--install", "--weights-folder", str(store)]) == 0
    _, entry = zoo.load_hyperprior("tinyhp", folder=store)
    assert [p["steps"] for p in entry["phases"]] == [5, 4] and entry["phases"][1]["init_sha256"] == sha


def test_the_shipped_weights_were_trained_by_their_recipe() -> None:
    """Each phase of the shipped ``hyperprior`` entry ran with its recipe's settings (those a resumed
    run may change aside), so ``make weights`` trains what was shipped."""
    entry = zoo.read_manifest()["models"]["hyperprior"]
    recipe = load_recipe(REPO / "recipes" / entry["recipe"]["file"])
    preset = entry["recipe"]["preset"]
    want = {"rd": recipe.config(preset)[0], "joint": recipe.joint_config(preset)[0]}
    assert [p["phase"] for p in entry["phases"]] == [want["rd"].PHASE, want["joint"].PHASE]
    for folder, phase in zip(("rd", "joint"), entry["phases"], strict=True):
        cfg = want[folder]
        differ = {k for k, v in cfg.to_dict().items() if phase["config"].get(k) != v} - set(cfg.RESUMABLE_CHANGES)
        assert not differ, (folder, differ)
        assert phase["steps"] == cfg.steps


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
    assert entry["file"] == "tinyhp.pt" and [p["steps"] for p in entry["phases"]] == [5, 4] and entry["curve"]
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)  # finished: resumes, reinstalls
    assert again.returncode == 0 and "--resume" in again.stdout
    assert zoo.read_manifest(tmp_path / "store")["models"]["tinyhp"]["sha256"] == entry["sha256"]


def test_compare_curves_checks_each_shared_step_and_rate() -> None:
    from facekit.training.curve import compare_curves

    shipped = [{"step": 1000, "val_psnr_t0": 20.0, "val_bpp_t0": 0.05, "val_psnr_t1": 30.0, "val_bpp_t1": 0.5},
               {"step": 2000, "val_psnr_t0": 21.0, "val_bpp_t0": 0.04, "val_psnr_t1": 31.0, "val_bpp_t1": 0.45}]
    rerun = [{"step": 1000, "val_psnr_t0": 20.15, "val_bpp_t0": 0.0505, "val_psnr_t1": 29.7, "val_bpp_t1": 0.5}]
    rows = compare_curves(shipped, rerun)
    assert [(r["step"], r["t"], r["ok"]) for r in rows] == [(1000, "0", True), (1000, "1", False)]
    assert rows[1]["d_psnr_db"] == pytest.approx(-0.3)
    assert not compare_curves(shipped, [{**rerun[0], "val_bpp_t0": 0.052}])[0]["ok"]  # 4 % more bits
    with pytest.raises(TrainingError, match="share no held-out step"):
        compare_curves(shipped, [{"step": 500, "val_psnr_t0": 1.0, "val_bpp_t0": 1.0}])


def test_compare_curves_skips_missing_figures_and_a_zero_shipped_bpp_is_not_ok() -> None:
    from facekit.training.curve import compare_curves

    shipped = [{"step": 1000, "val_psnr_t0": 20.0, "val_bpp_t0": 0.0, "val_psnr_t1": 30.0, "val_bpp_t1": 0.5,
                "val_psnr_t0.5": 25.0}]  # no bpp at t = 0.5
    rerun = [{"step": 1000, "val_psnr_t0": 20.0, "val_bpp_t0": 0.0, "val_psnr_t1": 30.0, "val_psnr_t0.5": 25.0}]
    with pytest.raises(TrainingError, match="share no held-out step"):  # t1's bpp missing from the rerun too
        compare_curves(shipped, [{"step": 1000, "val_psnr_t0.5": 25.0}])
    rows = compare_curves(shipped, rerun)
    assert [(r["t"], r["ok"], r["d_bpp_rel"]) for r in rows] == [("0", False, None)]
    rows = compare_curves(shipped, [{**rerun[0], "val_bpp_t1": 0.5}])
    assert [(r["t"], r["ok"]) for r in rows] == [("0", False), ("1", True)]


def test_bd_psnr_by_step_measures_the_curve_not_one_rate() -> None:
    """A step whose top rate gained PSNR only by spending more bits is on the same curve as the last."""
    from facekit.training.curve import bd_psnr_by_step

    def row(step, *points):  # type: ignore[no-untyped-def]
        return {"step": step, **{k: v for t, (b, q) in zip(("0", "0.5", "1"), points, strict=True)
                                 for k, v in ((f"val_bpp_t{t}", b), (f"val_psnr_t{t}", q))}}

    # the last curve gains 2 dB each time the bits double; a step on the same line, at fewer bits, is 0 dB off
    curve = [row(1000, (0.05, 24.0), (0.1, 26.0), (0.2, 28.0)),  # 2 dB below
             row(2000, (0.05, 26.0), (0.1, 28.0), (0.2, 30.0)),  # the same line: its PSNR rose later with its bits
             row(3000, (0.01, 0.0), (0.02, 1.0), (0.05, 2.0)),   # below 0.1 bpp: nothing to compare
             row(4000, (0.1, 28.0), (0.2, 30.0), (0.4, 32.0))]
    got = [(r["step"], None if r["bd_psnr_db"] is None else round(r["bd_psnr_db"], 6)) for r in bd_psnr_by_step(curve)]
    assert got == [(1000, -2.0), (2000, 0.0), (3000, None), (4000, 0.0)]
    with pytest.raises(TrainingError, match="empty training curve"):
        bd_psnr_by_step([])


def test_bd_psnr_at_equal_training_matches_steps_or_pixels_seen() -> None:
    """Two runs are compared after as much training: the same step, or the same pixels seen."""
    from facekit.training.curve import bd_psnr_at_equal_training, training_pixels_per_step

    def row(step, db):  # type: ignore[no-untyped-def]  # a curve db dB above the base line
        return {"step": step, "val_bpp_t0": 0.1, "val_psnr_t0": 28.0 + db, "val_bpp_t1": 0.4, "val_psnr_t1": 32.0 + db}

    reference = [row(s, s / 1000) for s in (1000, 2000, 3000, 4000)]
    same = [row(1000, 1.5), row(3000, 3.0), row(6000, 9.0)]  # step 6,000: beyond the reference, left out
    assert [(r["step"], r["reference_step"], round(r["bd_psnr_db"], 6)) for r in bd_psnr_at_equal_training(same, reference)] == [
        (1000, 1000, 0.5), (3000, 3000, 0.0)]
    scale = training_pixels_per_step({"batch_size": 8, "crop": 256}) / training_pixels_per_step({"batch_size": 8, "crop": 128})
    bigger = [row(250, 1.0), row(500, 1.0), row(1000, 4.5)]  # 4x the pixels a step: steps 1,000, 2,000, 4,000
    assert scale == 4 and [(r["reference_step"], round(r["bd_psnr_db"], 6))
                           for r in bd_psnr_at_equal_training(bigger, reference, scale=scale)] == [(1000, 0.0), (2000, -1.0), (4000, 0.5)]
    assert bd_psnr_at_equal_training([row(1000, 0.0) | {"val_bpp_t0": 0.01, "val_bpp_t1": 0.02}], reference)[0]["bd_psnr_db"] is None
    with pytest.raises(TrainingError, match="empty reference"):
        bd_psnr_at_equal_training(same, [])


def test_schedule_lengths_are_runs_equal_but_for_steps_and_their_gain_is_a_slope_in_log2_steps() -> None:
    from facekit.training.curve import (
        config_changes,
        differs_only_in_steps,
        doubling_gains,
        gain_per_doubling,
    )

    shipped = {"steps": 40000, "lr": 6e-4, "crop": 128, "val_every": 1000, "log_every": 100}
    # what a run changes, nested settings as dotted keys, bookkeeping left out
    arch = {**shipped, "arch": {"latent": 64, "context": 128}}
    assert config_changes({**arch, "arch": {"latent": 192, "context": 128}, "val_every": 500}, arch) == {
        "arch.latent": [64, 192]}
    assert config_changes({**shipped, "seed": 1, "lr": 3e-4}, shipped) == {"lr": [6e-4, 3e-4], "seed": [None, 1]}
    assert config_changes(arch, arch) == {}
    assert differs_only_in_steps({**shipped, "steps": 10000, "val_every": 500, "log_every": 10}, shipped)
    assert not differs_only_in_steps({**shipped, "steps": 10000, "lr": 3e-4}, shipped)
    assert not differs_only_in_steps({**shipped, "seed": 1}, shipped)  # a key one of them lacks
    assert gain_per_doubling([(10000, -0.5), (20000, -0.2), (40000, 0.0)]) == pytest.approx(0.25)
    assert gain_per_doubling([(40000, 0.0), (40000, 0.1)]) is None and gain_per_doubling([]) is None
    # the fitted line hides where the gains stop; each step up shows it (a repeated length counts once)
    ends = [(80000, -0.2), (10000, -1.4), (40000, 0.0), (20000, -0.8), (40000, 0.3)]
    assert gain_per_doubling(ends[:4]) > 0.4
    assert [(g["from"], g["to"], round(g["per_doubling"], 6)) for g in doubling_gains(ends)] == [
        (10000, 20000, 0.6), (20000, 40000, 0.8), (40000, 80000, -0.2)]
    assert doubling_gains([(5000, 1.0)]) == [] and doubling_gains([(10000, -1.0), (40000, 0.0)])[0]["per_doubling"] == 0.5


def _reproduce_bench():  # type: ignore[no-untyped-def]
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_reproduce.py"
    spec = importlib.util.spec_from_file_location("recipe_reproduce_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recipe_reproduce_maps_phases_by_name_and_says_what_steps_must_reach(monkeypatch, capsys, tmp_path) -> None:
    bench = _reproduce_bench()
    rd = [{"step": 1000, "val_psnr_t0": 20.0, "val_bpp_t0": 0.05}]
    joint = [{"step": 100, "val_psnr_t0": 21.0, "val_bpp_t0": 0.05}]
    entry = {"phases": [{"phase": "joint-rate-distortion", "curve": joint}, {"phase": "rate-distortion", "curve": rd}],
             "sha256": "ab" * 32, "recipe": {"preset": "cpu"}, "commit": ["abcdef0"]}
    assert bench.shipped_curves(entry) == {"rd": rd, "joint": joint}  # by name, whatever the order
    with pytest.raises(SystemExit):
        bench.main(["--steps", "0"])
    assert "expected a positive integer" in capsys.readouterr().err
    monkeypatch.setattr(bench, "read_manifest", lambda folder: {"models": {"hyperprior": entry}})
    monkeypatch.setattr(bench, "fresh_prefix", lambda *a: [{"step": 10, "val_psnr_t0": 5.0, "val_bpp_t0": 1.0}])
    with pytest.raises(SystemExit):
        bench.main(["--steps", "10"])
    err = capsys.readouterr().err
    assert "--steps 10 must reach the first held-out step (val_every = " in err
    monkeypatch.setattr(bench, "fresh_prefix", lambda *a: [{"step": 1000, "val_psnr_t0": 20.1, "val_bpp_t0": 0.05}])
    assert bench.main(["--steps", "1000"]) == 0 and "reproduced within" in capsys.readouterr().out
    out = tmp_path / "reproduce.json"
    assert bench.main(["--steps", "1000", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["reproduced"] and written["rerun"] == "first 1000 steps" and written["shipped_sha256"] == "ab" * 32
    assert [(r["step"], r["t"], r["ok"]) for r in written["phases"]["rd"]] == [(1000, "0", True)]


@pytest.mark.lfw
def test_the_convergence_benchmark_reads_the_shipped_curve_another_run_and_training_faces(lfw, tmp_path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    run = tmp_path / "more" / "rd"
    run.mkdir(parents=True)
    row = {"step": 500, "elapsed_s": 1.0, "val_psnr_t0": 20.0, "val_bpp_t0": 0.05, "val_psnr_t1": 33.0, "val_bpp_t1": 0.8}
    (run / "history.jsonl").write_text(json.dumps(row) + "\n")
    bench = [sys.executable, str(repo / "benchmarks" / "convergence.py")]
    done = subprocess.run([*bench, "--run", str(run)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "holds no training config (config.json)" in done.stderr and "Traceback" not in done.stderr
    (run / "config.json").write_text(json.dumps({"config": {"batch_size": 8, "crop": 256}}))  # 4x the recipe's pixels a step
    out = tmp_path / "convergence.json"
    done = subprocess.run([*bench, "--run", str(run),
                           "--train-faces", "2", "--json", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    assert set(got["phases"]) == {"rate-distortion", "joint-rate-distortion"}
    assert all(rows[-1]["bd_psnr_db"] == 0 for rows in got["phases"].values())
    (compared,) = got["runs"]
    assert [r["step"] for r in compared["rows"]] == [500] and compared["rows"][0]["bd_psnr_db"] is not None
    assert compared["pixels_per_step_ratio"] == 4 and [r["reference_step"] for r in compared["equal_training"]] == [2000]
    assert got["faces"]["train_faces"] == 2 and {"held-out", "training"} <= set(got["faces"])
    (run / "summary.json").write_text(json.dumps({"init": "cd" * 32}))  # trained further from other weights
    done = subprocess.run([*bench, "--run", str(run), "--json", str(out)], capture_output=True, text=True, check=False)
    (compared,) = json.loads(out.read_text())["runs"]
    assert done.returncode == 0 and compared["started_from"] == "cd" * 32 and "equal_training" not in compared
    assert "started from trained weights, cdcdcdcdcdcd" in done.stdout
    shipped = next(ph for ph in zoo.read_manifest()["models"]["hyperprior"]["phases"] if ph["phase"] == "rate-distortion")
    short = tmp_path / "short" / "rd"  # the recipe's phase one as a whole schedule of 500 steps
    short.mkdir(parents=True)
    (short / "history.jsonl").write_text(json.dumps({**shipped["curve"][2], "step": 500}) + "\n")
    (short / "config.json").write_text(json.dumps({"config": {**shipped["config"], "steps": 500}}))
    done = subprocess.run([*bench, "--run", str(run), str(short), "--json", str(out)], capture_output=True, text=True, check=False)
    lengths = json.loads(out.read_text())["schedule_lengths"]
    assert done.returncode == 0 and [e["steps"] for e in lengths["ends"]] == [500] and lengths["shipped_steps"] == 40000
    d = lengths["ends"][0]["bd_psnr_db"]
    assert d < 0 and lengths["gain_per_doubling_db"] == pytest.approx(-d / math.log2(40000 / 500))
    assert lengths["doubling_gains_db"] == [{"from": 500, "to": 40000, "per_doubling": pytest.approx(-d / math.log2(40000 / 500))}]
    assert "gain per doubling of the steps" in done.stdout
    done = subprocess.run([*bench, "--json", str(out)], capture_output=True, text=True, check=False)
    kept = json.loads(out.read_text())  # the run folders may be gone: the file keeps their records
    assert done.returncode == 0 and [r["folder"] for r in kept["runs"]] == [str(run), str(short)]
    assert kept["schedule_lengths"] == lengths and kept["faces"]["train_faces"] == 2
    assert f"keeps its records of {run}, {short}" in done.stdout
    out.write_text(json.dumps({**kept, "sha256": "ab" * 32}))  # a record of other weights is not kept
    done = subprocess.run([*bench, "--json", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not {"runs", "faces"} & set(json.loads(out.read_text()))
    out.write_text("{")
    done = subprocess.run([*bench, "--json", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "cannot be read as an earlier record" in done.stderr and out.read_text() == "{"
    done = subprocess.run([*bench, "--store", "nothing"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "no weights for 'nothing'" in done.stderr and "Traceback" not in done.stderr
