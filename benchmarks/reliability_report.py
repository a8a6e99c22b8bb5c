"""The reliability figures of facekit in one run: fuzzing, resumed training, decoding everywhere.

    python benchmarks/reliability_report.py                      # 60 s of fuzzing, then the rest
    python benchmarks/reliability_report.py --fuzz-seconds 300   # the longer fuzz run
    python benchmarks/reliability_report.py --fuzz-seconds 0     # resume and decode checks only

It prints, and writes to ``--json`` (default ``artifacts/reliability.json``):

* **fuzzing** (``benchmarks/fuzz_report.py`` over every target, starting from the corpus
  in ``tests/corpus``): inputs tried, distinct refusal messages, crashes (must be 0);
* **resume equality**: a small training run is killed with SIGTERM after its first
  checkpoint, resumed with ``--resume``, and compared tensor by tensor with a run that
  never stopped (same seed, CPU, one thread): the number of tensors that differ (must be 0);
* **decode differences**: the shipped weights (every variant and rate point) encode
  faces on this CPU, and the bytes are decoded here, in another process with other
  thread settings, and on CUDA where there is a GPU; the largest pixel difference to
  the first decode in 1/255 steps (must be at most 1). Without a GPU the CUDA line says
  so (``"cuda": null``): run this same script on a GPU machine to fill it in.

Faces are real LFW images when ``FACEKIT_LFW`` (or ``--root``) points at the data set,
else the corpus' synthetic face at 250x250. The exit status is 1 when any figure fails
its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
sys.path.insert(0, str(CORPUS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the small training run of the resume check (a few seconds on one CPU thread)
TRAIN = [
    "--rate", "q1", "--arch", "enc_widths=[8,8,8,8]", "dec_widths=[8,8,8,8]", "dec_blocks=1",
    "--crop", "32", "--batch-size", "2", "--steps", "24", "--checkpoint-every", "4", "--log-every", "4",
    "--val-images", "1", "--device", "cpu", "--threads", "1", "--seed", "3",
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- fuzzing


def fuzz(seconds: float, json_path: Path) -> dict[str, Any]:
    """Run ``fuzz_report.py`` in a child process; its totals and distinct messages."""
    if seconds <= 0:
        return {"skipped": True}
    cmd = [sys.executable, str(REPO / "benchmarks" / "fuzz_report.py"), "--seconds", str(seconds),
           "--json", str(json_path)]
    r = subprocess.run(cmd, cwd=REPO, env=_env(OMP_NUM_THREADS="1"), capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if not json_path.exists():
        raise SystemExit(f"fuzz_report.py wrote no report (exit {r.returncode}):\n{r.stderr[-3000:]}")
    rep = json.loads(json_path.read_text())
    return {
        "inputs": rep["total_inputs"],
        "crashes": rep["total_crashes"],
        "distinct_messages": sum(t["distinct_messages"] for t in rep["targets"].values()),
        "targets": len(rep["targets"]),
        "seconds": rep["wall_s"],
    }


# --------------------------------------------------------------------------- resume


def resume_equality(work: Path) -> dict[str, Any]:
    """Kill a training run after its first checkpoint, resume it, compare with a straight run."""
    import torch
    from make_corpus import face_image
    from PIL import Image

    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        Image.fromarray(face_image(48, 40, seed=i)).save(images / f"face{i}.png")
    run, ref = work / "run", work / "ref"
    train = [sys.executable, "-m", "facekit.cli", "train", "--images", str(images)]
    env = _env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(work / "train.log", "wb") as log:
        proc = subprocess.Popen([*train, "--out", str(run), *TRAIN], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"training ended before its first checkpoint:\n{(work / 'train.log').read_text()[-2000:]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    step = int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"])
    for args in ([*train, "--out", str(run), "--resume", *TRAIN], [*train, "--out", str(ref), *TRAIN]):
        subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    a = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(ref / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    differ = sorted(k for k in b if k not in a or not torch.equal(a[k], b[k]))
    return {"killed_at_step": step, "steps": 24, "tensors": len(b), "tensors_differing": len(differ),
            "examples": differ[:3]}


# --------------------------------------------------------------------------- decoding everywhere

_DECODE_CHILD = r"""
import json, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
from facekit.codecs import get_codec
jobs = json.load(open(sys.argv[1]))
out = {}
for name, files in jobs.items():
    codec = get_codec(name, device=sys.argv[3])
    out[name] = [np.asarray(codec.decode(open(f, "rb").read())).tolist() for f in files]
