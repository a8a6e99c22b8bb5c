"""The one training loop of the learned codec, for both phases of Bian et al. (arXiv:1907.01714).

Phase one (distortion) and phase two (joint fine-tuning with a face recogniser) differ
only in their data, their loss terms and their learning-rate schedule; :func:`fit` runs
either. Each step it draws the global batch of that step (a function of the seed and the
step, :mod:`facekit.training.data`), runs the codec (under bf16 autocast on CUDA when the
config asks), sums the loss terms (:class:`~facekit.training.losses.Objective`), clips the
gradient and takes an Adam step with the config's learning rate for that step
(:meth:`~facekit.training.config.TrainConfig.lr_factor`).

Outputs in ``out_dir``: ``checkpoint.pt`` (written atomically every ``checkpoint_every``
steps and at the end: model, optimiser, scheduler, RNG states, step), ``history.jsonl``
and ``history.csv`` (one row per logged step), ``config.json``, ``model.pt`` (final
weights, ``{"rate_point", "state_dict"}``) and ``summary.json``. A run resumed from its
checkpoint repeats, bit for bit on CPU, the run that never stopped.

With ``torchrun`` (``WORLD_SIZE`` > 1) each process takes every ``world_size``-th sample
of the same global batch and DistributedDataParallel averages the gradients (NCCL on
CUDA, gloo on CPU); only rank 0 writes checkpoints and logs.

``time_limit_s`` ends a run once that much training time has passed in this process (for
a lent GPU's fixed budget); the config's :meth:`~facekit.training.config.TrainConfig.at_last_fifth`
may change the schedule for the last fifth of it, and the summary's config records the
steps done, so the same config without the limit repeats the run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import TrainingError
from ..fileio import atomic_write, write_json
from ..models.autoencoder import FaceCodecNet
from .config import TrainConfig
from .losses import Objective

#: the checkpoint format; version 1 (two loops, before facekit.training) does not resume
CHECKPOINT_VERSION = 2

#: ``batches(step, rank, world)``: this process's images of a step's global batch, and
#: their face transforms (or ``None`` when the objective does not need them)
BatchFn = Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor | None]]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def dist_info() -> tuple[int, int, int]:
    """``(world size, rank, local rank)`` from torchrun's environment (1, 0, 0 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def training_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on (default: this process's CUDA device, else the CPU); starts
    the process group under torchrun."""
    world, _, local = dist_info()
    dev = torch.device(device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename (never a half file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), fsync=True)


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


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of a ``history.jsonl`` up to step ``upto`` (those a checkpoint of that step covers)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] <= upto]


def write_history(out: Path, rows: list[dict[str, Any]]) -> None:
    """``history.jsonl`` and ``history.csv`` (columns: every key in order of appearance)."""
    atomic_write(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write(out / "history.csv", buf.getvalue())


def read_checkpoint(path: Path, cfg: TrainConfig, world: int, origin: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint to resume ``cfg`` from; refuses a missing, unreadable, older or different one,
    and one of a run that started from another ``origin`` (:func:`check_origin`)."""
    if not path.exists():
        raise TrainingError(f"cannot resume: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"checkpoint {path} cannot be read: {e}") from e
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"checkpoint {path} has format version {ckpt.get('version')}; this facekit resumes only version "
            f"{CHECKPOINT_VERSION} (older checkpoints cannot resume: start the run again)"
        )
    if ckpt.get("phase") != cfg.PHASE:
        raise TrainingError(f"cannot resume {path}: it is a checkpoint of {ckpt.get('phase')} training, not {cfg.PHASE}")
    old, new, defaults = dict(ckpt["config"]), cfg.to_dict(), type(cfg)().to_dict()
    diff = [k for k in new if k not in cfg.RESUMABLE_CHANGES and old.get(k, defaults[k]) != new[k]]
    if diff:
        raise TrainingError(
            f"cannot resume {path} with a different config: "
            + ", ".join(f"{k} ({old.get(k, defaults[k])!r} != {new[k]!r})" for k in diff)
        )
    if ckpt.get("world_size", 1) != world:
        raise TrainingError(f"cannot resume: checkpoint made with {ckpt.get('world_size')} processes, now {world}")
    if origin:
        check_origin(path, ckpt, origin)
    return ckpt


