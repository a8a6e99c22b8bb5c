"""``facekit lfw verify | download | eval``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import cache_dir
from ..data.lfw import PROTOCOL_FILES, check_checksums, identity_disjoint_split, open_lfw
from ..fileio import write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lfw", help="LFW: verify a local copy, download from a mirror, evaluate")
    lsub = p.add_subparsers(dest="lfw_command", metavar="ACTION")

    v = lsub.add_parser("verify", help="counts, checksums and pair coverage of a local LFW")
    v.add_argument("--root", help="LFW folder or archive (default: $FACEKIT_LFW, else the repository's data/lfw/)")
    v.add_argument("--pairs", default="pairs.txt", help="protocol file (default pairs.txt)")
    v.add_argument("--json", action="store_true", help="print the figures as JSON")
    v.set_defaults(func=cmd_verify)

    d = lsub.add_parser("download", help="download LFW from the mirrors in $FACEKIT_LFW_MIRRORS")
    d.add_argument("--dest", type=Path, help="target folder (default: the cache)")
    d.add_argument("--mirror", action="append", help="mirror base URL (repeatable)")
    d.set_defaults(func=cmd_download)

    e = lsub.add_parser("eval", help="10-fold accuracy of uncompressed LFW with a recogniser")
    e.add_argument("--root", help="LFW folder or archive (default: $FACEKIT_LFW, else the repository's data/lfw/)")
    e.add_argument("--pairs", default="pairs.txt")
    e.add_argument("--recognizer", default="dlib-resnet")
    e.add_argument("--device", default=None)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--limit", type=even_limit, default=None, metavar="N",
                   help="use only the first N pairs of each fold, N/2 matched and N/2 mismatched (N even)")
    e.add_argument("--out", type=Path, help="write the result as JSON")
    e.set_defaults(func=cmd_eval)
    p.set_defaults(func=lambda a: p.print_help() or 1)


def verify_report(root: str | None, pairs_name: str = "pairs.txt") -> dict:
    """The figures ``facekit lfw verify`` prints."""
    lfw = open_lfw(root)
    ids = lfw.identities()
    n_images = sum(len(v) for v in ids.values())
    pairs = lfw.pairs(pairs_name)
    missing = lfw.missing(pairs)
    sums: dict[str, bool] = {}
    sums_ok: bool | None = None
    if (lfw.meta / "SHA256SUMS").exists():
        names = [n for n in (*PROTOCOL_FILES, "lfw-names.txt") if (lfw.meta / n).exists()]
        if lfw.archive is not None:
            names.append(lfw.archive.name)
        sums = check_checksums(lfw.meta, [n for n in names if n in _listed(lfw.meta)])
        sums_ok = all(sums.values())
    split = identity_disjoint_split(lfw, [pairs_name])
    return {
        "images_dir": str(lfw.images),
        "identities": len(ids),
        "images": n_images,
        "pairs": len(pairs),
        "pairs_present": len(pairs) - sum(1 for p in pairs if p.a in missing or p.b in missing),
        "missing_images": missing,
        "checksums": sums,
        "checksums_ok": sums_ok,
        "split_identities": len(split),
        "split_images": sum(len(v) for v in split.values()),
    }


def _listed(meta: Path) -> set[str]:
    from ..data.lfw import read_sha256sums

    return set(read_sha256sums(meta / "SHA256SUMS"))


def cmd_verify(args: argparse.Namespace) -> int:
    r = verify_report(args.root, args.pairs)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if not r["missing_images"] else 1
    print(f"LFW images: {r['images_dir']}")
    print(f"identities: {r['identities']}")
    print(f"images: {r['images']}")
    print(f"pairs: {r['pairs_present']} of {r['pairs']} present ({args.pairs})")
    if r["missing_images"]:
        print(f"missing images: {len(r['missing_images'])}, e.g. {', '.join(r['missing_images'][:5])}")
    if r["checksums_ok"] is None:
        print("checksums: no SHA256SUMS beside the data, not verified")
    else:
        print(f"checksums: OK ({len(r['checksums'])} files)")
    print(
        f"identity-disjoint training split: {r['split_images']} images of "
        f"{r['split_identities']} people who appear in no pair of {args.pairs}"
    )
    return 0 if not r["missing_images"] else 1


def cmd_download(args: argparse.Namespace) -> int:
    from ..data.download import download_lfw

    path = download_lfw(args.dest, mirrors=args.mirror)
    print(f"LFW downloaded and verified in {path}; set FACEKIT_LFW={path}")
    return 0


def even_limit(text: str) -> int:
    """``--limit``: an even number of pairs per fold, at least 2 (half matched, half mismatched)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 2 or n % 2:
        raise argparse.ArgumentTypeError(f"expected an even number of at least 2, got {text!r}")
    return n


def cmd_eval(args: argparse.Namespace) -> int:
    from ..recognition.lfw_eval import describe_fallbacks, evaluate_uncompressed

    r = evaluate_uncompressed(
        args.root, recognizer=args.recognizer, pairs=args.pairs, batch_size=args.batch_size,
        device=args.device, limit=args.limit,
    )
    print(
        f"{r['recognizer']} on uncompressed LFW ({r['n_pairs']} pairs, {len(r['fold_accuracies'])}-fold): "
        f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} % accuracy"
    )
    far = next((k for k in r if k.startswith("tar_at_far_")), None)
    extra = f", TAR {100 * r[far]:.2f} % at FAR {100 * float(far.removeprefix('tar_at_far_')):g} %" if far else ""
    print(f"AUC {r['auc']:.4f}{extra}")
    print(describe_fallbacks(r))
    print(
        f"{r['n_images']:,} images: {r['seconds_align']} s to load the model and find the landmarks, "
        f"{r['seconds_embed']} s to embed (both are cached in {cache_dir()}: a second run reads them)"
    )
    if args.out:
        write_json(args.out, r, indent=2)
    return 0
