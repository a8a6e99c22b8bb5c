"""Does a recipe reproduce its shipped weights? Held-out PSNR and bpp within 0.2 dB and 2 % (issue 28).

The shipped weights' manifest entry keeps each phase's training curve: the held-out PSNR and
bpp (real coding of the recipe's held-out faces) at ``t`` = 0, 0.5 and 1 every
``val_every`` steps. This compares another run of the same recipe with that curve
(:func:`facekit.training.curve.compare_curves`), in one of two ways:

* ``--run DIR``: a finished run (``make weights`` writes ``runs/weights/<name>``; give it
  another ``WEIGHTS_FOLDER`` so that it does not replace the shipped weights it is compared
  with; a run that has not finished compares the steps it has): every held-out step of each
  phase, the last one being the shipped weights' own figures;
* ``--steps N``: phase one's first ``N`` steps trained afresh with the shipped preset into a
  temporary folder, compared at the held-out steps they reach: a check in minutes of what
  the whole run takes hours to show (training is seeded, so a rerun on this machine should
  repeat the shipped curve).

    OMP_NUM_THREADS=1 python benchmarks/recipe_reproduce.py --recipe recipes/hyperprior.toml --steps 1000
    make weights WEIGHTS_FOLDER=/tmp/rerun-weights
    OMP_NUM_THREADS=1 python benchmarks/recipe_reproduce.py --recipe recipes/hyperprior.toml --run runs/weights/hyperprior

It prints one row per step and ``t`` (``--json`` writes them too) and exits 1 when a row is off by
more than the tolerance.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekit.cli import positive_int  # noqa: E402
from facekit.errors import TrainingError  # noqa: E402
from facekit.fileio import write_json  # noqa: E402
from facekit.training.curve import (  # noqa: E402
    REPRODUCE_BPP_REL,
    REPRODUCE_PSNR_DB,
    compare_curves,
    training_curve,
)
from facekit.training.jointrd import JointRDConfig  # noqa: E402
from facekit.training.rd import RDConfig  # noqa: E402
from facekit.training.recipe import PHASES, load_recipe  # noqa: E402
from facekit.zoo import read_manifest  # noqa: E402

#: a run's phase folder (:data:`~facekit.training.recipe.PHASES`) by the ``phase`` its manifest record names
#: (the training configs' ``PHASE``)
FOLDER_OF_PHASE = {RDConfig.PHASE: "rd", JointRDConfig.PHASE: "joint"}
assert set(FOLDER_OF_PHASE.values()) == set(PHASES)


def shipped_curves(entry: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``{folder: curve}`` of a manifest entry's phases, each found by its ``phase`` name (not its position)."""
    return {FOLDER_OF_PHASE[ph["phase"]]: ph["curve"] for ph in entry["phases"] if ph.get("phase") in FOLDER_OF_PHASE}


def fresh_prefix(recipe_path: Path, preset: str, steps: int, out: Path) -> list[dict[str, Any]]:
    """Phase one's first ``steps`` steps of the recipe, trained into ``out``; their held-out curve."""
    subprocess.run([sys.executable, "-m", "facekit.cli", "train", "--recipe", str(recipe_path), "--preset", preset,
                    "--out", str(out), "--stop-after", str(steps), "--phase", "rd"], check=True, cwd=REPO)
    return training_curve(out / "rd")


def print_rows(phase: str, rows: list[dict[str, Any]]) -> None:
    print(f"{phase}: step, t, shipped PSNR dB @ bpp, rerun PSNR dB @ bpp, difference dB, bpp %")
    for r in rows:
        d_bpp = f"{100 * r['d_bpp_rel']:+.2f} %" if r["d_bpp_rel"] is not None else "— (shipped bpp 0)"
        print(f"  {r['step']:>6} t={r['t']:<4} {r['psnr']:7.3f} @ {r['bpp']:.4f}   {r['psnr_rerun']:7.3f} @ "
              f"{r['bpp_rerun']:.4f}   {r['d_psnr_db']:+.4f} {d_bpp}   {'ok' if r['ok'] else 'OFF'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=REPO / "recipes" / "hyperprior.toml")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--run", type=Path, help="a finished run folder of the recipe")
    how.add_argument("--steps", type=positive_int, help="train phase one's first STEPS steps afresh and compare them")
    p.add_argument("--weights-folder", default=None, help="the weights folder (default: facekit/weights)")
    p.add_argument("--json", type=Path, help="also write the rows of each phase and the verdict here")
    args = p.parse_args(argv)

    recipe = load_recipe(args.recipe)
    entry = read_manifest(args.weights_folder)["models"].get(recipe.name)
    if entry is None or "phases" not in entry:
        p.error(f"no shipped weights of recipe {recipe.name!r} to compare with: `make weights` installs them")
    shipped = shipped_curves(entry)
    print(f"{recipe.name}: shipped weights sha256 {entry['sha256'][:12]}, preset {entry['recipe']['preset']}, "
          f"commits {', '.join(c[:7] for c in entry['commit'])}")
    if args.steps is not None:
        val_every = recipe.config(entry["recipe"]["preset"])[0].val_every
        if args.steps < val_every:  # said before training, not after
            p.error(f"--steps {args.steps} must reach the first held-out step (val_every = {val_every})")
        with tempfile.TemporaryDirectory() as tmp:
            reruns = {"rd": fresh_prefix(args.recipe, entry["recipe"]["preset"], args.steps, Path(tmp) / "run")}
    else:
        reruns = {phase: curve for phase in shipped if (curve := training_curve(args.run / phase))}
        if not reruns:
            p.error(f"{args.run} holds no held-out curve of the recipe's phases ({', '.join(shipped)})")
    ok, table = True, {}
    for phase, rerun in reruns.items():
        try:
            table[phase] = rows = compare_curves(shipped[phase], rerun)
        except TrainingError as e:
            p.error(f"{phase}: {e}")
        print_rows(phase, rows)
        ok &= all(r["ok"] for r in rows)
    within = f"within {REPRODUCE_PSNR_DB} dB and {100 * REPRODUCE_BPP_REL:.0f} %"
    print(f"reproduced {within}" if ok else f"NOT reproduced {within}")
    if args.json:
        write_json(args.json, {
            "recipe": recipe.name, "shipped_sha256": entry["sha256"], "preset": entry["recipe"]["preset"],
            "rerun": str(args.run) if args.run else f"first {args.steps} steps", "psnr_db": REPRODUCE_PSNR_DB,
            "bpp_rel": REPRODUCE_BPP_REL, "reproduced": ok, "phases": table})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
