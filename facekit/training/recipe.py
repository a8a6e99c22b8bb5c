"""Recipes: one small TOML file per shipped model says how to train it again.

A recipe (``recipes/<name>.toml`` at the repository root) names the model, the data, the
training settings (steps, batch, crop, learning-rate schedule, the lambda range, seed) and
two presets: ``cpu`` (a budget that fits a 2-core machine in a few hours) and ``gpu`` (at
most 15 minutes on one H100). :func:`run_recipe` runs it through the one training loop
(:func:`facekit.training.rd.train_rd`), seeded and resumable in chunks;
:func:`install_recipe_run` puts the finished weights in the weights store
(:mod:`facekit.zoo`) with a manifest entry that says how they were made (recipe, commit,
hardware, held-out figures and the training curve). On the command line::

    facekit train --recipe recipes/hyperprior.toml --preset cpu --out runs/hp
    facekit train --recipe recipes/hyperprior.toml --preset cpu --out runs/hp --resume --install

A run folder holds ``recipe.toml`` (the recipe it was started with), ``chunks.jsonl`` (one
line per start or resume: step, commit, time) and ``rd/`` (the rate-distortion phase:
checkpoint, ``history.csv`` with the held-out PSNR and bpp against steps, ``model.pt``).

Recipes are read with :mod:`tomllib` (Python 3.11+) or ``tomli`` where installed; on
Python 3.10 without ``tomli``, :func:`parse_toml_subset` reads the part of TOML that
recipes use (tables, and keys set to strings, numbers, booleans or one-line arrays of them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TrainingError
from ..fileio import atomic_write
from .rd import RDConfig

PathLike = str | os.PathLike[str]

#: the tables a recipe may have, and the keys of each (``train`` and the presets: RDConfig's fields)
TABLES = ("model", "data", "train", "preset", "joint")
MODEL_KEYS = {"name", "kind", "arch"}
DATA_KEYS = {"source", "folder", "held_out"}
#: keys of a preset beyond RDConfig's fields: where and how long it runs, and what it costs
RUN_KEYS = {"device", "threads", "time_limit_s", "budget"}
PRESETS = ("cpu", "gpu")
#: RDConfig fields a recipe may not set (they are the recipe's own, or fixed)
NOT_SETTABLE = {"rate", "arch", "init", "val_images"}


class RecipeError(TrainingError):
    """A recipe that cannot be read or does not describe a run; the message names the file."""


# --------------------------------------------------------------------------- reading TOML

_KEY = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.+)$")
_TABLE = re.compile(r"^\[([A-Za-z0-9_.-]+)\]$")
_NUMBER = re.compile(r"^[+-]?(\d[\d_]*)(\.\d[\d_]*)?([eE][+-]?\d+)?$")


def _strip_comment(line: str) -> str:
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return json.loads(text)
    if text in ("true", "false"):
        return text == "true"
    m = _NUMBER.match(text)
    if m:
        plain = text.replace("_", "")
        return float(plain) if m.group(2) or m.group(3) else int(plain)
    raise ValueError(f"unsupported value {text!r}")


def parse_toml_subset(text: str) -> dict[str, Any]:
    """The part of TOML recipes use: ``[a.b]`` tables and ``key = value`` (strings, numbers,
    booleans, one-line arrays of those). Anything else is a ValueError."""
    root: dict[str, Any] = {}
    table = root
    for n, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        try:
            m = _TABLE.match(line)
            if m:
                table = root
                for part in m.group(1).split("."):
                    table = table.setdefault(part, {})
                    if not isinstance(table, dict):
                        raise ValueError(f"{m.group(1)} is a value, not a table")
                continue
            m = _KEY.match(line)
            if not m:
                raise ValueError(f"cannot read {line!r}")
            key, value = m.group(1), m.group(2).strip()
            if key in table:
                raise ValueError(f"{key} is set twice")
            if value.startswith("[") and value.endswith("]"):
                inner = value[1:-1].strip().rstrip(",")
                table[key] = [_scalar(v) for v in inner.split(",")] if inner else []
            else:
                table[key] = _scalar(value)
        except ValueError as e:
            raise ValueError(f"line {n}: {e}") from e
    return root


def parse_toml(text: str) -> dict[str, Any]:
    """TOML text as a dict: tomllib, else tomli, else :func:`parse_toml_subset`. ValueError when invalid."""
    try:
        import tomllib as toml  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as toml  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return parse_toml_subset(text)
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as e:
        raise ValueError(str(e)) from e


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe. :meth:`config` gives the training config of a preset."""

    path: Path
    name: str
    kind: str
    arch: dict[str, Any]
    data: dict[str, Any]
    train: dict[str, Any]
    presets: dict[str, dict[str, Any]]
    joint: dict[str, Any]
    sha256: str

    def config(self, preset: str) -> tuple[RDConfig, dict[str, Any]]:
        """``(RDConfig, run options)`` of a preset: ``[train]`` overridden by ``[preset.<name>]``;
        the options are ``device``, ``threads`` and ``time_limit_s`` (each may be None)."""
        if preset not in self.presets:
            raise RecipeError(f"recipe {self.path}: no preset {preset!r} (it has {', '.join(self.presets) or 'none'})")
        settings = {**self.train, **{k: v for k, v in self.presets[preset].items() if k not in RUN_KEYS}}
        cfg = RDConfig(**settings, arch=dict(self.arch), val_images=int(self.data.get("held_out", RDConfig.val_images)))
        options = {k: self.presets[preset].get(k) for k in ("device", "threads", "time_limit_s")}
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


