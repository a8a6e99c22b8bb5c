"""Summarise joint-training run folders (``scripts/gpu_joint.sh``) into one small JSON.

    python benchmarks/gpu_runs_summary.py runs/gpu --out results/gpu_joint_runs.json

For each run folder (``summary.json``, ``history.jsonl``): its config, steps, device, time,
held-out metrics (16 images: PSNR of the whole image and of the face, PNG bpp, identity
distance) and the last logged training terms, and whether it is the run behind a shipped
weights file (its sha256 in the manifest). Prints one line a run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def summarise(run: Path, shipped: dict[str, str]) -> dict[str, Any]:
    s = json.loads((run / "summary.json").read_text())
    rows = [json.loads(r) for r in (run / "history.jsonl").read_text().splitlines() if r.strip()]
    cfg = s["config"]
    return {
        "run": run.name,
        "rate_point": s["rate_point"],
        "config": {k: cfg[k] for k in ("steps", "batch_size", "lr", "lr_drop_at", "lambda_mse", "lambda_id",
                                      "lambda_rate", "background_weight", "seed") if k in cfg},
        "device": s.get("hardware"),
        "train_time_s": s.get("train_time_s"),
        "held_out": {k: s[k] for k in ("val_psnr", "val_face_psnr", "val_png_bpp", "val_id_dist") if k in s},
        "last_logged": {k: v for k, v in (rows[-1] if rows else {}).items()
                        if k not in ("time_s", "elapsed_s", "images_per_s")},
        "shipped_as": shipped.get(run.name),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, help="folder of run folders")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from facekit.fileio import write_json
    from facekit.zoo import read_manifest

    models = read_manifest()["models"]
    shipped = {}
    for run in sorted(p for p in a.runs.iterdir() if (p / "summary.json").exists()):
        cmd = json.loads((run / "summary.json").read_text())["config"]
        for name, e in models.items():
            t = e.get("training") or {}
            if t.get("steps") == cmd["steps"] and e.get("rate_point") == cmd["rate"] and \
                    f"--lr {cmd['lr']} " in t.get("command", "") and name.startswith(("jointface", "jointrate")) and \
                    t.get("device") == "cuda":
                shipped[run.name] = f"{name} ({e['sha256'][:12]})"
    out = [summarise(run, shipped) for run in sorted(p for p in a.runs.iterdir() if (p / "summary.json").exists())]
    write_json(a.out, {"about": __doc__.split("\n\n")[0], "runs": out})
    for r in out:
        h = r["held_out"]
        print(f"{r['run']:22s} {r['config']['steps']:6d} steps  PSNR {h.get('val_psnr', 0):.2f} dB (face "
              f"{h.get('val_face_psnr', 0):.2f})  {h.get('val_png_bpp', 0):.3f} bpp PNG  id {h.get('val_id_dist', 0):.3f}  "
              f"{r['shipped_as'] or 'not shipped'}")


if __name__ == "__main__":
    main()
