"""Full rate-accuracy sweep on LFW: every codec, merged into one results JSON.

    python benchmarks/rate_accuracy.py --out results/rate_accuracy.json              # all 6000 pairs
    python benchmarks/rate_accuracy.py --workers 2 --out results/rate_accuracy.json  # two processes
    python benchmarks/rate_accuracy.py --per-fold 60 --out /tmp/quick.json            # a quick look

The sweep is cut into jobs of one (codec, setting) each, in the order given (the
``REPRO`` table below lists the low rates, where the comparison matters, first).
``--workers N`` runs the jobs in N processes of one thread each (the fastest use of N
CPU cores); the parent alone writes ``--out``, merging every point as soon as it is
measured (embeddings are cached too), so a stopped sweep resumes where it was. At the
end it draws the figure and writes the Markdown table beside the JSON. It prints each
point as it is measured with the seconds it took.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from facekit.evaluate import (
    DEFAULT_SWEEP,
    codec_points,
    evaluate,
    load_results,
    merge_results,
    save_results,
)
from facekit.plots import rate_accuracy_figure, summary_table

#: the settings of the reproduction: the reference points of the issue tracker, 0.05-1.5 bpp
REPRO: dict[str, tuple[Any, ...]] = {
    "uncompressed": (None,),
    "jpeg": (1, 5, 10, 20, 50),
    "jpeg2000": (0.05, 0.1, 0.2, 0.4, 1.0),
    "webp": (0, 10, 30, 50, 80),
    "avif": (0, 10, 20, 30, 50),
    "paper-mse": (),
    "paper": (),
    "facekit-mse-entropy": (),
    "facekit-joint-entropy": (),
    "facekit-jointrate-entropy": (),
    "facekit-jointface": (),  # trained on a GPU with the face-weighted distortion (scripts/gpu_joint.sh)
    "facekit": (),
    # region of interest (facekit.codecs.roi): only the face chip is coded, by facekit and by the baselines
    "facekit-joint-roi": (),
    "facekit-jointrate-roi": (),
    "facekit-jointrate-entropy-roi": (),
    "facekit-roi": ("q2", "q3", "q4", "q5"),  # the face as -entropy-roi, the background at q1
    "jpeg2000-roi": (0.05, 0.1, 0.2),
    "avif-roi": (0, 10, 20, 30, 50),
}


def jobs_of(codecs: list[str], table: dict[str, tuple[Any, ...]]) -> list[tuple[str, Any]]:
    """``(codec, setting)`` of the sweep; a codec whose settings are ``()`` uses its own."""
    from facekit.codecs import get_codec

    jobs: list[tuple[str, Any]] = []
    for name in codecs:
        settings = table.get(name, ())
        if not settings and name != "uncompressed":
            try:
                settings = tuple(get_codec(name).settings)
            except Exception as e:  # report and go on with the other codecs
                print(f"{name}: skipped ({type(e).__name__}: {e})", flush=True)
                continue
        jobs += [(name, s) for s in (settings or (None,))]
    return jobs


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_job(job: tuple[str, Any], kw: dict[str, Any]) -> tuple[str, Any, dict[str, Any] | str, float]:
    name, setting = job
    t0 = time.time()
    try:
        res = evaluate(kw["root"], codecs={name: (setting,)}, recognizer=kw["recognizer"], device=kw["device"],
                       per_fold=kw["per_fold"], batch_size=kw["batch_size"], progress=False)
    except Exception as e:  # report and go on with the other jobs
        return name, setting, f"{type(e).__name__}: {e}", time.time() - t0
    return name, setting, res, time.time() - t0


def _star(args: tuple[tuple[str, Any], dict[str, Any]]) -> tuple[str, Any, dict[str, Any] | str, float]:
    return _run_job(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", type=Path, default=Path("results/rate_accuracy.json"))
    ap.add_argument("--codecs", nargs="+", default=list(REPRO))
    ap.add_argument("--preset", choices=["repro", "wide"], default="repro",
                    help="repro: the settings above; wide: facekit.evaluate.DEFAULT_SWEEP")
    ap.add_argument("--only", nargs="+", default=None, metavar="CODEC:SETTING",
                    help="run just these jobs, e.g. jpeg:10 paper:q2, in this order")
    ap.add_argument("--per-fold", type=int, default=None)
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="processes (one thread each when > 1)")
    args = ap.parse_args()
    table = REPRO if args.preset == "repro" else DEFAULT_SWEEP
    if args.only:
        jobs = [(c, _parse_setting(s)) for c, _, s in (j.partition(":") for j in args.only)]
    else:
        jobs = jobs_of(args.codecs, table)
    kw = {"root": args.root, "recognizer": args.recognizer, "device": args.device,
          "per_fold": args.per_fold, "batch_size": args.batch_size}
    print(f"{len(jobs)} jobs in {args.workers} process(es)", flush=True)
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers, initializer=_init_worker, initargs=(1,)) as pool:
            for out in pool.imap_unordered(_star, [(j, kw) for j in jobs]):
                _record(args.out, *out)
    else:
        for j in jobs:
            _record(args.out, *_run_job(j, kw))
    if not args.out.exists():
        raise SystemExit("no point was measured")
    res = load_results(args.out)
    rate_accuracy_figure(res, args.out.with_suffix(".png"))
    table_md = summary_table(res)
    args.out.with_suffix(".md").write_text(table_md + "\n")
    print(table_md)


def _parse_setting(text: str) -> Any:
    if text in ("", "None"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _record(out: Path, name: str, setting: Any, res: dict[str, Any] | str, seconds: float) -> None:
    if isinstance(res, str):
        print(f"{name}@{setting}: failed ({res})", flush=True)
        return
    for p in codec_points(res, name):
        ps = f"{p['psnr']:.2f} dB" if p.get("psnr") is not None else "—"
        print(f"{name:22s} {str(p['setting']):>6s} {p['bpp']:.4f} bpp  {100 * p['acc_mean']:.2f} ± "
              f"{100 * p['acc_std']:.2f} %  {ps}  ({seconds:.0f} s)", flush=True)
    if out.exists():
        res = merge_results(load_results(out), res, by_point=True)
    save_results(res, out)


if __name__ == "__main__":
    main()
