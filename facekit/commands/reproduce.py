"""``facekit reproduce --preset quick|full --out DIR``: run the notebooks, write a report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _param(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def register(sub: argparse._SubParsersAction) -> None:
    from ..reproduce import NOTEBOOKS, PRESETS

    p = sub.add_parser(
        "reproduce",
        help="run the notebooks in order (papermill): executed notebooks, figures, results, report.md",
        description="Run " + ", ".join(NOTEBOOKS) + " with the parameters of a preset.",
    )
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="quick: CPU, small settings; full: GPU settings (default quick)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--root", help="LFW folder or archive (default: $FACEKIT_LFW)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (e.g. 01 04)")
    p.add_argument("--notebooks", type=Path, help="folder of the notebooks (default: the checkout's)")
    p.add_argument("-p", "--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="override a parameter in every notebook that has it (JSON value), repeatable")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..reproduce import reproduce

    def done(name: str, r: dict) -> None:
        extra = "" if r["status"] == "ok" else f"  {r['error']}"
        print(f"{name:26s} {r['status']:7s} {r['seconds']:7.1f} s{extra}", flush=True)

    s = reproduce(
        args.out, args.preset, root=args.root, only=args.only, notebooks=args.notebooks,
        overrides=dict(args.param), log_output=args.log_output, on_done=done,
    )
    print(f"wrote {Path(s['out']) / 'report.md'} ({s['seconds']} s)")
    return 0 if s["ok"] else 1
