"""Distortion training of the learned codec, on CPU or CUDA, single process or DDP.

Phase one of Bian et al. (arXiv:1907.01714): train the compression and reconstruction
networks of one rate point for distortion (MSE, optionally plus MS-SSIM) on faces whose
identities the evaluation never sees: the identity-disjoint split of LFW
(:func:`facekit.data.lfw.identity_disjoint_split`, 1,549 images of 1,468 people), or
any folder of images. A few of them (``val_images``, chosen by a hash of the name) are
held out to validate on.

Reproducibility: every random choice of a sample (which image, crop position, flip,
colour jitter) comes from a generator seeded by ``(seed, sample position)``, so the data
order is a pure function of the seed and the number of samples seen; a checkpoint stores
the model, optimiser, scheduler, the global RNG states and that position, so a run
resumed from a checkpoint is bit-identical (on CPU) to one that never stopped.

With ``torchrun`` (``WORLD_SIZE`` > 1) each process takes every ``world_size``-th
sample of the same global batch and DistributedDataParallel averages the gradients
(NCCL on CUDA, gloo on CPU); only rank 0 writes checkpoints and logs. On CUDA the
forward pass runs under bf16 autocast (``amp``); losses are computed in float32.

Outputs in ``out_dir``: ``checkpoint.pt`` (latest, written atomically),
``history.jsonl`` and ``history.csv`` (one row per logged step), ``config.json``,
``model.pt`` (final weights, ``{"rate_point", "state_dict"}``) and ``summary.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

from .errors import TrainingError
from .losses import JointLoss, distortion_loss, psnr
from .models.autoencoder import FaceCodecNet, RatePoint, get_rate_point, save_weights

CHECKPOINT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints and ``config.json``)."""

    rate: str = "q3"
    steps: int = 2000
    #: global batch (split across DDP processes); 32 crops of 128x128 fit a 16 GB GPU easily
    batch_size: int = 32
    crop: int = 128
    lr: float = 5e-4
    warmup: int = 50
    #: final learning rate as a fraction of ``lr`` (cosine decay)
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    seed: int = 0
    loss: str = "mse"
    lambda_msssim: float = 0.1
    #: bf16 autocast on CUDA (ignored on CPU)
    amp: bool = True
    checkpoint_every: int = 200
    log_every: int = 20
    val_every: int = 500
    val_images: int = 16
    #: colour jitter strength (brightness/contrast/saturation, +-)
    jitter: float = 0.1
    #: overrides of the rate point's fields (e.g. {"dec_widths": [16, 8]} for tests)
    arch: dict[str, Any] = field(default_factory=dict)
    #: start from these weights (a run's model.pt or a shipped weights file), e.g. for
    #: phase two (joint training with an identity term) from the distortion weights
    init: str | None = None

    def rate_point(self) -> RatePoint:
        rp = get_rate_point(self.rate)
        if self.arch:
            changes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.arch.items()}
            rp = rp.replace(**changes)
        return rp

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    #: fields that may change when a run is resumed (everything else must match)
    RESUMABLE_CHANGES = ("steps", "checkpoint_every", "log_every", "val_every")


# --------------------------------------------------------------------------- data


