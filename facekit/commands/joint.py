"""``facekit joint``: fine-tune a rate point jointly with the recogniser (phase two)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("joint", help="joint fine-tuning of a rate point with a face recogniser")
    p.add_argument("--rate", default="q3", help="rate point (its mse weights are the start)")
    p.add_argument("--root", help="LFW (default: $FACEKIT_LFW); the identity-disjoint split is used")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lambda-id", type=float, default=0.02, help="weight of the identity term")
    p.add_argument("--lambda-mse", type=float, default=1.0)
    p.add_argument("--lambda-rate", type=float, default=0.0,
                   help="weight of the rate term: bpp under the mse weights' context prior (0: none, as in the paper)")
    p.add_argument("--identity", choices=["squared", "euclidean", "cosine"], default="squared")
    p.add_argument("--recognizer", default="dlib-resnet")
    p.add_argument("--finetune-recognizer", action="store_true", help="train the recogniser too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, history, model)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--install", action="store_true", help="ship the result: as the 'joint' weights, or as 'jointrate' (facekit-jointrate-entropy) "
                        "when --lambda-rate is set")
    p.set_defaults(func=cmd_joint)


def cmd_joint(args: argparse.Namespace) -> int:
    from ..codecs.learned import load_model
    from ..joint import (
        AlignedImageSet,
        JointConfig,
        finetune_joint,
        install_joint,
        split_with_transforms,
    )
    from ..recognition import get_recognizer

    cfg = JointConfig(
        rate=args.rate, steps=args.steps, batch_size=args.batch_size, lr=args.lr, lambda_mse=args.lambda_mse,
        lambda_id=args.lambda_id, lambda_rate=args.lambda_rate, identity=args.identity, recognizer=args.recognizer,
        finetune_recognizer=args.finetune_recognizer, seed=args.seed, checkpoint_every=args.checkpoint_every,
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rec = get_recognizer(args.recognizer)
    images, thetas, names = split_with_transforms(rec, args.root)
    model, entry = load_model("mse", args.rate)
    prior = None
    if args.lambda_rate:
        from ..codecs.learned import load_prior, weights_dir

        prior = load_prior(entry, weights_dir(), model.fingerprint())
    summary = finetune_joint(cfg, model, args.out, AlignedImageSet(images, thetas, names), recognizer=rec,
                             device=args.device, resume=args.resume, rate_prior=prior)
    print({k: summary[k] for k in summary if k.startswith("val_")})
    if args.install:
        e = install_joint(args.out, base_entry=entry)
        print(f"installed {e.get('variant')} weights for {args.rate}: {e.get('file')} ({e.get('sha256', '')[:12]})")
    return 0
