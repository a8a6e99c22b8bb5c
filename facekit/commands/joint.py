"""``facekit joint``: phase two, fine-tuning a rate point jointly with the recogniser (:func:`facekit.training.finetune_joint`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..threads import set_threads


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("joint", help="joint fine-tuning of a rate point with a face recogniser")
    p.add_argument("--rate", default="q3", help="rate point (its mse weights are the start)")
    p.add_argument("--root", help="LFW (default: $FACEKIT_LFW); the identity-disjoint split is used")
    p.add_argument("--pack", type=Path, help="train on a training pack (--write-pack) instead of LFW: no detector needed")
    p.add_argument("--write-pack", type=Path, metavar="FILE",
                   help="write the identity-disjoint split (files and transforms) to FILE and stop")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lambda-id", type=float, default=0.02, help="weight of the identity term")
    p.add_argument("--lambda-mse", type=float, default=1.0)
    p.add_argument("--lambda-rate", type=float, default=0.0,
                   help="weight of the rate term: bpp under the mse weights' context prior (0: none, as in the paper)")
    p.add_argument("--background-weight", type=float, default=1.0,
                   help="weight of the squared error outside the face chip (1: every pixel alike; <1: the jointface variant)")
    p.add_argument("--lr-drop-at", type=int, default=0, help="step from which the learning rate is a tenth (0: never)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop after this much training time (the last fifth at a tenth of the rate); the record keeps the steps done")
    p.add_argument("--identity", choices=["squared", "euclidean", "cosine"], default="squared")
    p.add_argument("--recognizer", default="dlib-resnet")
    p.add_argument("--finetune-recognizer", action="store_true", help="train the recogniser too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, help="run folder (checkpoints, history, model); needed unless --write-pack")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--install-run", type=Path, metavar="RUN",
                   help="ship a finished run folder (trained elsewhere, e.g. by scripts/gpu_joint.sh) and stop "
                        "(the same as facekit weights install RUN)")
    p.add_argument("--install", action="store_true", help="ship the result: as the 'joint' weights, as 'jointrate' (facekit-jointrate-entropy) "
                        "when --lambda-rate is set, as 'jointface' when --background-weight is below 1")
    p.set_defaults(func=cmd_joint)


def cmd_joint(args: argparse.Namespace) -> int:
    from ..errors import TrainingError
    from ..recognition import get_recognizer
    from ..training import (
        AlignedImageSet,
        JointConfig,
        finetune_joint,
        read_split_pack,
        split_with_transforms,
        write_split_pack,
    )
    from ..zoo import install, install_joint, load_model, load_prior, weights_dir

    cfg = JointConfig(
        rate=args.rate, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lambda_mse=args.lambda_mse,
        lambda_id=args.lambda_id, lambda_rate=args.lambda_rate, identity=args.identity, recognizer=args.recognizer,
        finetune_recognizer=args.finetune_recognizer, seed=args.seed, checkpoint_every=args.checkpoint_every,
        log_every=args.log_every, background_weight=args.background_weight, lr_drop_at=args.lr_drop_at,
    )
    if args.threads:
        set_threads(args.threads)
    if args.install_run:
        e = install(args.install_run)
        print(f"installed {e.get('variant')} weights for {e.get('rate_point')}: {e.get('file')} ({e.get('sha256', '')[:12]})")
        return 0
    rec = get_recognizer(args.recognizer)
    if args.write_pack:
        info = write_split_pack(args.write_pack, rec, args.root)
        print(f"wrote {info['images']} images and their transforms to {info['path']} ({info['bytes'] / 1e6:.1f} MB)")
        return 0
    if args.out is None:
        raise TrainingError("facekit joint needs --out (the run folder), unless it only writes a pack (--write-pack)")
    if args.pack:
        images, thetas, names = read_split_pack(args.pack)
    else:
        images, thetas, names = split_with_transforms(rec, args.root)
    data = AlignedImageSet(images, thetas, names)
    data.from_pack = args.pack is not None
    model, entry = load_model("mse", args.rate)
    prior = None
    if args.lambda_rate:
        prior = load_prior(entry, weights_dir(), model.fingerprint())
    summary = finetune_joint(cfg, model, args.out, data, recognizer=rec, device=args.device, resume=args.resume,
                             rate_prior=prior, time_limit_s=args.time_limit)
    print({k: summary[k] for k in summary if k.startswith("val_")})
    if args.install:
        e = install_joint(args.out, base_entry=entry)
        print(f"installed {e.get('variant')} weights for {args.rate}: {e.get('file')} ({e.get('sha256', '')[:12]})")
    return 0
