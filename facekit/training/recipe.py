"""Recipes: one small TOML file per shipped model says how to train it again.

A recipe (``recipes/<name>.toml`` at the repository root) names the model, the data, the
training settings of phase one (``[train]``: steps, batch, crop, learning-rate schedule,
the lambda range, seed) and of phase two (``[joint]``: the identity term and the
face-weighted distortion of Bian et al., arXiv:1907.01714, Sec. 3.2,
:mod:`facekit.training.jointrd`), each with two presets: ``cpu`` (a budget that fits a
2-core machine in a few hours) and ``gpu`` (at most 15 minutes on one H100).
:func:`run_recipe` runs phase one (:func:`facekit.training.rd.train_rd`), then phase two
from phase one's final weights (:func:`facekit.training.jointrd.train_joint_rd`), both
through the one training loop, seeded and resumable in chunks; :func:`install_recipe_run`
puts the finished weights in the weights store (:mod:`facekit.zoo`) with a manifest entry
that says how they were made (recipe, commits, hardware, held-out figures and the
training curve of each phase). On the command line::

    facekit train --recipe recipes/hyperprior.toml --preset cpu --out runs/hp
    facekit train --recipe recipes/hyperprior.toml --preset cpu --out runs/hp --resume --install

A run folder holds ``recipe.toml`` (the recipe it was started with), ``run.json``,
``chunks.jsonl`` (one line per start or resume: commit, recipe hash, time), ``rd/`` (phase
one: checkpoint, ``history.csv`` with the held-out PSNR and bpp against steps,
``model.pt``) and ``joint/`` (phase two, alike, its ``history.csv`` also with the identity
figure ``val_idcos_t*``). Recipes are read by :mod:`facekit.training.recipe_toml`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import TrainingError
from ..fileio import PathLike, atomic_write
from .curve import training_curve
from .jointrd import JointRDConfig
from .rd import RDConfig
from .recipe_toml import parse_toml, parse_toml_subset

__all__ = ["Recipe", "RecipeError", "git_commit", "install_recipe_run", "load_recipe", "parse_toml",
           "parse_toml_subset", "run_recipe"]

C = TypeVar("C", bound=RDConfig)

#: the tables a recipe may have, and the keys of each (``train`` and the presets: RDConfig's fields)
TABLES = ("model", "data", "train", "preset", "joint")
MODEL_KEYS = {"name", "kind", "arch"}
DATA_KEYS = {"source", "folder", "held_out"}
#: keys of a preset beyond the config's fields: where and how long it runs, and what it costs
RUN_KEYS = {"device", "threads", "time_limit_s", "budget"}
PRESETS = ("cpu", "gpu")
#: config fields a recipe may not set (they are the recipe's own, or fixed)
NOT_SETTABLE = {"rate", "arch", "init", "val_images"}
#: fields phase two takes from phase one: ``lambda(t)``, so that a rate keeps its meaning
PHASE_ONE_ONLY = {"lambda_min", "lambda_max"}
#: the run folder's phases, in order: phase one (rate and distortion), phase two (joint)
PHASES = ("rd", "joint")


class RecipeError(TrainingError):
    """A recipe that cannot be read or does not describe a run; the message names the file."""


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe. :meth:`config` and :meth:`joint_config` give the training configs of a preset."""

    path: Path
    name: str
    kind: str
    arch: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    #: ``[joint]``'s settings (without ``enabled`` and its presets)
    joint: dict[str, Any]
    joint_presets: dict[str, dict[str, Any]]
    #: whether the run goes on to phase two (``[joint] enabled = true``)
    joint_enabled: bool
    sha256: str

    def _build(self, cls: type[C], preset: str, *tables: dict[str, Any]) -> C:
        if preset not in self.presets:
            raise RecipeError(f"recipe {self.path}: no preset {preset!r} (it has {', '.join(self.presets) or 'none'})")
        settings = {k: v for table in tables for k, v in table.items() if k not in RUN_KEYS}
        return cls(**settings, arch=dict(self.arch), val_images=int(self.data.get("held_out", RDConfig.val_images)))

    def config(self, preset: str) -> tuple[RDConfig, dict[str, Any]]:
        """``(RDConfig, run options)`` of phase one: ``[train]`` overridden by ``[preset.<name>]``;
        the options are ``device``, ``threads`` and ``time_limit_s`` (each may be None)."""
        cfg = self._build(RDConfig, preset, self.train, self.presets.get(preset, {}))
        return cfg, {k: self.presets[preset].get(k) for k in ("device", "threads", "time_limit_s")}

    def joint_config(self, preset: str) -> tuple[JointRDConfig, dict[str, Any]]:
        """``(JointRDConfig, run options)`` of phase two: phase one's settings of the preset,
        overridden by ``[joint]``, then by ``[joint.preset.<name>]``; ``device`` and ``threads``
        default to phase one's, ``time_limit_s`` is the joint preset's own."""
        if not self.joint_enabled:
            raise RecipeError(f"recipe {self.path}: no joint phase ([joint] enabled = false)")
        table = self.joint_presets.get(preset, {})
        cfg = self._build(JointRDConfig, preset, self.train, self.presets.get(preset, {}), self.joint, table)
        options = {"device": self.presets[preset].get("device"), "threads": self.presets[preset].get("threads"),
                   "time_limit_s": None}
        options.update({k: table[k] for k in options if k in table})
        return cfg, options


