"""Complexity of the second-generation codec (facekit.models.hyperprior): MACs per pixel and ms a face.

Counts the multiply-accumulates of ``compress`` (encoder) and ``decompress`` (decoder) of
one 250x250 face with torch's ``FlopCounterMode`` (MACs = FLOPs / 2; convolutions and
matrix products, the integer networks' float64 convolutions included; element-wise work
such as GDN's square roots is not counted), then times encode and decode on one thread, image
to file to uint8 pixels as each codec's ``encode`` and ``decode`` run, face by face (median of
``--rounds`` rounds over ``--n`` images), beside OpenJPEG (``jpeg2000``) and AVIF (``avif``), each
at the setting of its default sweep whose bpp is nearest the learned codec's. Every round times
every codec once (:func:`interleaved_ms`), so a slow spell of a shared machine slows them alike
and the ratios between them hold. The decoder is timed also with bfloat16 convolutions
in its synthesis (``facekit-hyperprior+bf16``: ``decompress --synthesis bfloat16``, the same
files), saying whether this CPU has bfloat16 dot products. Times are wall clock and, beside them, the
CPU time of the timing thread (which a loaded machine inflates less); the load average is
printed before and after. Prints what it measures; ``--json`` writes it.

Weights: ``--weights`` takes a training run's ``model.pt``, its ``checkpoint.pt`` (a run still
training; read only) or a weights-store file; ``--store NAME`` loads a stored model (sha256
checked); neither: untrained weights, which cost the same.

    python benchmarks/model_complexity.py --n 8 --rounds 3
    python benchmarks/model_complexity.py --weights runs/hp/rd/checkpoint.pt --rate 0.3
    python benchmarks/model_complexity.py --store hyperprior    # and the refining encoder, 10 steps
    python benchmarks/model_complexity.py --dec-widths 56 40 24     # a wider synthesis, untrained
    python benchmarks/model_complexity.py --keep-freed-memory        # glibc keeps freed memory

``--keep-freed-memory`` raises glibc's trim and mmap thresholds before timing
(:func:`facekit.threads.keep_freed_memory`, which ``facekit compress`` and ``decompress`` call): by
default glibc hands the decoder's freed megabytes back to the system and takes them again
as fresh pages, a few hundred page faults a decode.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import facekit  # noqa: E402, F401  (before torch, so that facekit's thread defaults apply: facekit.threads)

# isort: split
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from facekit.codecs import get_codec  # noqa: E402
from facekit.codecs.hyperprior import HyperpriorCodec, model_fingerprint  # noqa: E402
from facekit.codecs.names import HYPERPRIOR_REFINED  # noqa: E402
from facekit.fileio import sha256_file, write_json  # noqa: E402
from facekit.models.hyperprior import FaceHyperprior, HyperpriorArch  # noqa: E402
from facekit.models.refine import STEPS  # noqa: E402
from facekit.threads import keep_freed_memory  # noqa: E402
from facekit.zoo import load_hyperprior, read_manifest  # noqa: E402


def load_images(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` LFW pair images when ``$FACEKIT_LFW`` is set, else synthetic 250x250 images."""
    if os.environ.get("FACEKIT_LFW"):
        from facekit.data.lfw import open_lfw

        lfw = open_lfw(None)
        names = lfw.pair_images()
        idx = np.linspace(0, len(names) - 1, n).round().astype(int)
        return [lfw.load(names[i]) for i in idx], "LFW pairs.txt images"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (250, 250, 3), dtype=np.uint8) for _ in range(n)], "random 250x250"


