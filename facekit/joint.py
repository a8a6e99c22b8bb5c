"""Joint fine-tuning of the codec with a face recogniser (phase two of the method).

Bian et al. (2019, Sec. 3.2) first train the compression and reconstruction networks for
distortion, then optimise them jointly with a face recognition network so that the
reconstruction keeps its identity. Here the loss is

    L = lambda_mse * MSE(x, x_hat) + lambda_id * D(f(A(x, T)), f(A(x_hat, T)))

where ``f`` is a frozen recogniser (dlib's ResNet by default, :mod:`facekit.recognition`),
``A(., T)`` its differentiable face alignment with the transform ``T`` found once on the
*original* image, and ``D`` the squared Euclidean (or cosine) distance of the
embeddings; with ``lambda_rate > 0`` it adds ``lambda_rate * bpp``, the code's bits per pixel
under the starting weights' context prior (:mod:`facekit.models.rate`, beyond the paper,
which has no rate term). With ``background_weight < 1`` the squared error of each pixel
outside the face chip that the recogniser reads (found on the original, widened by a small
margin) counts that much less (:func:`face_weights`): the codec may then spend fewer bits
on the background, which the recogniser never sees (the ``jointface`` variant; beyond the
paper, whose distortion term weighs every pixel alike). The gradient reaches the codec's pixels through ``grid_sample``; the
recogniser itself may be fine-tuned too (``finetune_recognizer``), but is frozen by
default so that evaluation judges the codec with an unchanged recogniser.

Training images are whole 250x250 faces of the identity-disjoint LFW split (people who
appear in no evaluation pair), each with its transform; augmentation is a horizontal
flip (with the transform mirrored to match) and a mild colour jitter. Runs are seeded,
checkpointed atomically and resume to the same result as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import TrainingError
from .losses import JointLoss
from .models.autoencoder import FaceCodecNet
from .train import _mix, atomic_save, hardware_description, seed_everything

CHECKPOINT_VERSION = 1


class IdentityLoss(nn.Module):
    """Distance between the recogniser's embeddings of an original and its reconstruction.

    ``forward(x, x_hat, theta)``: images ``(B, 3, H, W)`` in [0, 1] and the transforms
    ``(B, 2, 3)`` found on the originals; returns the mean over the batch of the squared
    Euclidean (``"squared"``), Euclidean (``"euclidean"``) or cosine (``"cosine"``) distance.
    The original's embedding is computed without gradient.
    """

    def __init__(self, recognizer: nn.Module, kind: str = "squared") -> None:
        super().__init__()
        if kind not in ("squared", "euclidean", "cosine"):
            raise ValueError(f"unknown identity distance {kind!r}")
        self.recognizer = recognizer
        self.kind = kind

    def distances(self, x: torch.Tensor, x_hat: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e = self.recognizer.embed(x.float(), theta)
        e_hat = self.recognizer.embed(x_hat.float(), theta)
        if self.kind == "cosine":
            return 1 - torch.nn.functional.cosine_similarity(e, e_hat, dim=1)
        sq = ((e - e_hat) ** 2).sum(dim=1)
        return sq if self.kind == "squared" else torch.sqrt(sq + 1e-12)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.distances(x, x_hat, theta).mean()


def mirror_theta(theta: np.ndarray) -> np.ndarray:
    """The transform of a horizontally flipped image whose chip is the mirrored chip.

    With ``affine_grid`` coordinates, flipping the input negates ``x_in`` and mirroring
    the chip negates ``x_out``: ``[[a, b, c], [d, e, f]] -> [[a, -b, -c], [-d, e, f]]``.
    """
    t = np.array(theta, dtype=np.float32, copy=True)
    t[0, 1:] *= -1
    t[1, 0] *= -1
    return t


def face_weights(
    theta: torch.Tensor | np.ndarray, height: int, width: int, background: float, margin: float = 0.1
) -> torch.Tensor:
    """Per-pixel distortion weights ``(B, 1, H, W)``: 1 on the face, ``background`` elsewhere.

    The face is the region the recogniser's chip covers: the pixels whose chip coordinates
    under the transform ``theta`` (``(B, 2, 3)``, ``affine_grid`` convention with
    ``align_corners=True``, found on the original) lie within ``[-1 - margin, 1 + margin]``.
    dlib's chip already pads the face by a quarter of its size on each side.
    """
    th = torch.as_tensor(theta, dtype=torch.float32)
    if th.ndim == 2:
        th = th[None]
    if th.ndim != 3 or th.shape[1:] != (2, 3):
        raise ValueError(f"expected transforms (B, 2, 3), got shape {tuple(th.shape)}")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"the background weight must be in [0, 1], got {background}")
    gy, gx = torch.meshgrid(
        torch.linspace(-1, 1, height, device=th.device), torch.linspace(-1, 1, width, device=th.device), indexing="ij"
    )
    p = torch.stack([gx, gy], -1).reshape(1, -1, 2) - th[:, None, :, 2]  # (B, HW, 2) image coordinates
    u = torch.linalg.solve(th[:, :, :2], p.transpose(1, 2)).transpose(1, 2)  # chip coordinates
    inside = u.abs().amax(-1) <= 1.0 + margin
    w = torch.where(inside, torch.ones((), device=th.device), torch.full((), float(background), device=th.device))
    return w.reshape(th.shape[0], 1, height, width)


class AlignedImageSet:
    """Whole training images with their transforms, and deterministic augmentation."""

    def __init__(self, images: Sequence[np.ndarray], thetas: Sequence[np.ndarray], names: Sequence[str]) -> None:
        if not images:
            raise TrainingError("no training images for joint fine-tuning")
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise TrainingError(f"joint fine-tuning needs images of one size, got {sorted(shapes)}")
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        self.thetas = np.stack([np.asarray(t, np.float32) for t in thetas])
        self.names = list(names)
        #: read from a training pack (:func:`read_split_pack`), for the record
        self.from_pack = False

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> AlignedImageSet:
        """The images at ``indices``, in that order."""
        idx = list(indices)
        out = AlignedImageSet.__new__(AlignedImageSet)
        out.images = self.images[idx]
        out.thetas = self.thetas[idx]
        out.names = [self.names[i] for i in idx]
        out.from_pack = self.from_pack
        return out

    def sample(self, position: int, seed: int, jitter: float) -> tuple[torch.Tensor, np.ndarray]:
        n = len(self)
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch, 0x10147)))
        i = int(perm[offset])
        r = torch.rand(3, generator=torch.Generator().manual_seed(_mix(seed, position, 0x1D))).tolist()
        x = self.images[i].float() / 255.0
        theta = self.thetas[i]
        if r[0] < 0.5:
            x = x.flip(-1)
            theta = mirror_theta(theta)
        if jitter > 0:
            x = (x * (1 + jitter * (2 * r[1] - 1))).clamp(0, 1)
            mean = x.mean()
            x = ((x - mean) * (1 + jitter * (2 * r[2] - 1)) + mean).clamp(0, 1)
        return x, theta

    def batch(self, step: int, batch_size: int, seed: int, jitter: float) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.sample(step * batch_size + j, seed, jitter) for j in range(batch_size)]
        return torch.stack([a for a, _ in items]), torch.from_numpy(np.stack([b for _, b in items]))


@dataclass
class JointConfig:
    """Everything that defines a joint fine-tuning run (stored in checkpoints)."""

    rate: str = "q3"
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    lambda_mse: float = 1.0
    lambda_id: float = 0.02
    #: weight of the rate term (bits per pixel under the starting weights' context prior,
    #: :mod:`facekit.models.rate`); 0 trains without it, as Bian et al. do
    lambda_rate: float = 0.0
    identity: str = "squared"
    recognizer: str = "dlib-resnet"
    finetune_recognizer: bool = False
    jitter: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    val_images: int = 16
    #: weight of the squared error of pixels outside the face chip (1: every pixel alike,
    #: as Bian et al.; below 1: the ``jointface`` variant, :func:`face_weights`)
    background_weight: float = 1.0
    #: the step from which the learning rate is a tenth of ``lr`` (0: never)
    lr_drop_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every")

    def variant(self) -> str:
        """The shipped variant a run of this config becomes: ``jointface`` (face-weighted
        distortion), ``jointrate`` (rate term) or ``joint`` (the paper's phase two)."""
        if self.background_weight != 1.0:
            return "jointface"
        return "jointrate" if self.lambda_rate else "joint"


def split_with_transforms(
    recognizer: Any, root: str | os.PathLike[str] | None = None, progress: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """The identity-disjoint LFW split: images, their transforms (cached), names."""
    from .data.lfw import identity_disjoint_split, open_lfw
    from .recognition import find_alignments

    lfw = open_lfw(root)
    names = sorted(n for imgs in identity_disjoint_split(lfw).values() for n in imgs)
    locs = find_alignments(recognizer, lfw, names, progress=progress)
    images = [recognizer.read_original(lfw.path(n)) for n in names]
    return images, [locs[n].theta for n in names], names


PACK_FORMAT = "facekit-joint-pack/1"


def write_split_pack(
    path: str | os.PathLike[str], recognizer: Any, root: str | os.PathLike[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Write the identity-disjoint split as one small ``.npz`` to train on elsewhere.

    It holds each image's original file bytes (LFW's JPEGs, about 13 MB for the 1,549
    images), its name and the transform found on it, so a machine with a GPU but without
    LFW, dlib's detector or a network can run :func:`finetune_joint`
    (``facekit joint --pack FILE``). :func:`read_split_pack` decodes the files with Pillow;
    dlib's own JPEG decoder, which :func:`split_with_transforms` uses, may differ from it
    by a level or two in a few pixels.
    """
    from .data.lfw import identity_disjoint_split, open_lfw
    from .recognition import find_alignments

    lfw = open_lfw(root)
    names = sorted(n for imgs in identity_disjoint_split(lfw).values() for n in imgs)
    locs = find_alignments(recognizer, lfw, names, progress=progress)
    blobs = [Path(lfw.path(n)).read_bytes() for n in names]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(
            f, format=np.array(PACK_FORMAT), alignment_id=np.array(str(getattr(recognizer, "alignment_id", ""))),
            names=np.array(names), thetas=np.stack([np.asarray(locs[n].theta, np.float32) for n in names]),
            offsets=offsets, data=np.frombuffer(b"".join(blobs), np.uint8),
        )
    os.replace(tmp, out)
    return {"path": str(out), "images": len(names), "bytes": out.stat().st_size}


def read_split_pack(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images (RGB uint8), transforms and names of a pack written by :func:`write_split_pack`."""
    import io

    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise TrainingError(f"training pack {p} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            fmt = str(z["format"])
            names = [str(n) for n in z["names"]]
            thetas = np.asarray(z["thetas"], np.float32)
            offsets = np.asarray(z["offsets"], np.int64)
            data = np.asarray(z["data"], np.uint8)
    except (OSError, ValueError, KeyError) as e:
        raise TrainingError(f"{p} is not a readable training pack: {e}") from e
    if fmt != PACK_FORMAT:
        raise TrainingError(f"{p} is a {fmt!r} file, not a {PACK_FORMAT!r} training pack")
    n = len(names)
    if thetas.shape != (n, 2, 3) or offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(data) \
            or np.any(np.diff(offsets) <= 0):
        raise TrainingError(f"training pack {p} is inconsistent (names, transforms and file offsets disagree)")
    images = []
    for i, name in enumerate(names):
        try:
            with Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())) as im:
                im.load()
                images.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise TrainingError(f"training pack {p}: image {name} cannot be decoded: {e}") from e
    return images, list(thetas), names


@torch.no_grad()
def validate(model: FaceCodecNet, ident: IdentityLoss, data: AlignedImageSet, idx: Sequence[int], device) -> dict[str, float]:
    """PSNR (rounded to 8 bits) of the whole image and of the face region (:func:`face_weights`),
    real PNG bpp and identity distance on held-out images."""
    model.eval()
    ps, face_ps, bpps, ids = [], [], [], []
    for i in idx:
        x = (data.images[i : i + 1].float() / 255).to(device)
        th = torch.from_numpy(data.thetas[i : i + 1]).to(device)
        enc = model.compress(x, effort=1)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        x_hat = torch.round(x_hat.clamp(0, 1) * 255) / 255
        mse = float(torch.mean((x - x_hat) ** 2))
        ps.append(10 * math.log10(1 / max(mse, 1e-12)))
        face = face_weights(th, x.shape[-2], x.shape[-1], 0.0, margin=0.0).to(device)
        face_mse = float(((x - x_hat) ** 2 * face).sum() / (face.sum() * x.shape[1]).clamp_min(1))
        face_ps.append(10 * math.log10(1 / max(face_mse, 1e-12)))
        bpps.append(8 * len(enc["strings"][0]) / (x.shape[-1] * x.shape[-2]))
        ids.append(float(torch.sqrt(((ident.recognizer.embed(x, th) - ident.recognizer.embed(x_hat, th)) ** 2).sum())))
    model.train()
    return {"val_psnr": float(np.mean(ps)), "val_face_psnr": float(np.mean(face_ps)), "val_png_bpp": float(np.mean(bpps)), "val_id_dist": float(np.mean(ids))}


def finetune_joint(
    cfg: JointConfig,
    model: FaceCodecNet,
    out_dir: str | os.PathLike[str],
    data: AlignedImageSet,
    *,
    recognizer: nn.Module | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    threads: int | None = None,
    verbose: bool = True,
    rate_prior: Any | None = None,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (initialised from its distortion-only weights) with the joint loss.

    With ``cfg.lambda_rate > 0`` the loss has a rate term: the code's bits per pixel under
    ``rate_prior`` (the :class:`~facekit.models.quantizer.ContextPrior` of the starting
    weights, held fixed), through :class:`~facekit.models.rate.ContextRate`.

    Writes ``checkpoint.pt`` every ``checkpoint_every`` steps, ``history.jsonl``, and at the
    end ``model.pt`` and ``summary.json`` in ``out_dir``. ``resume`` continues from the
    checkpoint (the config must match, except the fields in ``RESUMABLE_CHANGES``);
    ``stop_after`` stops after checkpointing at that step, as an interruption would.

    ``time_limit_s`` ends the run once that many seconds of training have passed (for a
    lent GPU's fixed budget); unless ``cfg.lr_drop_at`` is set, the learning rate drops to
    a tenth for the last fifth of that time. The summary's config then records the steps
    done and the step of the drop, so the same config without the limit repeats the run.
    """
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(cfg.seed)
    if recognizer is None:
        from .recognition import get_recognizer

        recognizer = get_recognizer(cfg.recognizer)
    recognizer = recognizer.to(dev)
    if cfg.finetune_recognizer:
        recognizer.requires_grad_(True)
    ident = IdentityLoss(recognizer, cfg.identity)
    if cfg.lambda_rate:
        if rate_prior is None:
            raise TrainingError("lambda_rate > 0 needs the context prior of the starting weights (rate_prior)")
        model.attach_rate(rate_prior)
    model = model.to(dev).train()
    params = list(model.parameters()) + (list(recognizer.parameters()) if cfg.finetune_recognizer else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n_val = min(cfg.val_images, max(0, len(data) - 1))
    val_idx = list(range(len(data) - n_val, len(data)))
    train_data = AlignedImageSet.__new__(AlignedImageSet)
    train_data.images = data.images[: len(data) - n_val]
    train_data.thetas = data.thetas[: len(data) - n_val]
    train_data.names = data.names[: len(data) - n_val]

    step = 0
    ckpt = out / "checkpoint.pt"
    if resume:
        if not ckpt.exists():
            raise TrainingError(f"cannot resume: {ckpt} does not exist")
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(f"{ckpt} is a checkpoint of another format version")
        old = dict(state["config"])
        new = cfg.to_dict()
        defaults = JointConfig().to_dict()  # a field added since the checkpoint was written has its default there
        diff = [k for k in new if k not in cfg.RESUMABLE_CHANGES and old.get(k, defaults[k]) != new[k]]
        if diff:
            raise TrainingError(f"cannot resume {ckpt} with a different config: {', '.join(diff)}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if cfg.finetune_recognizer and "recognizer" in state:
            recognizer.load_state_dict(state["recognizer"])
        step = int(state["step"])

    def save_checkpoint() -> None:
        atomic_save({
            "version": CHECKPOINT_VERSION, "config": cfg.to_dict(), "step": step,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            **({"recognizer": recognizer.state_dict()} if cfg.finetune_recognizer else {}),
        }, ckpt)

    def set_lr(value: float) -> None:
        for group in opt.param_groups:
            group["lr"] = value

    if cfg.lr_drop_at and step >= cfg.lr_drop_at:
        set_lr(cfg.lr * 0.1)
    loss_fn = JointLoss(lambda_mse=cfg.lambda_mse, lambda_id=cfg.lambda_id, identity_fn=lambda a, b: torch.zeros(()),
                        lambda_rate=cfg.lambda_rate)
    hist_path = out / "history.jsonl"
    if not resume and hist_path.exists():
        hist_path.unlink()
    t0 = time.time()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    while step < end:
        if time_limit_s is not None:
            elapsed = time.time() - t0
            if not cfg.lr_drop_at and elapsed >= 0.8 * time_limit_s:
                cfg = dataclasses.replace(cfg, lr_drop_at=step)
                set_lr(cfg.lr * 0.1)
            if elapsed >= time_limit_s:
                cfg = dataclasses.replace(cfg, steps=step)
                end = step
                save_checkpoint()
                break
        if cfg.lr_drop_at and step == cfg.lr_drop_at:
            set_lr(cfg.lr * 0.1)
        x, th = train_data.batch(step, cfg.batch_size, cfg.seed, cfg.jitter)
        x, th = x.to(dev), th.to(dev)
        out_m = model(x)
        loss_fn.identity_fn = lambda a, b, th=th: ident(a, b, th)
        weight = None
        if cfg.background_weight != 1.0:
            weight = face_weights(th, x.shape[-2], x.shape[-1], cfg.background_weight)
        terms = loss_fn(x, out_m, weight)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == end:
            row = {"step": step, **{k: float(v.detach()) for k, v in terms.items()}, "time_s": round(time.time() - t0, 2)}
            with open(hist_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if verbose:
                print(f"[joint {cfg.rate}] step {step}/{cfg.steps} loss {row['loss']:.5f} "
                      f"psnr {row['psnr']:.2f} id {row.get('identity', 0):.4f}"
                      + (f" bpp {row['bpp']:.4f}" if "bpp" in row else ""), flush=True)
        if step % cfg.checkpoint_every == 0 or step == end:
            save_checkpoint()
    summary: dict[str, Any] = {
        "rate_point": cfg.rate, "steps_done": step, "steps": cfg.steps, "finished": step >= cfg.steps,
        "config": cfg.to_dict(), "train_images": len(train_data), "val_images": [data.names[i] for i in val_idx],
        "device": str(dev), "hardware": hardware_description(dev), "train_time_s": round(time.time() - t0, 1),
        "torch": torch.__version__, "pack": bool(getattr(data, "from_pack", False)),
    }
    if time_limit_s is not None:
        summary["time_limit_s"] = time_limit_s
    if step >= cfg.steps:
        if val_idx:
            summary.update(validate(model, ident, data, val_idx, dev))
        atomic_save({"rate_point": model.rate_point.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
    model.attach_rate(None)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def install_joint(run_dir: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None,
                  base_entry: dict[str, Any] | None = None, variant: str | None = None) -> dict[str, Any]:
    """Ship a finished joint run, with the record of how it was made.

    A run with a face-weighted distortion (``background_weight < 1``) is the ``jointface``
    variant; otherwise one trained with the rate term (``lambda_rate > 0``) is the
    ``jointrate`` variant (``facekit-jointrate-entropy``), one without it the ``joint``
    variant (the paper's phase two) (:meth:`JointConfig.variant`). ``variant`` may only
    confirm that choice, so weights trained for one recipe never replace another's.
    """
    from .codecs.learned import install_weights
    from .models.autoencoder import RatePoint

    run = Path(run_dir)
    summary = json.loads((run / "summary.json").read_text())
    if not summary.get("finished"):
        raise TrainingError(f"joint run {run} has not finished ({summary.get('steps_done')}/{summary.get('steps')})")
    blob = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    cfg = summary["config"]
    bg = float(cfg.get("background_weight", 1.0))
    made_as = JointConfig(lambda_rate=float(cfg.get("lambda_rate") or 0.0), background_weight=bg).variant()
    if variant is not None and variant != made_as:
        raise TrainingError(
            f"joint run {run} was trained with lambda_rate {cfg.get('lambda_rate', 0.0)} and background weight "
            f"{bg}: it ships as the {made_as!r} variant, not {variant!r}"
        )
    data_desc = ("LFW deep-funneled, identity-disjoint split (people in no pair of pairs.txt), whole 250x250 "
                 "images aligned by dlib's detector + 5 landmarks, minus the held-out images")
    if summary.get("pack"):
        data_desc += " (read from a training pack, facekit joint --write-pack: the same files, decoded by Pillow)"
    training = {
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
        "train_time_s": summary["train_time_s"],
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
    return install_weights(model, made_as, folder=folder, info={"training": training})
