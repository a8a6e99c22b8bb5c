"""``facekit embed``: embeddings of LFW images (or any folder in LFW's layout) to a ``.npz``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="align and embed images with a recogniser, save to .npz",
        description=(
            "Align (landmarks found once on the originals and cached) and embed images of an "
            "LFW-style folder. Without --names or --all, the images of the protocol file are used."
        ),
    )
    p.add_argument("--root", help="LFW folder or archive (default: $FACEKIT_LFW)")
    p.add_argument(
        "--names", nargs="+", metavar="NAME", help="image names, e.g. Person/Person_0001.jpg"
    )
    p.add_argument("--names-file", type=Path, help="a file with one image name per line")
    p.add_argument("--all", action="store_true", help="every image of the data set")
    p.add_argument(
        "--pairs",
        default="pairs.txt",
        help="protocol file whose images to embed (default pairs.txt)",
    )
    p.add_argument(
        "--recognizer",
        default="dlib-resnet",
        help="dlib-resnet | facenet-vggface2 | facenet-casia-webface",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--no-cache", action="store_true", help="locate faces again instead of using the cache"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the .npz to write")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_embed)


def _names(args: argparse.Namespace, lfw) -> list[str]:  # noqa: ANN001 - LFW
    names: list[str] = []
    if args.names:
        names += args.names
    if args.names_file:
        names += [ln.strip() for ln in args.names_file.read_text().splitlines() if ln.strip()]
    if args.all:
        names += [n for imgs in lfw.identities().values() for n in imgs]
    if not names:
        names = lfw.pair_images(lfw.pairs(args.pairs))
    return list(dict.fromkeys(names))  # unique, in order


def cmd_embed(args: argparse.Namespace) -> int:
    import torch

    from ..data.lfw import open_lfw
    from ..errors import DataError
    from ..recognition import embed_images, fallback_counts, find_alignments, get_recognizer
    from ..recognition.lfw_eval import LazyImages

    lfw = open_lfw(args.root)
    names = _names(args, lfw)
    missing = [n for n in names if not lfw.path(n).is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the images are not in {lfw.images}, e.g. {missing[0]}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rec = get_recognizer(args.recognizer, device=device)
    locs = find_alignments(rec, lfw, names, cache=not args.no_cache, progress=not args.quiet)
    thetas = np.stack([locs[n].theta for n in names])
    emb = embed_images(
        rec,
        LazyImages(lfw, names),
        thetas,
        batch_size=args.batch_size,
        device=device,
        progress=not args.quiet,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.output,
        names=np.array(names),
        embeddings=emb,
        thetas=thetas,
        landmarks=np.stack([np.asarray(locs[n].landmarks, dtype=np.float64) for n in names]),
        method=np.array([locs[n].method for n in names]),
        fallback=np.array([locs[n].fallback for n in names]),
        recognizer=np.array(rec.name),
        distance=np.array(rec.distance),
    )
    counts = fallback_counts(locs)
    print(f"{len(names)} embeddings ({rec.name}, {emb.shape[1]}-d) -> {args.output}")
    print(f"detectors: {json.dumps(counts)}")
    return 0
