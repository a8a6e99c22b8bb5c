"""Embedding speed and peak memory of facekit's recognisers.

Measures align (``grid_sample`` from 250x250 LFW-sized images) + network, in inference
(``torch.no_grad``) and, with ``--backward``, with gradients to the pixels as training
through the recogniser needs. Each configuration runs in a fresh process so that peak
memory is its own: on CPU the growth of the peak resident set size over the process's
state after loading the model; on CUDA ``torch.cuda.max_memory_allocated``.

Usage::

    python benchmarks/embed_speed.py                       # dlib-resnet, batches 32 and 256
    python benchmarks/embed_speed.py --recognizer facenet-vggface2 --random-weights
    python benchmarks/embed_speed.py --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _measure(cfg: dict) -> dict:
    import numpy as np
    import torch

    from facekit.recognition import get_recognizer
    from facekit.recognition.align import DLIB_TEMPLATE_5, dlib_chip_matrix, pixel_to_theta

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    dev = torch.device(cfg["device"])
    kw = {"pretrained": None} if cfg["random_weights"] else {}
    rec = get_recognizer(cfg["recognizer"], device=dev, **kw)
    b = cfg["batch"]
    images = torch.randint(0, 256, (b, 3, 250, 250), dtype=torch.uint8, device=dev)
    # a typical LFW face: the template placed where LFW's faces are
    lm = (0.25 + DLIB_TEMPLATE_5) / 1.5 * 150 * 0.75 + [68, 70]
    theta = pixel_to_theta(dlib_chip_matrix(lm, rec.chip_size, 0.25), (250, 250), rec.chip_size)
    thetas = torch.from_numpy(np.repeat(theta[None], b, 0)).to(dev)

    def step() -> None:
        x = images.float() / 255.0
        if cfg["backward"]:
            x.requires_grad_(True)
            rec.embed(x, thetas).square().sum().backward()
        else:
            with torch.no_grad():
                rec.embed(x, thetas)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # model and inputs loaded
    step()  # warm-up (allocator, cuDNN autotuning, first-call overheads)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n, t0 = 0, time.perf_counter()
    while n < cfg["min_batches"] or time.perf_counter() - t0 < cfg["min_seconds"]:
        step()
        n += 1
    dt = time.perf_counter() - t0
    if dev.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        mem_kind = "cuda max_memory_allocated"
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
        mem_kind = "cpu peak RSS growth over the loaded model"
    return {
        **cfg,
        "recognizer_name": rec.name,
        "batches": n,
        "seconds": round(dt, 3),
        "embeddings_per_s": round(n * b / dt, 1),
        "ms_per_embedding": round(1000 * dt / (n * b), 2),
        "peak_mib": round(peak_mib, 1),
        "peak_rss_total_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory": mem_kind,
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }


def _run_isolated(cfg: dict) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (cfg,))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recognizer", default="dlib-resnet")
    p.add_argument(
        "--random-weights", action="store_true", help="facenet with pretrained=None (no download)"
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument(
        "--backward", action="store_true", help="also measure forward + backward to the pixels"
    )
    p.add_argument("--min-batches", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)

    import torch

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    results = []
    modes = [False, True] if args.backward else [False]
    for dev in devices:
        for backward in modes:
            for b in args.batch_sizes:
                cfg = {
                    "recognizer": args.recognizer,
                    "random_weights": args.random_weights,
                    "device": dev,
                    "batch": b,
                    "threads": args.threads,
                    "backward": backward,
                    "min_batches": args.min_batches,
                    "min_seconds": args.min_seconds,
                }
                r = _run_isolated(cfg)
                results.append(r)
                mode = "fwd+bwd" if backward else "inference"
                print(
                    f"{r['recognizer_name']:>16} {dev:>5} {mode:>9} batch {b:>4}: "
                    f"{r['embeddings_per_s']:8.1f} emb/s ({r['ms_per_embedding']:.2f} ms each), "
                    f"peak {r['peak_mib']:.0f} MiB ({r['memory']}; process peak {r['peak_rss_total_mib']:.0f} MiB)",
                    flush=True,
                )
    if args.json:
        from facekit.fileio import write_json
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