def check_origin(path: Path, ckpt: Mapping[str, Any], origin: Mapping[str, Any]) -> None:
    """Refuse to resume the checkpoint ``ckpt`` (read from ``path``) with another ``origin``.

    The origin is what a run starts from beyond its config (the joint phase: the sha256 of
    phase one's weights); the checkpoint keeps it. A checkpoint without one is compared with
    the ``summary.json`` beside it (which holds the run's ``record``); keys found in neither are
    not compared.
    """
    recorded = ckpt.get("origin")
    if recorded is None:
        try:
            recorded = json.loads((path.parent / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            recorded = {}
    diff = [k for k in origin if k in recorded and recorded[k] != origin[k]]
    if diff:
        raise TrainingError(
            f"cannot resume {path}: the run started from other inputs than this one: "
            + ", ".join(f"{k} {recorded[k]!r}, now {origin[k]!r}" for k in diff)
            + " (continue it from what it started from, or start it again in an empty folder)"
        )


def _print_row(cfg: TrainConfig, row: Mapping[str, Any]) -> None:
    extra = "".join(f" {k} {row[k]:.4f}" for k in ("identity", "bpp", "ms_ssim") if k in row)
    val = "".join(f" {k} {v:.4f}" for k, v in row.items() if k.startswith("val_"))
    print(f"[{cfg.PHASE} {cfg.rate}] step {row['step']}/{cfg.steps} loss {row['loss']:.5f} psnr {row['psnr']:.2f}"
          f"{extra} lr {row['lr']:.3g} {row['images_per_s']:.1f} img/s{val}", flush=True)


def fit(
    cfg: TrainConfig,
    model: FaceCodecNet,
    out_dir: str | os.PathLike[str],
    *,
    batches: BatchFn,
    objective: Objective,
    validate: Callable[[FaceCodecNet], dict[str, float]],
    device: torch.device,
    modules: Mapping[str, nn.Module] | None = None,
    record: Mapping[str, Any] | None = None,
    origin: Mapping[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train ``model`` for ``cfg.steps`` steps (or until ``stop_after`` or ``time_limit_s``); returns the summary.

    ``batches`` draws each step's data, ``objective`` turns the model's output into loss
    terms, ``validate`` measures the model on held-out images (every ``cfg.val_every`` steps
    and at the end). ``modules`` are further networks trained with the codec (e.g. the
    recogniser, when it is fine-tuned too); their state goes into the checkpoint.
    ``record`` (image counts, held-out names, ...) is merged into the summary. ``origin``
    (JSON values) says what the run starts from beyond its config, e.g. the sha256 of its
    initial weights: it goes into the checkpoint and ``config.json``, and a resume with
    another origin is refused (:func:`check_origin`). ``resume`` continues from
    ``out_dir/checkpoint.pt``; ``stop_after`` stops (after checkpointing) once that many
    steps are done in total, as an interruption would (a TrainingError when an unfinished
    run has done that many already: nothing would train).
    """
    out = Path(out_dir)
    world, rank, _ = dist_info()
    distributed = world > 1
    if cfg.batch_size % world:
        raise TrainingError(f"batch size {cfg.batch_size} is not divisible by the {world} processes")
    modules = dict(modules or {})
    if distributed and modules:
        raise TrainingError("training further networks beside the codec (e.g. the recogniser) needs a single process")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    model = model.to(device)
    model.train()
    params = list(model.parameters()) + [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.lr_factor(s))  # reads the current cfg
    start, elapsed_before = 0, 0.0
    history: list[dict[str, Any]] = []
    if resume:
        ckpt = read_checkpoint(ckpt_path, cfg, world, origin)
        model.load_state_dict(ckpt["model"])
        for name, m in modules.items():
            m.load_state_dict(ckpt["modules"][name])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start = int(ckpt["step"])
        for g, lr0 in zip(opt.param_groups, sched.base_lrs, strict=True):  # a longer run: the new schedule
            g["lr"] = lr0 * cfg.lr_factor(start)
        rng = ckpt["rng"]
        _set_rng_state(rng[rank] if isinstance(rng, list) else rng)
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        history = read_history(out / "history.jsonl", start)
        if stop_after is not None and stop_after <= start < cfg.steps:
            raise TrainingError(f"cannot stop {out} after step {stop_after}: it has done {start} of its "
                                f"{cfg.steps} steps already, so nothing would train")

    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_amp = cfg.amp and device.type == "cuda"
    if rank == 0:
        atomic_write(out / "config.json", json.dumps({"config": cfg.to_dict(), "rate_point": model.rate_point.to_dict(),
                                                      **({"origin": dict(origin)} if origin else {})}, indent=2))

    def save_checkpoint(step: int, elapsed: float) -> None:
        rng = _rng_state()
        if distributed:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        if rank == 0:
            write_history(out, history)  # first: a stop between the two keeps the rows the checkpoint covers
            atomic_save({
                "version": CHECKPOINT_VERSION, "phase": cfg.PHASE, "config": cfg.to_dict(),
                "rate_point": model.rate_point.to_dict(), "step": step, "steps": cfg.steps,
                "samples_seen": step * cfg.batch_size, "world_size": world, "model": model.state_dict(),
                "modules": {k: m.state_dict() for k, m in modules.items()}, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": rng, "elapsed_s": elapsed, "origin": dict(origin or {}),
            }, ckpt_path)
        if distributed:
            dist.barrier()

    t0, cpu0 = time.time(), time.process_time()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    step = start
    window_t, window_n = time.time(), 0
    while step < end:
        if time_limit_s is not None:
            elapsed = time.time() - t0
            if elapsed >= 0.8 * time_limit_s and cfg.at_last_fifth(step) is not cfg:
                cfg = cfg.at_last_fifth(step)
                for g, lr0 in zip(opt.param_groups, sched.base_lrs, strict=True):
                    g["lr"] = lr0 * cfg.lr_factor(step)
            if elapsed >= time_limit_s:
                cfg = dataclasses.replace(cfg, steps=step)
                end = step
                save_checkpoint(step, elapsed_before + time.time() - t0)
                break
        x, theta = batches(step, rank, world)
        x = x.to(device, non_blocking=True)
        theta = None if theta is None else theta.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out_m = net(x)
        terms = objective(x, out_m, theta)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        window_n += x.shape[0] * world
        step += 1
        validating = bool(cfg.val_every and step % cfg.val_every == 0) or step == cfg.steps
        if step % cfg.log_every == 0 or step == end or validating:
            row: dict[str, Any] = {"step": step, "lr": opt.param_groups[0]["lr"]}
            row.update({k: float(v.detach()) for k, v in terms.items()})
            now = time.time()
            row["images_per_s"] = window_n / max(now - window_t, 1e-9)
            row["elapsed_s"] = elapsed_before + now - t0
            window_t, window_n = now, 0
            if rank == 0 and validating:
                row.update(validate(model))
            if rank == 0:
                history.append(row)
                if verbose:
                    _print_row(cfg, row)
        if step % cfg.checkpoint_every == 0 or step == end:
            save_checkpoint(step, elapsed_before + time.time() - t0)

    summary: dict[str, Any] = {}
    if rank == 0:
        finished = step >= cfg.steps
        summary = {
            "phase": cfg.PHASE, "rate_point": model.rate_point.name, "steps_done": step, "steps": cfg.steps,
            "finished": finished, **(record or {}), "config": cfg.to_dict(), "seed": cfg.seed, "world_size": world,
            "device": str(device), "hardware": hardware_description(device),
            "train_time_s": elapsed_before + time.time() - t0,
            "cpu_time_s_this_process": time.process_time() - cpu0, "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()),
        }
        if time_limit_s is not None:
            summary["time_limit_s"] = time_limit_s
        if finished:
            last = history[-1] if history and history[-1]["step"] == step else {}
            summary.update({k: v for k, v in last.items() if k.startswith("val_")} or validate(model))
            atomic_save({"rate_point": model.rate_point.to_dict(), "state_dict": model.state_dict()}, out / "model.pt")
        write_json(out / "summary.json", summary, indent=2)
    if distributed:
        dist.barrier()
    return summary