def to_tensor(im: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255


def macs_per_pixel(fn, pixels: int) -> float:  # type: ignore[no-untyped-def]
    """Multiply-accumulates of ``fn()`` per pixel (FLOPs / 2 / pixels)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2.0 / pixels


def interleaved_ms(jobs: dict[str, tuple], rounds: int) -> dict[str, tuple[float, float]]:  # type: ignore[type-arg]
    """For each job ``name: (fn, items)``, medians over rounds of the mean ms per item of ``fn(item)``:
    wall clock, and CPU time of this thread. Each round times every job once, in an order that
    rotates from round to round, so that a slow spell of a shared machine falls on all of them
    alike, and the ratios between them hold."""
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, items = jobs[name]
            t, c = time.perf_counter(), time.thread_time()
            for it in items:
                fn(it)
            wall[name].append(1000 * (time.perf_counter() - t) / len(items))
            cpu[name].append(1000 * (time.thread_time() - c) / len(items))
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in jobs}


#: the row of the decoder with bfloat16 convolutions in its synthesis (the encoder is the same)
BF16_ROW = "facekit-hyperprior+bf16"


def bfloat16_dot_products() -> bool:
    """Whether this CPU has bfloat16 dot products (AVX512-BF16 or AMX), where the bfloat16 synthesis is fast;
    False when torch cannot say."""
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(p()) for p in probes if p is not None)


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``): the difference over a timed
    loop counts the pages glibc handed back and took again (see ``--keep-freed-memory``)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def load_weights(path: str | None, store: str | None, arch: HyperpriorArch) -> FaceHyperprior:
    """A model from a run's ``model.pt`` or ``checkpoint.pt``, a store file or a store name; else untrained."""
    if store:
        return load_hyperprior(store)[0]
    if not path:
        return FaceHyperprior(arch)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    arch_dict = blob.get("rate_point") or blob.get("arch")
    state = blob["model"] if "model" in blob else blob["state_dict"]
    model = FaceHyperprior(HyperpriorArch.from_dict(arch_dict))
    model.load_state_dict(state)
    return model


def weights_record(path: str | None, store: str | None, model: FaceHyperprior) -> dict[str, str | None]:
    """Which weights a benchmark ran, for its JSON: ``source`` (``store:NAME``, the file, or ``untrained``),
    the file's ``sha256`` (the name results/README.md gives weights by) and the model's ``fingerprint``."""
    if store:
        source, sha = f"store:{store}", read_manifest()["models"][store]["sha256"]
    elif path:
        source, sha = path, sha256_file(path)
    else:
        source, sha = "untrained", None
    return {"source": source, "sha256": sha, "fingerprint": model_fingerprint(model)}


def weights_label(record: dict[str, str | None]) -> str:
    """:func:`weights_record` in a printed line: its source and the start of its sha256."""
    return f"{record['source']} (sha256 {(record['sha256'] or '-')[:12]})"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images to time (default 8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.5, help="the rate parameter t in [0, 1]")
    ap.add_argument("--weights", help="a run's model.pt or checkpoint.pt, or a store file (default: untrained, same cost)")
    ap.add_argument("--store", help="a model in the weights store, by name")
    default = HyperpriorArch()
    ap.add_argument("--enc-widths", type=int, nargs=3,
                    help=f"analysis widths of an untrained variant (default {' '.join(map(str, default.enc_widths))})")
    ap.add_argument("--dec-widths", type=int, nargs=3,
                    help=f"synthesis widths of an untrained variant (default {' '.join(map(str, default.dec_widths))})")
    ap.add_argument("--keep-freed-memory", action="store_true", help="keep freed memory in the process (glibc mallopt)")
    ap.add_argument("--refine-steps", type=int, default=STEPS,
                    help=f"with --store: also time the refining encoder ({HYPERPRIOR_REFINED}) at this many steps; 0: not")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tuned = keep_freed_memory() if args.keep_freed_memory else False

    arch = default
    if args.enc_widths:
        arch = HyperpriorArch.from_dict({**arch.to_dict(), "enc_widths": args.enc_widths})
    if args.dec_widths:
        arch = HyperpriorArch.from_dict({**arch.to_dict(), "dec_widths": args.dec_widths})
    model = load_weights(args.weights, args.store, arch).eval().freeze()
    load_before = os.getloadavg()[0]
    native_bf16 = bfloat16_dot_products()
    images, source = load_images(args.n)
    xs = [to_tensor(im) for im in images]
    pixels = 250 * 250
    enc0 = model.compress(xs[0], args.rate)
    enc_macs = macs_per_pixel(lambda: model.compress(xs[0], args.rate), pixels)
    dec_macs = macs_per_pixel(lambda: model.decompress(enc0["strings"], enc0["shape"]), pixels)

    # encode and decode as every codec here does, image to file to pixels: facekit-hyperprior with this
    # model, and its bfloat16 synthesis on the same files (facekit decompress --synthesis bfloat16)
    ours, fast = HyperpriorCodec(model), HyperpriorCodec(model, synthesis="bfloat16")
    files = [ours.encode(im, args.rate) for im in images]
    fast.decode(files[0])  # makes its coding form
    faults = minor_faults()
    for f in files:
        ours.decode(f)
    faults = (minor_faults() - faults) / len(files)
    rows = {"facekit-hyperprior": {"bpp": float(np.mean([8 * len(f) / pixels for f in files])), "setting": args.rate},
            BF16_ROW: {"synthesis": "bfloat16"}}
    jobs = {"facekit-hyperprior/encode": (lambda im: ours.encode(im, args.rate), images),
            "facekit-hyperprior/decode": (ours.decode, files), f"{BF16_ROW}/decode": (fast.decode, files)}
    if args.store and args.refine_steps:  # the refining encoder, as facekit-hyperprior-refined runs it
        refined = HyperpriorCodec.from_store(name=args.store, refine_steps=args.refine_steps)
        datas = [refined.encode(im, args.rate) for im in images]
        rows[HYPERPRIOR_REFINED] = {"setting": args.rate, "refine_steps": args.refine_steps,
                                    "bpp": float(np.mean([8 * len(d) / pixels for d in datas]))}
        jobs[f"{HYPERPRIOR_REFINED}/encode"] = (lambda im: refined.encode(im, args.rate), images)
        jobs[f"{HYPERPRIOR_REFINED}/decode"] = (refined.decode, datas)
    bpp = rows["facekit-hyperprior"]["bpp"]
    for name in ("jpeg2000", "avif"):
        codec = get_codec(name)
        probe = {s: float(np.mean([8 * len(codec.encode(im, s)) / pixels for im in images[:4]])) for s in codec.settings}
        setting = min(probe, key=lambda s: abs(probe[s] - bpp))
        datas = [codec.encode(im, setting) for im in images]
        rows[name] = {"bpp": float(np.mean([8 * len(d) / pixels for d in datas])), "setting": setting}
        jobs[f"{name}/encode"] = (lambda im, c=codec, s=setting: c.encode(im, s), images)
        jobs[f"{name}/decode"] = (lambda d, c=codec: c.decode(d), datas)
    for job, (wall, cpu) in interleaved_ms(jobs, args.rounds).items():
        name, side = job.split("/")
        rows[name].update({f"{side}_ms": wall, f"{side}_cpu_ms": cpu})
    rows[BF16_ROW] = {**rows["facekit-hyperprior"], **rows[BF16_ROW]}  # the same files, so the same encoder

    ref = rows["facekit-hyperprior"]
    print(f"facekit.models.hyperprior {model.arch}")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    print(f"MACs per pixel (250x250, FlopCounterMode): encoder {enc_macs:,.0f}, decoder {dec_macs:,.0f}")
    load_after = os.getloadavg()[0]
    weights = weights_record(args.weights, args.store, model)
    print(f"one thread, {args.n} {source}, median of {args.rounds} rounds; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {load_before:.2f} before, {load_after:.2f} after; weights {weights_label(weights)}")
    print(f"page faults a decode: {faults:,.0f} (freed memory {'kept' if tuned else 'handed back, as glibc is configured'})")
    print(f"bfloat16 dot products on this CPU: {'yes' if native_bf16 else 'no (the bfloat16 synthesis is emulated)'}")
    print(f"{'codec':24s} {'setting':>8s} {'bpp':>7s} {'encode ms':>10s} {'decode ms':>10s} {'enc ratio':>10s} {'dec ratio':>10s}"
          f" {'enc cpu ms':>11s} {'dec cpu ms':>11s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['setting']!s:>8s} {r['bpp']:7.3f} {r['encode_ms']:10.2f} {r['decode_ms']:10.2f} "
              f"{ref['encode_ms'] / r['encode_ms']:10.2f} {ref['decode_ms'] / r['decode_ms']:10.2f}"
              f" {r['encode_cpu_ms']:11.2f} {r['decode_cpu_ms']:11.2f}")
    print(f"(ratio: facekit-hyperprior's wall time over that codec's; {BF16_ROW}: the same files decoded with\n"
          " bfloat16 convolutions in the synthesis; targets: decode <= 10 ms, encode <= 20 ms;\n"
          " cpu ms: this thread's CPU time, for the codecs that run in this process)")
    result = {"macs_per_pixel": {"encoder": enc_macs, "decoder": dec_macs}, "rows": rows, "images": source,
              "n": args.n, "rounds": args.rounds, "threads": 1, "arch": model.arch.to_dict(),
              "load": [load_before, load_after], "weights": weights, "keep_freed_memory": tuned,
              "page_faults_per_decode": faults, "bfloat16_dot_products": native_bf16}
    if args.json:
        write_json(args.json, result, indent=2)
    return result


if __name__ == "__main__":
    main()