class ImageSet:
    """Training images in memory (uint8 ``(H, W, 3)`` each) plus deterministic augmentation."""

    def __init__(self, images: Sequence[np.ndarray], names: Sequence[str]) -> None:
        if not images:
            raise TrainingError("no training images")
        self.images = [torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)) for im in images]
        self.names = list(names)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, position: int, seed: int, crop: int, jitter: float) -> torch.Tensor:
        """The augmented crop ``(3, crop, crop)`` in [0, 1] at a global sample position."""
        n = len(self.images)
        epoch, offset = divmod(position, n)
        perm_gen = torch.Generator().manual_seed(_mix(seed, epoch, 0x5EED))
        index = int(torch.randperm(n, generator=perm_gen)[offset])
        g = torch.Generator().manual_seed(_mix(seed, position, 0xA06))
        img = self.images[index]
        h, w = img.shape[:2]
        r = torch.rand(8, generator=g).tolist()
        if h < crop or w < crop:
            scale = crop / min(h, w)
            t = img.permute(2, 0, 1)[None].float()
            t = F.interpolate(t, size=(max(crop, round(h * scale)), max(crop, round(w * scale))), mode="bilinear", align_corners=False)
            img_t = t[0]
            h, w = img_t.shape[-2:]
        else:
            img_t = None
        top = int(r[0] * (h - crop + 1))
        left = int(r[1] * (w - crop + 1))
        if img_t is None:
            x = img[top : top + crop, left : left + crop].permute(2, 0, 1).float()
        else:
            x = img_t[:, top : top + crop, left : left + crop]
        x = x / 255.0
        if r[2] < 0.5:
            x = x.flip(-1)
        if jitter > 0:
            b = 1.0 + jitter * (2 * r[3] - 1)
            c = 1.0 + jitter * (2 * r[4] - 1)
            s = 1.0 + jitter * (2 * r[5] - 1)
            x = x * b
            mean = x.mean()
            x = (x - mean) * c + mean
            gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
            x = (x - gray) * s + gray
            x = x.clamp(0.0, 1.0)
        return x.contiguous()

    def batch(self, step: int, batch_size: int, seed: int, crop: int, jitter: float, rank: int = 0, world: int = 1) -> torch.Tensor:
        """This process's share of the global batch of ``step``: samples ``rank, rank+world, ...``."""
        start = step * batch_size
        xs = [self.sample(start + j, seed, crop, jitter) for j in range(rank, batch_size, world)]
        return torch.stack(xs)