def _check_keys(path: Path, where: str, table: Any, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise RecipeError(f"recipe {path}: [{where}] must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RecipeError(f"recipe {path}: unknown key(s) {', '.join(unknown)} in [{where}] (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(table))
    if missing:
        raise RecipeError(f"recipe {path}: [{where}] needs {', '.join(missing)}")
    return table


def _check_types(path: Path, where: str, table: dict[str, Any], cls: type[RDConfig] = RDConfig) -> None:
    """Each config field a table sets has the type of the field's default (an int may stand for a float)."""
    defaults = cls().to_dict()
    for k, v in table.items():
        if k not in defaults:
            continue
        want = type(defaults[k])
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        ok = ok or (want is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise RecipeError(f"recipe {path}: [{where}] {k} = {v!r} should be a {want.__name__}")


def _check_presets(path: Path, where: str, presets: Any, fields: set[str], cls: type[RDConfig]) -> dict[str, dict[str, Any]]:
    """The ``[<where>.cpu]``/``[<where>.gpu]`` tables: config fields (of ``cls``) and run keys."""
    if not isinstance(presets, dict) or not presets or set(presets) - set(PRESETS):
        raise RecipeError(f"recipe {path}: [{where}.*] should be some of {', '.join(PRESETS)}, got "
                          f"{', '.join(presets) if isinstance(presets, dict) else presets or 'none'}")
    for name, table in presets.items():
        _check_keys(path, f"{where}.{name}", table, fields | RUN_KEYS, {"steps"})
        _check_types(path, f"{where}.{name}", table, cls)
        for k in RUN_KEYS & set(table):
            v = table[k]
            text = k in ("device", "budget")
            ok = isinstance(v, str) if text else isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            if not ok:
                raise RecipeError(f"recipe {path}: [{where}.{name}] {k} = {v!r} should be a {'string' if text else 'positive number'}")
    return {k: dict(v) for k, v in presets.items()}


def _check_run_config(path: Path, where: str, cfg: RDConfig) -> None:
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.crop < 16 or cfg.checkpoint_every < 1:
        raise RecipeError(f"recipe {path}: {where} needs steps, batch_size, checkpoint_every >= 1 and crop >= 16")
    rates = cfg.val_rates
    if not rates or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in rates):
        raise RecipeError(f"recipe {path}: {where} val_rates = {rates!r} should be a non-empty list of rates in [0, 1]")


def load_recipe(path: PathLike) -> Recipe:
    """Read and check a recipe; a :class:`RecipeError` naming the file and the problem otherwise."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise RecipeError(f"recipe {p} cannot be read: {e.strerror or e}") from e
    try:
        doc = parse_toml(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {p} is not valid TOML: {e}") from e
    _check_keys(p, "top level", doc, set(TABLES), {"model", "data", "train", "preset"})
    model = _check_keys(p, "model", doc["model"], MODEL_KEYS, {"name", "kind"})
    if model["kind"] != "hyperprior":
        raise RecipeError(f"recipe {p}: [model] kind {model['kind']!r} is not one facekit trains from a recipe (hyperprior)")
    if not isinstance(model["name"], str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", model["name"]):
        raise RecipeError(f"recipe {p}: [model] name {model['name']!r} should be lower-case letters, digits, - or _")
    arch = model.get("arch", {})
    try:
        from ..models.hyperprior import HyperpriorArch

        HyperpriorArch.from_dict({**HyperpriorArch().to_dict(), **arch})
    except TypeError as e:
        raise RecipeError(f"recipe {p}: [model.arch] {e}") from e
    data = _check_keys(p, "data", doc["data"], DATA_KEYS, {"source"})
    if data["source"] not in ("lfw-identity-disjoint", "folder"):
        raise RecipeError(f"recipe {p}: [data] source {data['source']!r} should be 'lfw-identity-disjoint' or 'folder'")
    if data["source"] == "folder" and not isinstance(data.get("folder"), str):
        raise RecipeError(f"recipe {p}: [data] source 'folder' needs folder = \"path\" (relative to the recipe)")
    fields = {f.name for f in dataclasses.fields(RDConfig)} - NOT_SETTABLE
    train = _check_keys(p, "train", doc["train"], fields, {"seed", "lambda_min", "lambda_max"})
    _check_types(p, "train", train)
    presets = _check_presets(p, "preset", doc["preset"], fields, RDConfig)
    joint_fields = {f.name for f in dataclasses.fields(JointRDConfig)} - NOT_SETTABLE - PHASE_ONE_ONLY
    joint = dict(_check_keys(p, "joint", doc.get("joint", {}), joint_fields | {"enabled", "preset"}))
    enabled, joint_presets = joint.pop("enabled", False), joint.pop("preset", None)
    if not isinstance(enabled, bool):
        raise RecipeError(f"recipe {p}: [joint] enabled = {enabled!r} should be true or false")
    _check_types(p, "joint", joint, JointRDConfig)
    joint_presets = _check_presets(p, "joint.preset", joint_presets, joint_fields, JointRDConfig) if joint_presets else {}
    if enabled and set(joint_presets) != set(presets):
        raise RecipeError(f"recipe {p}: [joint.preset.*] should be the presets of phase one ({', '.join(presets)}), "
                          f"got {', '.join(joint_presets) or 'none'}")
    recipe = Recipe(p, model["name"], model["kind"], dict(arch), dict(data), dict(train), presets, joint,
                    joint_presets, enabled, hashlib.sha256(raw).hexdigest())
    for name in presets:
        cfg, _ = recipe.config(name)
        if not 0 < cfg.lambda_min < cfg.lambda_max:
            raise RecipeError(f"recipe {p}: lambda_min and lambda_max should satisfy 0 < min < max "
                              f"(preset {name}: {cfg.lambda_min}, {cfg.lambda_max})")
        _check_run_config(p, f"preset {name}", cfg)
        if enabled:
            jcfg, _ = recipe.joint_config(name)
            _check_run_config(p, f"the joint phase of preset {name}", jcfg)
            if jcfg.lambda_id < 0 or not 0 <= jcfg.background_weight <= 1 or jcfg.identity not in ("squared", "euclidean", "cosine"):
                raise RecipeError(f"recipe {p}: [joint] needs lambda_id >= 0, 0 <= background_weight <= 1 and identity "
                                  f"'squared', 'euclidean' or 'cosine' (preset {name}: {jcfg.lambda_id}, "
                                  f"{jcfg.background_weight}, {jcfg.identity!r})")
    return recipe


# --------------------------------------------------------------------------- running


def git_commit(repo: PathLike | None = None) -> str:
    """The checkout's commit (``+dirty`` when files differ from it), or ``unknown``."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")




def _load_data(recipe: Recipe) -> tuple[list[Any] | None, list[str] | None]:
    """A folder recipe's images and names; ``(None, None)`` for LFW, which each phase loads itself
    (phase two with the transforms of its recogniser)."""
    from .data import load_images_folder

    if recipe.data["source"] == "folder":
        images, names = load_images_folder(recipe.path.parent / recipe.data["folder"])
        return images, names
    return None, None


def run_recipe(
    recipe: Recipe,
    out_dir: PathLike,
    *,
    preset: str = "cpu",
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    root: PathLike | None = None,
    phase: str | None = None,
    time_limit_s: float | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or continue, ``resume``) a recipe's training into ``out_dir``; returns the summary of
    the last phase run (phase one's while it is unfinished or when the recipe has no joint phase).
    ``time_limit_s`` replaces the preset's training-time limit of each phase run (e.g. to fit a
    machine lent for less time than the preset assumes).

    Phase one trains in ``out_dir/rd``; once it has finished, phase two starts from its
    ``model.pt`` in ``out_dir/joint`` (continuing a checkpoint there, which must have started
    from the same ``model.pt``). ``phase`` ``"rd"`` stops after phase one; ``"joint"`` runs
    only phase two, of a run whose phase one has finished (e.g. one phase per lent GPU), as
    does a resume once phase two has begun: phase one is then not trained further. A resumed
    run must be of the same model and preset, with the same settings except those the loop
    lets change (``steps``, ``checkpoint_every``, ``log_every``, ``val_every``); each chunk's
    commit and recipe hash go into ``chunks.jsonl``. ``stop_after`` ends this chunk after a
    checkpoint once the run has done that many steps: of the whole run (phase one's, then
    phase two's), or of phase two alone with ``phase="joint"``. A ``stop_after`` that would
    train nothing is a TrainingError.
    """
    from .jointrd import train_joint_rd
    from .rd import train_rd

    out = Path(out_dir)
    cfg, options = recipe.config(preset)
    if phase not in (None, *PHASES):
        raise TrainingError(f"unknown phase {phase!r}: rd or joint")
    if phase == "joint" and not (resume and recipe.joint_enabled):
        raise TrainingError(f"only the joint phase: {recipe.path} has no joint phase" if not recipe.joint_enabled
                            else "only the joint phase: that continues a run whose phase one has finished (add --resume)")
    if stop_after is not None and stop_after < 1:
        raise TrainingError(f"stop after {stop_after} steps: that trains nothing (give a number of steps >= 1)")
    run_file = out / "run.json"
    if resume:
        if not run_file.exists():
            raise TrainingError(f"cannot resume: {out} holds no recipe run (no run.json)")
        started = json.loads(run_file.read_text())
        if started["name"] != recipe.name or started["preset"] != preset:
            raise TrainingError(f"cannot resume {out}: it is a run of {started['name']} (preset {started['preset']}), "
                                f"not {recipe.name} (preset {preset})")  # the loop checks the settings themselves
    else:
        if (out / "rd" / "checkpoint.pt").exists():
            raise TrainingError(f"{out} already holds a run: add --resume to continue it, or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "recipe.toml", recipe.path.read_bytes())
        atomic_write(run_file, json.dumps({"recipe": str(recipe.path), "recipe_sha256": recipe.sha256, "preset": preset,
                                           "name": recipe.name}, indent=2))
    images, names = _load_data(recipe)
    with open(out / "chunks.jsonl", "a") as f:
        f.write(json.dumps({"resume": resume, "commit": git_commit(), "recipe_sha256": recipe.sha256, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "stop_after": stop_after}) + "\n")
    joint_begun = resume and recipe.joint_enabled and (out / "joint" / "checkpoint.pt").exists()
    if phase == "joint" or (joint_begun and phase is None):  # phase two goes on from the model.pt it started from
        try:
            summary = finished_phase(recipe, out, "rd", preset)
        except TrainingError as e:
            if phase == "joint":
                raise
            raise TrainingError(f"{e} (the joint phase of {out} has begun from phase one's final weights, "
                                "so phase one trains no further in this run)") from e
    else:
        summary = train_rd(cfg, out / "rd", images=images, names=names, root=root, resume=resume, stop_after=stop_after,
                           device=device or options["device"], threads=options["threads"],
                           time_limit_s=time_limit_s or options["time_limit_s"], verbose=verbose)
    left = stop_after if phase == "joint" or stop_after is None else stop_after - summary["steps_done"]
    if phase != "rd" and left is not None and (left < 0 or (left == 0 and joint_begun)):
        raise TrainingError(f"cannot stop after step {stop_after} of the whole run: phase one alone has "
                            f"{summary['steps_done']} steps, so nothing would train (with --phase joint, "
                            "--stop-after counts the joint phase's steps)")
    if phase == "rd" or not recipe.joint_enabled or not summary.get("finished") or left == 0:
        return summary
    jcfg, joptions = recipe.joint_config(preset)
    return train_joint_rd(jcfg, out / "joint", out / "rd" / "model.pt", images=images, names=names, root=root,
                          resume=joint_begun, stop_after=left,
                          device=device or joptions["device"], threads=joptions["threads"],
                          time_limit_s=time_limit_s or joptions["time_limit_s"], verbose=verbose)


def finished_phase(recipe: Recipe, out_dir: PathLike, folder: str, preset: str) -> dict[str, Any]:
    """The summary of a finished phase of a run (``folder``: ``rd`` or ``joint``), checked
    against the recipe's settings; a TrainingError when it is missing, unfinished or other."""
    phase_dir = Path(out_dir) / folder
    try:
        summary = json.loads((phase_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{out_dir} holds no finished {folder} phase of a recipe run: {e}") from e
    if not summary.get("finished"):
        raise TrainingError(f"the {folder} phase of {out_dir} has not finished "
                            f"({summary.get('steps_done')}/{summary.get('steps')} steps): resume it first")
    want = (recipe.joint_config(preset) if folder == "joint" else recipe.config(preset))[0].to_dict()
    free = {k for k in RDConfig.RESUMABLE_CHANGES if k != "steps" or "time_limit_s" in summary}  # how often, or cut by time
    diff = [k for k in want if k not in free and summary["config"].get(k) != want[k]]
    if diff:
        raise TrainingError(f"run {out_dir} was trained with settings other than {recipe.path}'s: "
                            + ", ".join(f"{k} ({summary['config'].get(k)!r} != {want[k]!r})" for k in diff))
    return summary


def phase_record(summary: dict[str, Any], phase_dir: PathLike) -> dict[str, Any]:
    """How one phase ran, for the manifest: config, steps, time, hardware, held-out figures, curve."""
    return {
        "phase": summary["phase"], "config": summary["config"], "steps": summary["steps_done"],
        "train_time_s": round(summary["train_time_s"], 1), "hardware": summary["hardware"], "device": summary["device"],
        "train_images": summary["train_images"], "held_out_images": summary["val_images"],
        **({"init_sha256": summary["init_sha256"]} if "init_sha256" in summary else {}),
        "metrics": {k: round(v, 4) for k, v in summary.items() if k.startswith("val_") and isinstance(v, float)},
        "curve": training_curve(phase_dir),
    }


def install_recipe_run(
    recipe: Recipe, out_dir: PathLike, *, folder: PathLike | None = None, phase: str | None = None
) -> dict[str, Any]:
    """Put a finished recipe run's weights (phase two's when the recipe has a joint phase, else,
    or with ``phase="rd"``, phase one's) in the weights store, float32 (so that the integer networks and thus the
    bitstreams are the run's own), with its manifest entry: the recipe, the commits that
    trained it, and for each phase (``phases``) its config, hardware, held-out figures and
    training curve; ``metrics``, ``curve``, ``steps``, ``hardware`` are the installed phase's,
    ``train_time_s`` is the total."""
    import torch

    from ..models.hyperprior import FaceHyperprior, HyperpriorArch
    from ..zoo import install_hyperprior

    out = Path(out_dir)
    try:
        started = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{out} is not a recipe run folder: {e}") from e
    names = [name for name in PHASES if name == "rd" or (recipe.joint_enabled and phase != "rd")]
    phases = [phase_record(finished_phase(recipe, out, name, started["preset"]), out / name) for name in names]
    blob = torch.load(out / names[-1] / "model.pt", map_location="cpu", weights_only=True)
    model = FaceHyperprior(HyperpriorArch.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    chunks = [json.loads(line) for line in (out / "chunks.jsonl").read_text().splitlines() if line.strip()]
    last = phases[-1]
    info = {
        "kind": recipe.kind,
        "recipe": {"file": recipe.path.name, "sha256": recipe.sha256, "preset": started["preset"],
                   "sha256_per_chunk": [c.get("recipe_sha256") for c in chunks]},
        "commit": sorted({c["commit"] for c in chunks}),
        "chunks": len(chunks),
        "hardware": last["hardware"],
        "device": last["device"],
        "train_time_s": round(sum(p["train_time_s"] for p in phases), 1),
        "steps": last["steps"],
        "data": {"source": recipe.data["source"], "train_images": last["train_images"],
                 "held_out_images": last["held_out_images"]},
        "metrics": last["metrics"],
        "curve": last["curve"],
        "phases": phases,
    }
    return install_hyperprior(model, recipe.name, folder=folder, info=info)
