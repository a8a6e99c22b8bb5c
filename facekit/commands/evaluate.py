"""``facekit evaluate``: rate-accuracy sweeps to a results JSON, figure and table."""

from __future__ import annotations

import argparse
from pathlib import Path


def _setting(s: str):
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return s


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="LFW accuracy against bpp for every codec (results JSON + figure)")
    p.add_argument("--root", help="folder or archive in LFW's layout (default: $FACEKIT_LFW)")
    p.add_argument("--pairs", default="pairs.txt", help="pairs file in LFW's format (default pairs.txt)")
    p.add_argument("--codecs", nargs="+", metavar="NAME",
                   help="codec names as `facekit codecs` lists them, e.g. facekit facekit-roi avif "
                   "(default: the reproduction's sweep of every available codec)")
    p.add_argument("--settings", nargs="+", type=_setting,
                   help="settings for a single --codecs entry (default: its sweep)")
    p.add_argument("--recognizer", default="dlib-resnet")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--per-fold", type=int, default=None, help="pairs per fold for a quick run (default all 600)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--end-to-end", action="store_true", help="detect and align on the decoded images")
    p.add_argument("--no-cache", action="store_true", help="compute every embedding again, neither reading nor writing the cache")
    p.add_argument("--out", type=Path, default=Path("rate_accuracy.json"))
    p.add_argument("--figure", type=Path, help="also draw the figure here (default: beside --out)")
    p.add_argument("--merge", action="store_true",
                   help="add these points to an existing --out file (same protocol) instead of replacing it: "
                   "a point replaces the one of the same codec and setting, the codec's other points stay")
    p.add_argument("--replace-codecs", action="store_true",
                   help="with --merge: replace each codec measured now whole, dropping its other points")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..errors import CodecError
    from ..evaluate import evaluate, load_results, merge_results, save_results
    from ..plots import rate_accuracy_figure, summary_table

    codecs = args.codecs
    if args.settings:
        if not codecs or len(codecs) != 1:
            raise CodecError("--settings needs exactly one codec in --codecs")
        codecs = {codecs[0]: args.settings}

    def show(name: str, p: dict) -> None:
        if not args.quiet:
            ps = f"  PSNR {p['psnr']:.2f} dB" if p.get("psnr") is not None else ""
            print(f"{name:22s} {str(p['setting']):>8s}  {p['bpp']:.4f} bpp  "
                  f"{100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f} %{ps}", flush=True)

    res = evaluate(
        args.root, pairs=args.pairs, codecs=codecs, recognizer=args.recognizer, device=args.device,
        per_fold=args.per_fold, batch_size=args.batch_size, end_to_end=args.end_to_end,
        progress=not args.quiet, use_cache=not args.no_cache, on_point=show,
    )
    if args.merge and args.out.exists():
        res = merge_results(load_results(args.out), res, by_point=not args.replace_codecs)
    save_results(res, args.out)
    fig = args.figure or args.out.with_suffix(".png")
    rate_accuracy_figure(res, fig)
    print(summary_table(res))
    print(f"wrote {args.out} and {fig}")
    return 0
