"""``facekit train``: phase one, distortion training of one rate point of the learned codec (:func:`facekit.training.train`),
or, with ``--recipe``, a shipped model's recipe (:mod:`facekit.training.recipe`): phase one, then the joint phase
with the recogniser where the recipe has one (Bian et al., arXiv:1907.01714)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import TrainingError


def _parse_arch(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise TrainingError(f"--arch takes KEY=VALUE (JSON value), got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the learned codec for distortion (one rate point)",
        description=(
            "Train one rate point of the learned codec for distortion on the identity-disjoint "
            "split of LFW (people in no pair of pairs.txt) or a folder of images. Runs on CPU or "
            "CUDA (bf16 autocast); launch with torchrun for DDP. Resuming is bit-identical on CPU. "
            "With --recipe, trains a shipped model from its recipe instead (recipes/*.toml; make weights runs them all): "
            "phase one in OUT/rd, then the joint phase with the recogniser in OUT/joint from phase one's final weights."
        ),
    )
    p.add_argument("--recipe", default=None, metavar="TOML",
                   help="train a shipped model from its recipe (recipes/*.toml): every training setting comes from "
                        "the recipe; --out, --resume, --preset, --stop-after, --device, --root and --install apply")
    p.add_argument("--preset", choices=["cpu", "gpu"], default=None,
                   help="with --recipe: the recipe's budget (default: the preset the run was started with, else cpu)")
    p.add_argument("--phase", choices=["rd", "joint"], default=None,
                   help="with --recipe: only phase one (rd; --install then installs its weights), or only the joint "
                        "phase of a run whose phase one has finished (with --resume); default: both")
    p.add_argument("--install", action="store_true",
                   help="with --recipe: once the run has finished, put its weights (the joint phase's, where the recipe "
                        "has one) in the weights store, with both phases' held-out figures and curves")
    p.add_argument("--weights-folder", default=None, help="with --install: the weights folder (default: facekit/weights)")
    p.add_argument("--rate", default="q3", help="rate point name (q1..q5)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--root", help="LFW folder or archive (default: $FACEKIT_LFW)")
    data.add_argument("--images", help="train on every image in this folder instead of LFW")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", required=True, help="output folder (checkpoint, history, model.pt)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size (default 32)")
    p.add_argument("--crop", type=int, default=None, help="training crop size (default 128)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=["mse", "mse+ms-ssim"], default="mse")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--val-every", type=int, default=None)
    p.add_argument("--val-images", type=int, default=None)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many steps in total (with --recipe: phase one's steps, then the joint phase's; "
                        "with --phase joint: the joint phase's alone)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="with --recipe: end each phase's training after this many seconds (checkpoint, held-out "
                        "figures, model.pt), instead of the preset's time_limit_s")
    p.add_argument("--init", default=None, help="start from these weights (model.pt or a shipped .pt)")
    p.add_argument("--arch", nargs="*", metavar="KEY=VALUE", help="override rate-point fields")
    p.set_defaults(func=run)


def run_recipe_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..training.recipe import install_recipe_run, load_recipe, run_recipe

    if args.images:
        raise TrainingError("--images does not apply with --recipe: the recipe's [data] says what to train on")
    if args.time_limit is not None and not args.time_limit > 0:
        raise TrainingError(f"--time-limit {args.time_limit}: give a number of seconds > 0")
    recipe = load_recipe(args.recipe)
    preset = args.preset
    run_file = Path(args.out) / "run.json"
    if preset is None:
        preset = json.loads(run_file.read_text())["preset"] if args.resume and run_file.exists() else "cpu"
    summary = run_recipe(recipe, args.out, preset=preset, resume=args.resume, stop_after=args.stop_after,
                         device=args.device, root=args.root, phase=args.phase, time_limit_s=args.time_limit)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "val_images")}, indent=2))
    if args.install:
        if not summary.get("finished"):
            raise TrainingError(f"not installed: the run stopped at step {summary.get('steps_done')} of {summary.get('steps')}")
        entry = install_recipe_run(recipe, args.out, folder=args.weights_folder, phase=args.phase)
        print(json.dumps({"installed": entry["file"], "sha256": entry["sha256"], **entry["metrics"]}))
    return 0


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, train

    if args.recipe:
        return run_recipe_command(args)
    if args.install or args.preset or args.phase or args.time_limit is not None:
        raise TrainingError("--install, --preset, --phase and --time-limit go with --recipe")

    cfg = TrainConfig(rate=args.rate, steps=args.steps, seed=args.seed, loss=args.loss, amp=not args.no_amp)
    for attr in ("batch_size", "crop", "lr", "checkpoint_every", "log_every", "val_every", "val_images"):
        value = getattr(args, attr)
        if value is not None:
            setattr(cfg, attr, value)
    cfg.arch = _parse_arch(args.arch)
    cfg.init = args.init
    try:
        cfg.rate_point()
    except (KeyError, ValueError, TypeError) as e:
        raise TrainingError(f"bad rate point / --arch: {e}") from e
    summary = train(
        cfg,
        args.out,
        root=args.root,
        images_dir=args.images,
        resume=args.resume,
        device=args.device,
        stop_after=args.stop_after,
        threads=args.threads,
    )
    if summary:
        print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0