def _mix(*values: int) -> int:
    h = hashlib.sha256(repr(values).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _held_out(names: Sequence[str], count: int) -> set[str]:
    """A deterministic handful of names to validate on, chosen by a hash of the name."""
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return set(ranked[: max(0, min(count, len(names) - 1))])


def load_images_folder(folder: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[str]]:
    """Every image under a folder (recursively), as RGB uint8, with its relative name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, names = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise TrainingError(f"{p} cannot be read as an image: {e}") from e
        names.append(str(p.relative_to(folder)))
    if not images:
        raise TrainingError(f"no images in {folder}")
    return images, names


def load_split(root: str | os.PathLike[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The identity-disjoint split of LFW (people in no pair of ``pairs.txt``), loaded."""
    from .data.lfw import identity_disjoint_split, open_lfw

    lfw = open_lfw(root)
    split = identity_disjoint_split(lfw)
    names = sorted(n for imgs in split.values() for n in imgs)
    return [lfw.load(n) for n in names], names


def make_datasets(
    images: Sequence[np.ndarray], names: Sequence[str], val_images: int
) -> tuple[ImageSet, list[np.ndarray], list[str]]:
    """Split loaded images into a training :class:`ImageSet` and held-out validation images."""
    held = _held_out(names, val_images)
    train = [(im, n) for im, n in zip(images, names, strict=True) if n not in held]
    val = [(im, n) for im, n in zip(images, names, strict=True) if n in held]
    return ImageSet([t[0] for t in train], [t[1] for t in train]), [v[0] for v in val], [v[1] for v in val]


# --------------------------------------------------------------------------- helpers


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to ``min_lr_ratio``."""

    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / max(1, cfg.warmup)
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        t = min(1.0, t)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a half file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def hardware_description(device: torch.device) -> str:
    """CPU model / GPU name and thread count, for the record."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} thread(s)"


@torch.no_grad()
def evaluate(model: FaceCodecNet, images: Sequence[np.ndarray], device: torch.device) -> dict[str, float]:
    """Mean PSNR (dB) and real PNG bpp of whole images through compress/decompress."""
    if not images:
        return {}
    was_training = model.training
    model.eval()
    ps, bpps = [], []
    for im in images:
        x = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float().div(255).to(device)
        enc = model.compress(x, effort=1)
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        x_hat = torch.round(x_hat * 255) / 255
        ps.append(float(psnr(x, x_hat)[0]))
        bpps.append(8.0 * len(enc["strings"][0]) / (im.shape[0] * im.shape[1]))
    model.train(was_training)
    return {"val_psnr": float(np.mean(ps)), "val_png_bpp": float(np.mean(bpps))}


def _history_rows(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def _write_history(out: Path, rows: list[dict[str, Any]]) -> None:
    _atomic_write_text(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    _atomic_write_text(out / "history.csv", buf.getvalue())


# --------------------------------------------------------------------------- training


def _load_init(model: FaceCodecNet, path: str) -> None:
    """Initialise from a run's ``model.pt`` or a shipped weights file of the same rate point."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        rp = RatePoint.from_dict(blob["rate_point"])
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"--init {path} cannot be read as facekit weights: {e}") from e
    if rp != model.rate_point:
        raise TrainingError(f"--init {path} holds rate point {rp.name} with another architecture than {model.rate_point.name}")
    model.load_state_dict(sd)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    loss_fn: JointLoss | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train one rate point; returns the summary (also written to ``summary.json``).

    Data: ``images``/``names`` given directly, else ``images_dir`` (a folder of images),
    else the identity-disjoint LFW split under ``root`` (or ``$FACEKIT_LFW``).
    ``resume`` continues from ``out_dir/checkpoint.pt``. ``stop_after`` stops (after
    checkpointing) once that many steps are done in total, as an interruption would;
    ``threads`` sets torch's CPU threads.
    """
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    world, rank, local = _dist_info()
    distributed = world > 1
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if cfg.batch_size % world:
        raise TrainingError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    if images is None:
        if images_dir is not None:
            images, names = load_images_folder(images_dir)
        else:
            images, names = load_split(root)
    if names is None:
        names = [f"image{i:05d}" for i in range(len(images))]
    data, val_imgs, val_names = make_datasets(images, names, cfg.val_images)

    seed_everything(cfg.seed)
    rp = cfg.rate_point()
    model = FaceCodecNet(rp)
    if cfg.init and not resume:
        _load_init(model, cfg.init)
    model = model.to(dev)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    loss_fn = loss_fn or distortion_loss(cfg.loss, cfg.lambda_msssim)
    start = 0
    history: list[dict[str, Any]] = []
    elapsed_before = 0.0

    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"--resume: no checkpoint at {ckpt_path}")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise TrainingError(f"checkpoint {ckpt_path} cannot be read: {e}") from e
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise TrainingError(f"checkpoint {ckpt_path} has version {ckpt.get('version')}, expected {CHECKPOINT_VERSION}")
        old = dict(ckpt["config"])
        new = cfg.to_dict()
        diff = [k for k in new if k not in TrainConfig.RESUMABLE_CHANGES and old.get(k) != new[k]]
        if diff:
            raise TrainingError(
                "cannot resume: the checkpoint was made with a different "
                + ", ".join(f"{k} ({old.get(k)!r} != {new[k]!r})" for k in diff)
            )
        if ckpt.get("world_size", 1) != world:
            raise TrainingError(f"cannot resume: checkpoint made with {ckpt.get('world_size')} processes, now {world}")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("steps") != cfg.steps:
            # a longer/shorter run: the schedule's shape follows the new total
            sched.lr_lambdas = [lr_lambda(cfg)]
            for g, lr0 in zip(opt.param_groups, sched.base_lrs, strict=True):
                g["lr"] = lr0 * sched.lr_lambdas[0](ckpt["step"])
        rng = ckpt["rng"]
        _set_rng_state(rng[rank] if isinstance(rng, list) else rng)
        start = int(ckpt["step"])
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        history = _history_rows(out / "history.jsonl", start)

    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    use_amp = cfg.amp and dev.type == "cuda"
    if rank == 0:
        _atomic_write_text(out / "config.json", json.dumps({"config": cfg.to_dict(), "rate_point": rp.to_dict()}, indent=2))

    def save_checkpoint(step: int, elapsed: float) -> None:
        rng = _rng_state()
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if rank == 0:
            atomic_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "config": cfg.to_dict(),
                    "rate_point": rp.to_dict(),
                    "step": step,
                    "steps": cfg.steps,
                    "samples_seen": step * cfg.batch_size,
                    "world_size": world,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": rng,
                    "elapsed_s": elapsed,
                },
                ckpt_path,
            )
            _write_history(out, history)
        if distributed:
            dist.barrier()

    t0 = time.time()
    cpu0 = time.process_time()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    step = start
    window_t, window_n = time.time(), 0
    for step in range(start, end):
        x = data.batch(step, cfg.batch_size, cfg.seed, cfg.crop, cfg.jitter, rank, world).to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            out_d = net(x)
        terms = loss_fn(x, out_d)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        window_n += x.shape[0] * world
        done = step + 1
        last = done == end
        if done % cfg.log_every == 0 or last or (done % cfg.val_every == 0):
            row: dict[str, Any] = {"step": done, "lr": opt.param_groups[0]["lr"]}
            row.update({k: float(v.detach()) for k, v in terms.items()})
            now = time.time()
            row["images_per_s"] = window_n / max(now - window_t, 1e-9)
            row["elapsed_s"] = elapsed_before + now - t0
            window_t, window_n = now, 0
            if rank == 0 and (done % cfg.val_every == 0 or done == cfg.steps):
                row.update(evaluate(model, val_imgs, dev))
            if rank == 0:
                history.append(row)
                if verbose:
                    print(json.dumps(row), flush=True)
        if done % cfg.checkpoint_every == 0 or last:
            save_checkpoint(done, elapsed_before + time.time() - t0)
    if start >= end:
        step = start - 1
    total = elapsed_before + time.time() - t0
    summary: dict[str, Any] = {}
    if rank == 0:
        final = step + 1
        summary = {
            "rate_point": rp.name,
            "steps_done": final,
            "steps": cfg.steps,
            "finished": final >= cfg.steps,
            "train_images": len(data),
            "val_images": val_names,
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "world_size": world,
            "device": str(dev),
            "hardware": hardware_description(dev),
            "train_time_s": total,
            "cpu_time_s_this_process": time.process_time() - cpu0,
            "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()),
        }
        if final >= cfg.steps:
            last_row = history[-1] if history else {}
            summary.update({k: v for k, v in last_row.items() if k.startswith("val_")} or evaluate(model, val_imgs, dev))
        if final >= cfg.steps:
            atomic_save({"rate_point": rp.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
        _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if distributed:
        dist.barrier()
    return summary


def export_weights(model_file: str | os.PathLike[str], dest: str | os.PathLike[str], *, half: bool = True) -> dict[str, Any]:
    """Turn a run's ``model.pt`` into the small file facekit ships (float16 by default).

    Returns ``{"sha256", "fingerprint", "bytes"}`` of the written file (see
    :func:`facekit.models.autoencoder.save_weights`).
    """
    blob = torch.load(model_file, map_location="cpu", weights_only=True)
    model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    return save_weights(model, Path(dest), half=half)


def install_run(
    run_dir: str | os.PathLike[str],
    variant: str = "mse",
    *,
    folder: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    data_note: str | None = None,
) -> dict[str, Any]:
    """Ship a finished run: float16 weights plus a manifest entry saying how they were made.

    The entry records the training data, steps, batch, crop, seed, hardware and time,
    and the bpp (whole containers) and PSNR of the shipped weights on the run's
    held-out validation images (re-loaded from LFW's split under ``root``).
    """
    from .codecs.learned import LearnedCodec, install_weights

    run = Path(run_dir)
    summary = json.loads((run / "summary.json").read_text())
    if not summary.get("finished"):
        raise TrainingError(f"run {run} has not finished ({summary.get('steps_done')}/{summary.get('steps')} steps)")
    blob = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    model = FaceCodecNet(RatePoint.from_dict(blob["rate_point"]))
    model.load_state_dict(blob["state_dict"])
    cfg = summary["config"]
    training = {
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
    entry = install_weights(model, variant, folder=folder, info={"training": training})
    # measure the shipped (float16) weights through the codec: whole container bytes
    codec = LearnedCodec(variant, folder=folder)
    from .data.lfw import open_lfw

    lfw = open_lfw(root)
    imgs = [lfw.load(n) for n in summary["val_images"]]
    rate = model.rate_point.name
    bpps, ps = [], []
    for im in imgs:
        data = codec.encode(im, rate)
        out = codec.decode(data)
        bpps.append(8.0 * len(data) / (im.shape[0] * im.shape[1]))
        err = np.mean((out.astype(np.float64) - im.astype(np.float64)) ** 2)
        ps.append(10 * np.log10(255.0**2 / max(err, 1e-12)))
    metrics = {
        "held_out_split": {"images": len(imgs), "bpp": round(float(np.mean(bpps)), 5), "psnr": round(float(np.mean(ps)), 3)}
    }
    update_manifest(variant, rate, {"metrics": metrics}, folder=folder)
    entry["metrics"] = metrics
    return entry


def update_manifest(variant: str, rate: str, fields: dict[str, Any], *, folder: str | os.PathLike[str] | None = None) -> None:
    """Merge ``fields`` into a manifest entry (dicts merged one level deep); atomic rewrite."""
    from .codecs.learned import MANIFEST, manifest_lock, model_name, read_manifest, weights_dir

    folder = Path(folder or weights_dir())
    with manifest_lock(folder):
        _update_manifest(folder, MANIFEST, model_name(variant, rate), fields, read_manifest(folder))


def _update_manifest(folder: Path, manifest_name: str, name: str, fields: dict[str, Any], manifest: dict[str, Any]) -> None:
    entry = manifest["models"][name]
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(entry.get(k), dict):
            entry[k] = {**entry[k], **v}
        else:
            entry[k] = v
    _atomic_write_text(folder / manifest_name, json.dumps(manifest, indent=2) + "\n")


def fit_prior(
    variant: str,
    rate: str,
    *,
    folder: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    images: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    batch: int = 16,
    layout: int = 3,
    seed: int = 0,
    steps: int = 3000,
) -> dict[str, Any]:
    """Fit the context prior of shipped weights on their training images and install it.

    The codes of the training images (the identity-disjoint LFW split minus the weights'
    held-out images, or ``images`` given directly) are counted into a
    :class:`~facekit.models.quantizer.ContextPrior`; it is saved beside the weights.
    ``layout`` 3 (the default) chooses its neighbours on those codes
    (:meth:`~facekit.models.quantizer.ContextPrior.select`, ``facekit-prior/3``); 2 fits
    the fixed left-neighbour layout (``facekit-prior/2``), 1 the row-by-row one
    (``facekit-prior/1``). ``layout`` 4 trains the integer networks of
    :class:`~facekit.models.neural_prior.NeuralPrior` (``facekit-prior/4``) on those codes
    and on the codes of the images' mirror images (``steps`` batches, drawn by ``seed``).
    """
    from .codecs.learned import install_prior, load_model, read_manifest
    from .entropy_models import ContextPrior, NeuralPrior

    if layout not in (1, 2, 3, 4):
        raise ValueError(f"prior layout must be 1, 2, 3 or 4, got {layout}")
    model, entry = load_model(variant, rate, folder=folder)
    if images is None:
        images, names = load_split(root)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    held = set(entry.get("training", {}).get("held_out_images", []))
    train_imgs = [im for im, n in zip(images, names, strict=True) if n not in held]
    if not train_imgs:
        raise TrainingError("no images to fit the prior on")
    t0 = time.time()
    if layout == 4:  # the network has more to learn than a table: the mirror images' codes double the data
        train_imgs = train_imgs + [np.ascontiguousarray(im[:, ::-1]) for im in train_imgs]
    codes: list[np.ndarray] = []
    by_size: dict[tuple[int, int], list[np.ndarray]] = {}
    for im in train_imgs:
        by_size.setdefault(im.shape[:2], []).append(im)
    for group in by_size.values():
        for i in range(0, len(group), batch):
            x = torch.from_numpy(np.stack(group[i : i + batch])).permute(0, 3, 1, 2).float().div(255)
            codes.extend(model.codes(x).numpy())
    info: dict[str, Any] = {}
    if layout == 4:
        if len({q.shape for q in codes}) != 1:
            raise TrainingError("a facekit-prior/4 prior is fitted on images of one size")
        prior: Any = NeuralPrior.fit(codes, model.rate_point.bits, steps=steps, seed=seed)
        info["fitted_on"] = (
            f"codes of {len(codes) // 2} training images and of their mirror images "
            "(the weights' training set, held-out images excluded)"
        )
        info["training"] = {**prior.training, "threads": torch.get_num_threads()}
    else:
        if layout == 3:
            prior = ContextPrior.select(codes, model.rate_point.bits)
        else:
            prior = ContextPrior.fit(codes, model.rate_point.bits, left=layout == 2)
        info["fitted_on"] = f"codes of {len(codes)} training images (the weights' training set, held-out images excluded)"
        info["alpha"] = prior.alpha
    info["fit_time_s"] = round(time.time() - t0, 1)
    if layout == 3:
        info["beta"] = prior.beta
        info["selection"] = (
            "greedy forward selection on the codes of a fifth of those images (seed 0) under a prior "
            "counted on the rest; held-out bytes per image after each step: "
            + ", ".join(f"{'+'.join(s['neighbours']) or 'none'} {s['held_out_bytes']}" for s in prior.selection)
        )
    meta = install_prior(prior, variant, rate, folder=folder, info=info)
    assert read_manifest(folder)["models"][f"{variant}-{rate}"]["prior"]["sha256"] == meta["sha256"]
    return meta


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import sys

    from .codecs.registry import VARIANTS

    ap = argparse.ArgumentParser(prog="python -m facekit.train", description="ship finished runs as facekit weights")
    ap.add_argument("command", choices=["install", "prior"])
    ap.add_argument("runs", nargs="+", help="install: run folders (model.pt, summary.json); prior: rate points")
    ap.add_argument("--variant", default="mse", choices=list(VARIANTS))
    ap.add_argument("--folder", default=None, help="weights folder (default facekit/weights)")
    ap.add_argument("--root", default=None, help="LFW (default $FACEKIT_LFW)")
    ap.add_argument("--layout", type=int, default=3, choices=[1, 2, 3, 4],
                    help="prior: 3 chooses the neighbours on the training codes (facekit-prior/3, the default); "
                         "4 trains small integer networks over a wide causal window (facekit-prior/4); "
                         "2 the fixed up/left/diagonal/previous-channel context (facekit-prior/2); 1 the row-by-row one")
    a = ap.parse_args()
    if a.command == "prior":
        imgs, nms = load_split(a.root)
        for r in a.runs:
            m = fit_prior(a.variant, r, folder=a.folder, images=imgs, names=nms, layout=a.layout)
            print(json.dumps({"rate": r, **m}), file=sys.stderr)
    else:
        for r in a.runs:
            e = install_run(r, a.variant, folder=a.folder, root=a.root)
            print(json.dumps({"file": e["file"], "bytes": e["bytes"], **e["metrics"]}), file=sys.stderr)
