"""How a finished training run made its weights: the record the weights store keeps beside them.

The manifest entry of shipped weights (:mod:`facekit.zoo`) says how they were made: the
phase of Bian et al. (arXiv:1907.01714) — phase one, distortion only, or phase two, joint
fine-tuning with the recogniser — the data, steps, batch, loss, optimiser, seed, hardware
and time, and the command that repeats the run. These functions read it off a run's
``summary.json``.
"""

from __future__ import annotations

from typing import Any

from .config import JointConfig


def joint_variant(config: dict[str, Any]) -> str:
    """The variant a joint run ships as, from its config (:meth:`JointConfig.variant`)."""
    return JointConfig(lambda_rate=float(config.get("lambda_rate") or 0.0),
                       background_weight=float(config.get("background_weight", 1.0))).variant()


def distortion_record(summary: dict[str, Any], data_note: str | None = None) -> dict[str, Any]:
    """The record of a phase-one run (``data_note`` replaces the description of the data)."""
    cfg = summary["config"]
    return {
        "data": data_note
        or "LFW deep-funneled, identity-disjoint split (people in no pair of pairs.txt), minus the held-out images",
        "train_images": summary["train_images"],
        "held_out_images": summary["val_images"],
        "steps": summary["steps"],
        "batch_size": cfg["batch_size"],
        "crop": cfg["crop"],
        "augmentation": f"random {cfg['crop']}x{cfg['crop']} crops, horizontal flips, colour jitter +-{cfg['jitter']}",
        "loss": cfg["loss"],
        "optimizer": f"Adam lr {cfg['lr']}, {cfg['warmup']} warm-up steps, cosine to {cfg['min_lr_ratio']}x, grad clip {cfg['grad_clip']}",
        "seed": summary["seed"],
        "hardware": summary["hardware"],
        "device": summary["device"],
        "world_size": summary["world_size"],
        "train_time_s": round(summary["train_time_s"], 1),
        "torch": summary["torch"],
        "command": (
            f"facekit train --rate {cfg['rate']} --steps {cfg['steps']} --batch-size {cfg['batch_size']} "
            f"--crop {cfg['crop']} --lr {cfg['lr']} --seed {cfg['seed']} --threads 1 --device cpu --out RUN"
        ),
        "params": summary["params"],
    }


def joint_record(summary: dict[str, Any], base_entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a phase-two run; ``base_entry`` is the manifest entry of its starting weights."""
    cfg = summary["config"]
    bg = float(cfg.get("background_weight", 1.0))
    data_desc = ("LFW deep-funneled, identity-disjoint split (people in no pair of pairs.txt), whole 250x250 "
                 "images aligned by dlib's detector + 5 landmarks, minus the held-out images")
    if summary.get("pack"):
        data_desc += " (read from a training pack, facekit joint --write-pack: the same files, decoded by Pillow)"
    return {
        "phase": "joint fine-tuning from the distortion-only (mse) weights of the same rate point",
        "init": (base_entry or {}).get("sha256"),
        "data": data_desc,
        "train_images": summary["train_images"],
        "held_out_images": summary["val_images"],
        "steps": summary["steps"],
        "batch_size": cfg["batch_size"],
        "loss": f"{cfg['lambda_mse']} * MSE + {cfg['lambda_id']} * {cfg['identity']} distance of "
                f"{cfg['recognizer']} embeddings (original vs reconstruction, original's alignment)"
                + (f" + {cfg['lambda_rate']} * bpp under the starting weights' context prior"
                   if cfg.get("lambda_rate") else "")
                + (f"; the squared error of pixels outside the face chip (margin 0.1) weighs {bg}" if bg != 1.0 else ""),
        "recognizer_frozen": not cfg["finetune_recognizer"],
        "optimizer": f"Adam lr {cfg['lr']}, grad clip {cfg['grad_clip']}"
                     + (f", lr / 10 from step {cfg['lr_drop_at']}" if cfg.get("lr_drop_at") else ""),
        "augmentation": f"horizontal flips (transform mirrored), colour jitter +-{cfg['jitter']}",
        "seed": cfg["seed"],
        "hardware": summary["hardware"],
        "device": summary["device"],
        "train_time_s": round(summary["train_time_s"], 1),
        "torch": summary["torch"],
        "held_out_metrics": {k: summary[k] for k in ("val_psnr", "val_face_psnr", "val_png_bpp", "val_id_dist")
                             if k in summary},
        "command": f"facekit joint --rate {cfg['rate']} --steps {cfg['steps']} --batch-size {cfg['batch_size']} "
                   f"--lr {cfg['lr']} --lambda-id {cfg['lambda_id']} "
                   + (f"--lambda-rate {cfg['lambda_rate']} " if cfg.get("lambda_rate") else "")
                   + (f"--background-weight {bg} " if bg != 1.0 else "")
                   + (f"--lr-drop-at {cfg['lr_drop_at']} " if cfg.get("lr_drop_at") else "")
                   + f"--seed {cfg['seed']} --out RUN --install",
    }
