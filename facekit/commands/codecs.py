"""``facekit codecs``: which codecs are available, with their library versions."""

from __future__ import annotations

import argparse
import json

from ..codecs.registry import available_codecs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codecs", help="list the codecs, whether they are available, library versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_codecs)


def cmd_codecs(args: argparse.Namespace) -> int:
    info = available_codecs()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max((len(n) for n in info), default=0)
    for name, d in info.items():
        if d["available"]:
            lib = d.get("library", "")
            settings = ", ".join(str(s) for s in d.get("settings", []))
            print(f"{name:{width}s} available  {lib}")
            print(f"{'':{width}s}            settings: {settings}")
        else:
            print(f"{name:{width}s} UNAVAILABLE {d['reason']}")
    return 0