def _check_types(path: Path, where: str, table: dict[str, Any]) -> None:
    """Each RDConfig field a table sets has the type of the field's default (an int may stand for a float)."""
    defaults = RDConfig().to_dict()
    for k, v in table.items():
        if k not in defaults:
            continue
        want = type(defaults[k])
        ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
        ok = ok or (want is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok:
            raise RecipeError(f"recipe {path}: [{where}] {k} = {v!r} should be a {want.__name__}")


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
    presets = doc["preset"]
    if not isinstance(presets, dict) or not presets or set(presets) - set(PRESETS):
        raise RecipeError(f"recipe {p}: [preset.*] should be some of {', '.join(PRESETS)}, got {', '.join(presets) or 'none'}")
    for name, table in presets.items():
        _check_keys(p, f"preset.{name}", table, fields | RUN_KEYS, {"steps"})
        _check_types(p, f"preset.{name}", table)
        for k in RUN_KEYS & set(table):
            v = table[k]
            text = k in ("device", "budget")
            ok = isinstance(v, str) if text else isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            if not ok:
                raise RecipeError(f"recipe {p}: [preset.{name}] {k} = {v!r} should be a {'string' if text else 'positive number'}")
    joint = doc.get("joint", {})
    if not isinstance(joint, dict):
        raise RecipeError(f"recipe {p}: [joint] must be a table")
    recipe = Recipe(p, model["name"], model["kind"], dict(arch), dict(data), dict(train),
                    {k: dict(v) for k, v in presets.items()}, dict(joint), hashlib.sha256(raw).hexdigest())
    for name in presets:
        cfg, _ = recipe.config(name)
        if not 0 < cfg.lambda_min < cfg.lambda_max:
            raise RecipeError(f"recipe {p}: lambda_min and lambda_max should satisfy 0 < min < max "
                              f"(preset {name}: {cfg.lambda_min}, {cfg.lambda_max})")
        if cfg.steps < 1 or cfg.batch_size < 1 or cfg.crop < 16 or cfg.checkpoint_every < 1:
            raise RecipeError(f"recipe {p}: preset {name} needs steps, batch_size, checkpoint_every >= 1 and crop >= 16")
    if joint.get("enabled"):
        raise RecipeError(f"recipe {p}: [joint] training (the identity term) is not implemented yet: set enabled = false")
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


def run_recipe(
    recipe: Recipe,
    out_dir: PathLike,
    *,
    preset: str = "cpu",
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    root: PathLike | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run (or continue, ``resume``) a recipe's training into ``out_dir``; returns the phase's summary.

    A resumed run must be of the same model and preset, with the same settings except
    those the loop lets change (``steps``, ``checkpoint_every``, ``log_every``,
    ``val_every``); each chunk's commit and recipe hash go into ``chunks.jsonl``.
    ``stop_after`` ends this chunk after that many steps in total (after a checkpoint).
    """
    from .data import load_images_folder, load_split
    from .rd import train_rd

    out = Path(out_dir)
    cfg, options = recipe.config(preset)
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
    if recipe.data["source"] == "folder":
        images, names = load_images_folder(recipe.path.parent / recipe.data["folder"])
    else:
        images, names = load_split(root)
    with open(out / "chunks.jsonl", "a") as f:
        f.write(json.dumps({"resume": resume, "commit": git_commit(), "recipe_sha256": recipe.sha256, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "stop_after": stop_after}) + "\n")
    return train_rd(cfg, out / "rd", images=images, names=names, resume=resume, stop_after=stop_after,
                    device=device or options["device"], threads=options["threads"],
                    time_limit_s=options["time_limit_s"], verbose=verbose)


def training_curve(run_dir: PathLike) -> list[dict[str, Any]]:
    """The held-out rows of a run's history: step, training time and ``val_*`` figures."""
    rows = []
    path = Path(run_dir) / "history.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        if any(k.startswith("val_") for k in r):
            rows.append({"step": r["step"], "elapsed_s": round(r["elapsed_s"], 1),
                         **{k: round(v, 4) for k, v in r.items() if k.startswith("val_")}})
    return rows


def install_recipe_run(recipe: Recipe, out_dir: PathLike, *, folder: PathLike | None = None) -> dict[str, Any]:
    """Put a finished recipe run's weights in the weights store (float32, so that the integer
    networks and thus the bitstreams are the run's own) with its manifest entry: the recipe,
    the commits that trained it, hardware, held-out figures and the training curve."""
    import torch

    from ..models.hyperprior import FaceHyperprior, HyperpriorArch
    from ..zoo import install_hyperprior

    out = Path(out_dir)
    try:
        summary = json.loads((out / "rd" / "summary.json").read_text())
        started = json.loads((out / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TrainingError(f"{out} is not a recipe run folder: {e}") from e
    if not summary.get("finished"):
        raise TrainingError(f"run {out} has not finished ({summary.get('steps_done')}/{summary.get('steps')} steps): resume it first")
    want = recipe.config(started["preset"])[0].to_dict()
    free = {k for k in RDConfig.RESUMABLE_CHANGES if k != "steps" or "time_limit_s" in summary}  # how often, or cut by time
    diff = [k for k in want if k not in free and summary["config"].get(k) != want[k]]
    if diff:
        raise TrainingError(f"run {out} was trained with settings other than {recipe.path}'s: "
                            + ", ".join(f"{k} ({summary['config'].get(k)!r} != {want[k]!r})" for k in diff))
    blob = torch.load(out / "rd" / "model.pt", map_location="cpu", weights_only=True)
    model = FaceHyperprior(HyperpriorArch.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    chunks = [json.loads(line) for line in (out / "chunks.jsonl").read_text().splitlines() if line.strip()]
    figures = {k: round(v, 4) for k, v in summary.items() if k.startswith("val_") and isinstance(v, float)}
    info = {
        "kind": recipe.kind,
        "recipe": {"file": recipe.path.name, "sha256": recipe.sha256, "preset": started["preset"],
                   "config": summary["config"], "sha256_per_chunk": [c.get("recipe_sha256") for c in chunks]},
        "commit": sorted({c["commit"] for c in chunks}),
        "chunks": len(chunks),
        "hardware": summary["hardware"],
        "device": summary["device"],
        "train_time_s": round(summary["train_time_s"], 1),
        "steps": summary["steps_done"],
        "data": {"source": recipe.data["source"], "train_images": summary["train_images"],
                 "held_out_images": summary["val_images"]},
        "metrics": figures,
        "curve": training_curve(out / "rd"),
    }
    return install_hyperprior(model, recipe.name, folder=folder, info=info)