json.dump(out, open(sys.argv[4], "w"))
"""


def _faces(root: str | None, n: int) -> tuple[list[np.ndarray], str]:
    try:
        from facekit.data.lfw import open_lfw

        lfw = open_lfw(root)
        pairs = lfw.pairs("pairs.txt")
        names = sorted({p.a for p in pairs})[: 40 * n : 40]
        return [lfw.load(x) for x in names], f"{len(names)} LFW pair images"
    except Exception as e:  # no data set here: the corpus' synthetic face stands in
        from make_corpus import face_image

        return [face_image(250, 250, seed=s) for s in range(n)], f"{n} synthetic 250x250 faces ({type(e).__name__})"


def decode_differences(work: Path, root: str | None, n_images: int) -> dict[str, Any]:
    """Largest pixel difference between decodes of the same bytes: here, another process, CUDA."""
    import torch

    from facekit.codecs import get_codec
    from facekit.codecs.registry import available_codecs
    from facekit.fileio import write_json

    faces, what = _faces(root, n_images)
    names = [k for k in ("paper-mse", "paper", "facekit-mse-entropy", "facekit-joint-entropy")
             if available_codecs(hidden=True)[k]["available"]]
    files: dict[str, list[str]] = {}
    here: dict[str, list[np.ndarray]] = {}
    torch.set_num_threads(1)
    for name in names:
        codec = get_codec(name)
        files[name], here[name] = [], []
        for rate in codec.settings:
            for i, data in enumerate(codec.encode_batch(faces, rate)):
                f = work / f"{name}-{rate}-{i}.fkc"
                f.write_bytes(data)
                files[name].append(str(f))
                here[name].append(codec.decode(data))
    jobs = work / "decode_jobs.json"
    write_json(jobs, files)

    def child(threads: int, device: str) -> dict[str, list[np.ndarray]]:
        out = work / f"decoded-{device}-{threads}.json"
        env = _env(OMP_NUM_THREADS=str(threads))
        if device == "cuda":
            env.pop("CUDA_VISIBLE_DEVICES")
        subprocess.run([sys.executable, "-c", _DECODE_CHILD, str(jobs), str(threads), device, str(out)], cwd=REPO,
                       env=env, check=True, capture_output=True)
        got = json.loads(out.read_text())
        return {k: [np.asarray(a, dtype=np.uint8) for a in v] for k, v in got.items()}

    def worst(other: dict[str, list[np.ndarray]]) -> int:
        return max(int(np.abs(a.astype(int) - b.astype(int)).max())
                   for k in here for a, b in zip(here[k], other[k], strict=True))

    cuda = None
    device_name = None
    if torch.cuda.is_available():
        cuda = worst(child(1, "cuda"))
        device_name = torch.cuda.get_device_name(0)
    return {
        "images": what,
        "codecs": {k: len(v) for k, v in files.items()},
        "bitstreams": sum(len(v) for v in files.values()),
        "other_process_2_threads": worst(child(2, "cpu")),
        "cuda": cuda,
        "cuda_device": device_name,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz-seconds", type=float, default=60)
    ap.add_argument("--images", type=int, default=4, help="faces per rate point for the decode check")
    ap.add_argument("--root", default=None, help="LFW (default $FACEKIT_LFW)")
    ap.add_argument("--json", type=Path, default=REPO / "artifacts" / "reliability.json")
    args = ap.parse_args(argv)
    from facekit.fileio import write_json
    from facekit.provenance import provenance

    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facekit-reliability-") as tmp:
        work = Path(tmp)
        t0 = time.time()
        report: dict[str, Any] = {"fuzz": fuzz(args.fuzz_seconds, args.json.with_name("fuzz_report.json"))}
        report["resume"] = resume_equality(work / "resume")
        (work / "decode").mkdir()
        report["decode"] = decode_differences(work / "decode", args.root, args.images)
        report["wall_s"] = round(time.time() - t0, 1)
    report["provenance"] = provenance("cpu", 0)
    write_json(args.json, report)

    f, r, d = report["fuzz"], report["resume"], report["decode"]
    print()
    if not f.get("skipped"):
        print(f"fuzzing:  {f['inputs']} inputs over {f['targets']} targets in {f['seconds']} s, "
              f"{f['distinct_messages']} distinct refusal messages, {f['crashes']} crashes")
    print(f"resume:   killed at step {r['killed_at_step']} of {r['steps']}, resumed: "
          f"{r['tensors_differing']} of {r['tensors']} tensors differ from an uninterrupted run")
    print(f"decode:   {d['bitstreams']} bitstreams ({', '.join(f'{k} {v}' for k, v in d['codecs'].items())}; "
          f"{d['images']})")
    print(f"          max difference, another CPU process with 2 threads: {d['other_process_2_threads']}/255")
    if d["cuda"] is None:
        print("          CUDA: no GPU here (run this script on a GPU machine to measure it)")
    else:
        print(f"          max difference, CUDA ({d['cuda_device']}): {d['cuda']}/255")
    print(f"-> {args.json}")
    bad = (f.get("crashes", 0) > 0 or r["tensors_differing"] > 0 or d["other_process_2_threads"] > 1
           or (d["cuda"] is not None and d["cuda"] > 1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
