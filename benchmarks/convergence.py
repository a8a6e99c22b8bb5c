"""How far from convergence is a shipped recipe model? (issue 28: "how far from convergence the shipped weights are")

Four figures, each printed as a table (``--json`` writes them too):

* for each training phase in the weights' manifest entry, the Bjøntegaard delta PSNR of each held-out
  step's rate-PSNR curve against the phase's last step, over 0.1-0.5 bpp
  (:func:`facekit.training.curve.bd_psnr_by_step`). A line flat at its end says that more steps at
  the schedule's final learning rate would not pay, not that a longer schedule would not (the third
  figure measures that). A single rate's PSNR can still rise, but only by spending more bits.
* ``--run DIR [DIR ...]`` (phase folders of other runs: phase one trained further from the shipped
  phase one's final weights, or the recipe with one setting changed; each is titled, and recorded, with what
  its training config changes, :func:`facekit.training.curve.config_changes`): each of their held-out steps against
  the end of the shipped phase named by ``--phase``, and against that phase after as much training
  (:func:`facekit.training.curve.bd_psnr_at_equal_training`: the same step, or the same pixels seen when
  the run's batch or crop differs). The second says whether a change helps at equal compute.
* runs among them that are the recipe's phase at another length (equal configs but for ``steps``,
  each finished): the Bjøntegaard PSNR of each run's end against the shipped end, the gain per
  doubling of the steps fitted through them and the shipped end (:func:`facekit.training.curve.gain_per_doubling`),
  and what each step up from the next shorter length gained per doubling (:func:`~facekit.training.curve.doubling_gains`).
* ``--train-faces N``: the shipped weights code N training faces (drawn by a seed) and the recipe's held-out
  faces at the same rates. Equal figures mean the model is not over-fitted to its 1,517 training faces,
  so more data would not be the first thing to try.

``--json FILE`` keeps what FILE already records for the same weights (sha256) and this call does not
measure again: the runs of other folders (a run's folder goes with its machine; its record is what
lasts) and the training faces' figures. A run given again replaces its record, and the schedule
lengths are worked out again over every run recorded.

    OMP_NUM_THREADS=1 python benchmarks/convergence.py --store hyperprior --train-faces 64
    OMP_NUM_THREADS=1 python benchmarks/convergence.py --store hyperprior --run runs/hp-more/rd runs/hp-crop240/rd
    OMP_NUM_THREADS=1 python benchmarks/convergence.py --store hyperprior --run runs/hp-10k/rd runs/hp-20k/rd
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekit.cli import positive_int  # noqa: E402
from facekit.errors import TrainingError, WeightsError  # noqa: E402
from facekit.fileio import write_json  # noqa: E402
from facekit.training.curve import (  # noqa: E402
    bd_psnr,
    bd_psnr_at_equal_training,
    bd_psnr_by_step,
    config_changes,
    curve_points,
    differs_only_in_steps,
    doubling_gains,
    gain_per_doubling,
    training_curve,
    training_pixels_per_step,
)

#: the bpp range of the issue's Bjøntegaard comparisons
LO, HI = 0.1, 0.5


def fmt(row: dict[str, Any]) -> str:
    bpps, psnrs, rates = curve_points(row)
    return "  ".join(f"t={t}: {q:.2f} @ {b:.3f}" for t, q, b in zip(rates, psnrs, bpps, strict=True))


def db(value: float | None) -> str:
    return "   —  " if value is None else f"{value:+6.2f}"


def print_bd(title: str, rows: list[dict[str, Any]], curve: list[dict[str, Any]],
             equal: list[dict[str, Any]] | None = None) -> None:
    print(title)
    at = {r["step"]: r for r in equal or []}
    for r, row in zip(rows, curve, strict=True):
        e = at.get(r["step"])
        same = "" if equal is None else (f"{db(e['bd_psnr_db'])} dB (step {e['reference_step']:>6})" if e else " " * 24)
        print(f"  step {r['step']:>6}  {db(r['bd_psnr_db'])} dB  {same}  {fmt(row)}")


def compare_run(folder: Path, phase: str, shipped: dict[str, Any]) -> dict[str, Any]:
    """One run's held-out curve against the shipped phase's end and after as much training."""
    curve = training_curve(folder)
    if not curve:
        raise TrainingError(f"{folder} holds no held-out curve (history.jsonl with val_* rows)")
    try:
        config = json.loads((folder / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise TrainingError(f"{folder} holds no training config (config.json): {e}") from e
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    started_from = config.get("init") or summary.get("init") or summary.get("init_sha256")
    rows = bd_psnr_by_step(curve, LO, HI, end=shipped["curve"][-1])
    changes = config_changes(config, shipped["config"])
    changed = ", ".join(f"{k} {'default' if a is None else a} -> {'default' if b is None else b}" for k, (a, b) in changes.items())
    title = f"{folder}{f' ({changed})' if changed else ''}: each step against the shipped {phase} end ({fmt(shipped['curve'][-1])})"
    if started_from:  # its steps count from trained weights: no step of the shipped run matches them
        print_bd(f"{title} (it started from trained weights, {str(started_from)[:12]})", rows, curve)
        return {"folder": str(folder), "against": phase, "changes": changes, "started_from": started_from, "rows": rows}
    scale = training_pixels_per_step(config) / training_pixels_per_step(shipped["config"])
    equal = bd_psnr_at_equal_training(curve, shipped["curve"], LO, HI, scale=scale)
    print_bd(f"{title}, then against it after as much training ({scale:g} times its pixels a step)", rows, curve, equal)
    out = {"folder": str(folder), "against": phase, "changes": changes,
           "pixels_per_step_ratio": scale, "rows": rows, "equal_training": equal}
    if differs_only_in_steps(config, shipped["config"]) and config["steps"] != shipped["config"]["steps"]:
        out["schedule_steps"] = config["steps"]  # the recipe at another length
    return out


def schedule_lengths(runs: list[dict[str, Any]], shipped: dict[str, Any]) -> dict[str, Any] | None:
    """The ends of the runs that are the shipped phase's schedule at another length, the gain per doubling
    of the steps fitted through them and the shipped end, and the gain of each step up from the next
    shorter length (where the gains stop, which one fitted line hides); None without such a finished run."""
    ends = sorted((r["schedule_steps"], r["rows"][-1]["bd_psnr_db"], r["folder"]) for r in runs
                  if "schedule_steps" in r and r["rows"][-1]["step"] == r["schedule_steps"]
                  and r["rows"][-1]["bd_psnr_db"] is not None)
    if not ends:
        return None
    steps = shipped["config"]["steps"]
    figures = [(s, d) for s, d, _ in ends] + [(steps, 0.0)]
    gain, gains = gain_per_doubling(figures), doubling_gains(figures)
    print(f"the shipped {shipped['phase']} schedule at other lengths: each end against the shipped end ({steps:,} steps), "
          "and what the step up from the next shorter length gained per doubling")
    per = {g["to"]: g["per_doubling"] for g in gains}
    for s, d, folder in sorted([*ends, (steps, 0.0, "(shipped)")]):
        print(f"  {s:>7,} steps  {db(d)} dB  {'' if s not in per else f'{db(per[s])} dB a doubling'}  {folder}")
    print(f"  gain per doubling of the steps (least squares, one straight line through them all): {db(gain)} dB")
    return {"ends": [{"steps": s, "bd_psnr_db": d, "folder": f} for s, d, f in ends],
            "shipped_steps": steps, "gain_per_doubling_db": gain, "doubling_gains_db": gains}


def earlier_record(path: Path, sha256: str) -> dict[str, Any]:
    """What ``path`` (a ``--json`` file written earlier) records of the weights ``sha256``; empty when it
    does not exist or records other weights. A file that cannot be read is a :class:`TrainingError`."""
    if not path.exists():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TrainingError(f"{path} cannot be read as an earlier record ({e}): move it, or write elsewhere") from e
    return earlier if isinstance(earlier, dict) and earlier.get("sha256") == sha256 else {}


def merged_runs(earlier: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The earlier run records, each replaced in place by a new one of the same folder, then the other new ones."""
    by_folder = {r["folder"]: r for r in new}
    return [by_folder.pop(r["folder"], r) for r in earlier] + list(by_folder.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="hyperprior", help="the weights' name in the store (a recipe's [model] name)")
    p.add_argument("--weights-folder", default=None, help="the weights folder (default: facekit/weights)")
    p.add_argument("--run", type=Path, nargs="+", default=[],
                   help="phase folders of other runs (history.jsonl, config.json) to compare with the shipped phase")
    p.add_argument("--phase", default="rate-distortion", help="the shipped phase --run is compared with")
    p.add_argument("--train-faces", type=positive_int, help="code this many training faces beside the held-out ones")
    p.add_argument("--seed", type=int, default=0, help="draws the training faces")
    p.add_argument("--json", type=Path, help="also write every table here")
    args = p.parse_args(argv)

    from facekit.zoo import load_hyperprior

    model, entry = load_hyperprior(args.store, folder=args.weights_folder)
    phases = {ph["phase"]: ph["curve"] for ph in entry.get("phases") or [] if ph.get("curve")}
    if not phases:
        p.error(f"the manifest entry of {args.store!r} keeps no training curve (weights installed by a recipe do)")
    print(f"{args.store}: sha256 {entry['sha256'][:12]}; Bjøntegaard PSNR over {LO}-{HI} bpp, held-out faces")
    out: dict[str, Any] = {"store": args.store, "sha256": entry["sha256"], "bpp_range": [LO, HI], "phases": {}}
    for name, curve in phases.items():
        rows = bd_psnr_by_step(curve, LO, HI)
        print_bd(f"{name}: each step against its last", rows, curve)
        out["phases"][name] = rows
    earlier = earlier_record(args.json, entry["sha256"]) if args.json else {}
    if args.run or earlier.get("runs"):
        if args.phase not in phases:
            p.error(f"no shipped phase {args.phase!r} (there are {', '.join(phases)})")
        shipped = next(ph for ph in entry["phases"] if ph["phase"] == args.phase)
        new = [compare_run(folder, args.phase, shipped) for folder in args.run]
        out["runs"] = merged_runs(earlier.get("runs", []), new)
        if kept := [r["folder"] for r in out["runs"] if r not in new]:
            print(f"{args.json} keeps its records of {', '.join(kept)}")
        if lengths := schedule_lengths([r for r in out["runs"] if r["against"] == args.phase], shipped):
            out["schedule_lengths"] = lengths
    if args.train_faces:
        from facekit.training.data import training_sets
        from facekit.training.rd import evaluate_rd
        from facekit.training.recipe import load_recipe

        recipe = load_recipe(REPO / "recipes" / entry["recipe"]["file"])
        cfg, _ = recipe.config(entry["recipe"]["preset"])
        data, held, _ = training_sets(cfg.val_images)
        if args.train_faces > len(data):
            p.error(f"--train-faces {args.train_faces}: the training set has {len(data)} faces")
        pick = np.random.default_rng(args.seed).choice(len(data), args.train_faces, replace=False)
        rates = [float(t) for t in curve_points(phases[next(reversed(phases))][-1])[2]]
        figures = {"held-out": evaluate_rd(model, held, rates),
                   "training": evaluate_rd(model, [data.images[i].numpy() for i in pick], rates)}
        print(f"the shipped weights on {len(held)} held-out and {args.train_faces} training faces (seed {args.seed}):")
        for who, row in figures.items():
            print(f"  {who:9s} {fmt(row)}")
        d = bd_psnr(figures["training"], figures["held-out"], LO, HI)
        print(f"  training against held-out: {'—' if d is None else f'{d:+.2f}'} dB Bjøntegaard PSNR")
        out["faces"] = {**figures, "train_faces": args.train_faces, "seed": args.seed, "bd_psnr_db": d}
    if args.json:
        if "faces" in earlier:  # the training faces' figures of an earlier call, when not measured again
            out.setdefault("faces", earlier["faces"])
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (TrainingError, WeightsError) as e:
        sys.exit(f"convergence.py: {e}")
