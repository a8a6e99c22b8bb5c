"""``facekit codecs``: the codec catalogue, recommended first, with roles, availability and library versions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..codecs.registry import available_codecs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("codecs", help="list the codecs with their roles, whether they are available, library versions")
    p.add_argument("--json", action="store_true", help="the same as JSON")
    p.add_argument("--all", action="store_true",
                   help="also the unlisted names still accepted (spelled-out learned codecs that results measured)")
    p.set_defaults(func=cmd_codecs)


def availability_line(d: dict[str, Any]) -> str:
    """``"available  <library>; settings: ..."`` or ``"UNAVAILABLE <reason>"``.

    A codec with a continuous setting and named presets (``facekit-hyperprior``) shows its range
    and presets; one with a weights file says it is installed.
    """
    if not d["available"]:
        return f"UNAVAILABLE {d['reason']}"
    lib = d.get("library") or (f"torch {d['torch']}" if "torch" in d else "")
    settings = ", ".join(str(s) for s in d.get("settings", []))
    if d.get("setting_range") and d.get("presets"):
        lo, hi = d["setting_range"]
        settings = f"any number in [{lo:g}, {hi:g}] or " + ", ".join(f"{k} ({v:g})" for k, v in d["presets"].items())
    weights = d.get("weights") or {}
    installed = f"; weights installed: {weights['file']} (sha256 {str(weights.get('sha256'))[:12]})" if weights.get("file") else ""
    return f"available  {lib}{'; ' if lib else ''}settings: {settings}{installed}"


def cmd_codecs(args: argparse.Namespace) -> int:
    info = available_codecs(hidden=args.all)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max((len(n) for n in info), default=0)
    roles = max((len(d["role"]) for d in info.values()), default=0)
    for name, d in info.items():
        print(f"{name:{width}s}  {d['role']:{roles}s}  {d['about']}".rstrip())
        print(f"{'':{width}s}  {availability_line(d)}")
    if not args.all:
        print(f"\n{len(info)} codecs; `facekit compress` writes the first (the recommended one) unless told "
              "--codec NAME (a learned codec or the second generation); --all also lists the names accepted "
              "unlisted (resized forms, other presets, older names)")
    return 0
