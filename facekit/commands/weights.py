"""``facekit weights``: the weights store (:mod:`facekit.zoo`) on the command line.

``list`` the models, ``verify`` every file against its sha256, ``install`` finished
training runs (either phase), ``export`` a run's model as a shipped-format file, and
``fit-prior`` the context prior that range-codes a model's codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import WeightsError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, verify and install the learned codec's weights",
                       description="The weights store: facekit/weights/ (manifest.json, one .pt per model and prior).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--folder", type=Path, default=None, help="weights folder (default: facekit/weights)")
    ops = p.add_subparsers(dest="weights_command", metavar="OPERATION", required=True)

    o = ops.add_parser("list", parents=[common], help="the models: name, rate point, bytes, sha256, prior, metrics")
    o.add_argument("--json", action="store_true", help="one JSON object per model")
    o.set_defaults(func=cmd_list)

    o = ops.add_parser("verify", parents=[common], help="check every weights and prior file against its sha256")
    o.set_defaults(func=cmd_verify)

    o = ops.add_parser("install", parents=[common], help="ship finished training runs (facekit train / facekit joint run folders)")
    o.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folder (model.pt, summary.json)")
    o.add_argument("--variant", default=None,
                   help="distortion runs: the variant to ship as (default mse); joint runs: only confirms the variant "
                        "their config makes (joint, jointrate or jointface)")
    o.add_argument("--root", default=None, help="LFW, to measure a distortion run's held-out images (default: $FACEKIT_LFW)")
    o.set_defaults(func=cmd_install)

    o = ops.add_parser("export", parents=[common], help="write a run's model.pt as a shipped-format weights file (float16)")
    o.add_argument("model", type=Path, help="a run's model.pt")
    o.add_argument("dest", type=Path, help="the weights file to write")
    o.add_argument("--float32", action="store_true", help="keep float32 weights")
    o.set_defaults(func=cmd_export)

    o = ops.add_parser("fit-prior", parents=[common], help="fit and install the context prior of installed weights")
    o.add_argument("rates", nargs="+", metavar="RATE", help="rate points (q1..q5)")
    o.add_argument("--variant", default="mse", help="the weights' variant (mse, joint, jointrate, jointface)")
    o.add_argument("--root", default=None, help="LFW (default: $FACEKIT_LFW)")
    o.add_argument("--layout", type=int, default=3, choices=[1, 2, 3, 4],
                   help="3 chooses the neighbours on the training codes (facekit-prior/3, the default); "
                        "4 trains small integer networks over a wide causal window (facekit-prior/4); "
                        "2 the fixed up/left/diagonal/previous-channel context (facekit-prior/2); 1 the row-by-row one")
    o.set_defaults(func=cmd_fit_prior)


def cmd_list(args: argparse.Namespace) -> int:
    from ..zoo import list_models

    rows = list_models(args.folder)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(f"{'name':<16} {'rate':<4} {'bytes':>9} {'sha256':<12} {'prior':<24} metrics")
    for r in rows:
        prior = r["prior"]
        prior_s = f"{prior['format']} {prior['bytes']} B" if prior else "-"
        metrics = r["metrics"].get("held_out_split", r["metrics"])
        metrics_s = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "images" and isinstance(v, (int, float)))
        print(f"{r['name']:<16} {r['rate_point'] or '':<4} {r['bytes'] or 0:>9} {r['sha256'][:12]:<12} "
              f"{prior_s:<24} {metrics_s or '-'}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..zoo import read_manifest, verify, weights_dir

    problems = verify(args.folder)
    models = read_manifest(args.folder)["models"]
    files = len(models) + sum(1 for e in models.values() if e.get("prior"))
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        raise WeightsError(f"{len(problems)} of {files} files in {args.folder or weights_dir()} do not match the manifest")
    print(f"all {files} files of {len(models)} models match their sha256")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from ..zoo import install

    for run in args.runs:
        e = install(run, variant=args.variant, folder=args.folder, root=args.root)
        print(json.dumps({"file": e["file"], "variant": e["variant"], "bytes": e["bytes"], "sha256": e["sha256"],
                          **e.get("metrics", {})}))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..zoo import export_weights

    info = export_weights(args.model, args.dest, half=not args.float32)
    print(json.dumps({"file": str(args.dest), **info}))
    return 0


def cmd_fit_prior(args: argparse.Namespace) -> int:
    from ..training.data import load_split
    from ..training.prior import fit_prior

    images, names = load_split(args.root)
    for rate in args.rates:
        meta = fit_prior(args.variant, rate, folder=args.folder, images=images, names=names, layout=args.layout)
        print(json.dumps({"rate": rate, **{k: v for k, v in meta.items() if k != "selection"}}))
    return 0
