"""Full rate-accuracy sweep on LFW: every codec, merged into one results JSON.

    python benchmarks/rate_accuracy.py --out results/rate_accuracy.json              # all 6000 pairs
    python benchmarks/rate_accuracy.py --workers 2 --out results/rate_accuracy.json  # two processes
    python benchmarks/rate_accuracy.py --per-fold 60 --out /tmp/quick.json            # a quick look

    # facekit-hyperprior (issue 28): its five presets and two more rates, one thread, under dlib's ResNet
    # (then the same with --recognizer sface-opencv --out results/rate_accuracy_sface.json)
    OMP_NUM_THREADS=1 python benchmarks/rate_accuracy.py --codecs facekit-hyperprior --also facekit-hyperprior:0.1 \\
        facekit-hyperprior:0.35 --skip-done --no-figure --out results/rate_accuracy.json

The sweep is cut into jobs of one (codec, setting) each, in the order given (the
``REPRO`` table below lists the low rates, where the comparison matters, first).
``--workers N`` runs the jobs in N processes of one thread each (the fastest use of N
CPU cores); the parent alone writes ``--out``, merging every point as soon as it is
measured (embeddings are cached too), so a stopped sweep resumes where it was. At the
end it draws the figure and writes the Markdown table beside the JSON (not with ``--no-figure``). It prints each
point as it is measured with the seconds it took and the time left, and, when the results
hold ``facekit-hyperprior``, issue 28's goals (:func:`facekit.hyperprior_goals.hyperprior_goals_table`).

``--skip-done`` leaves out the jobs whose point ``--out`` already holds (same setting, and for
``facekit-hyperprior`` the same weights), so a stopped sweep resumes without even reading
its cached embeddings. A continuous codec's settings are stored as floats and its preset
names as their values (``facekit-hyperprior:q2`` is the point ``0.25``). Each
``facekit-hyperprior`` point records its weights (sha256, fingerprint, training phase): points
of other weights are never merged into its curve (a DataError, see
:func:`facekit.evaluate.check_one_weights`); ``--replace`` drops the codec's earlier points
instead, at its first point measured now.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from facekit.codecs.names import HYPERPRIOR, HYPERPRIOR_REFINED
from facekit.errors import DataError, FacekitError
from facekit.evaluate import (
    DEFAULT_SWEEP,
    build_codec,
    check_one_weights,
    codec_points,
    data_sha256,
    evaluate,
    load_results,
    merge_results,
    save_results,
    subset_pairs,
)
from facekit.goals import TAR_KEY
from facekit.hyperprior_goals import hyperprior_goals_table
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
    HYPERPRIOR: (),  # issue 28: its presets q1..q5 (t = 0, 0.25, 0.5, 0.75, 1)
}


_BUILT: dict[tuple[str, str], Any] = {}


def codec_for(name: str, options: dict[str, dict[str, Any]] | None) -> Any:
    """The codec ``name`` built with its ``options`` (:func:`facekit.evaluate.build_codec`), once a process:
    listing the jobs, checking ``--out`` and ``--skip-done`` share it (its weights are read once)."""
    key = (name, repr(sorted((options or {}).get(name, {}).items())))
    if key not in _BUILT:
        _BUILT[key] = build_codec(name, options)
    return _BUILT[key]


def jobs_of(codecs: list[str], table: dict[str, tuple[Any, ...]],
            options: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """``(codec, setting)`` of the sweep; a codec whose settings are ``()`` uses its own
    (built with its keyword arguments in ``options``)."""
    jobs: list[tuple[str, Any]] = []
    for name in codecs:
        settings = table.get(name, ())
        if not settings and name != "uncompressed":
            try:
                settings = tuple(codec_for(name, options).settings)
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
                       per_fold=kw["per_fold"], batch_size=kw["batch_size"], progress=False,
                       codec_options=kw["codec_options"])
    except Exception as e:  # report and go on with the other jobs
        return name, setting, f"{type(e).__name__}: {e}", time.time() - t0
    return name, setting, res, time.time() - t0


def _star(args: tuple[tuple[str, Any], dict[str, Any]]) -> tuple[str, Any, dict[str, Any] | str, float]:
    return _run_job(*args)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", type=Path, default=Path("results/rate_accuracy.json"))
    ap.add_argument("--codecs", nargs="+", default=list(REPRO))
    ap.add_argument("--preset", choices=["repro", "wide"], default="repro",
                    help="repro: the settings above; wide: facekit.evaluate.DEFAULT_SWEEP")
    ap.add_argument("--only", nargs="+", default=None, metavar="CODEC:SETTING",
                    help="run just these jobs, e.g. jpeg:10 paper:q2, in this order")
    ap.add_argument("--also", nargs="+", default=[], metavar="CODEC:SETTING",
                    help="jobs run after the others, e.g. facekit-hyperprior:0.1 (a rate between its presets)")
    ap.add_argument("--per-fold", type=int, default=None)
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="processes (one thread each when > 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the one process when --workers is 1")
    ap.add_argument("--hyperprior-weights", type=Path, default=None, metavar="DIR",
                    help=f"the weights folder {HYPERPRIOR} reads (default: the shipped facekit/weights)")
    ap.add_argument("--skip-done", action="store_true",
                    help="leave out the jobs whose point --out holds already (same setting and weights)")
    ap.add_argument("--no-figure", action="store_true",
                    help="leave the figure and the Markdown table beside --out as they are (results_readme.py draws them)")
    ap.add_argument("--replace", action="store_true",
                    help="each codec's first point measured now replaces its points in --out whole "
                         "(e.g. after new weights); later points merge by point")
    args = ap.parse_args(argv)
    table = REPRO if args.preset == "repro" else DEFAULT_SWEEP
    options = {name: {"folder": args.hyperprior_weights} for name in (HYPERPRIOR, HYPERPRIOR_REFINED)} if args.hyperprior_weights else {}
    jobs = parse_jobs(args.only) if args.only else jobs_of(args.codecs, table, options)
    jobs += parse_jobs(args.also)
    check_out(args.out, jobs, options, recognizer=args.recognizer, root=args.root, per_fold=args.per_fold,
              replace=args.replace)
    if args.skip_done and args.out.exists():
        held = load_results(args.out)  # read once; check_out has checked its recogniser, data and per_fold
        jobs = [j for j in jobs if not is_done(held, *j, options)]
    kw = {"root": args.root, "recognizer": args.recognizer, "device": args.device, "codec_options": options,
          "per_fold": args.per_fold, "batch_size": args.batch_size}
    print(f"{len(jobs)} jobs in {args.workers} process(es)", flush=True)
    progress = Progress(len(jobs), replace=args.replace)
    if args.workers > 1:
        with mp.get_context("spawn").Pool(args.workers, initializer=_init_worker, initargs=(1,)) as pool:
            for out in pool.imap_unordered(_star, [(j, kw) for j in jobs]):
                _record(args.out, *out, progress)
    else:
        _init_worker(args.threads)
        for j in jobs:
            _record(args.out, *_run_job(j, kw), progress)
    if not args.out.exists():
        raise SystemExit("no point was measured")
    res = load_results(args.out)
    table_md = summary_table(res)
    if not args.no_figure:
        rate_accuracy_figure(res, args.out.with_suffix(".png"))
        args.out.with_suffix(".md").write_text(table_md + "\n")
    print(table_md)
    if HYPERPRIOR in res["codecs"]:
        print(f"\n{HYPERPRIOR}: issue 28's goals under {res['recognizer']['name']} (facekit.hyperprior_goals)\n")
        print(hyperprior_goals_table(res))


def parse_jobs(texts: list[str]) -> list[tuple[str, Any]]:
    """``["jpeg:10", "uncompressed:"]`` -> ``[("jpeg", 10), ("uncompressed", None)]``."""
    return [(c, _parse_setting(s)) for c, _, s in (j.partition(":") for j in texts)]


def check_out(out: Path, jobs: list[tuple[str, Any]], options: dict[str, dict[str, Any]], *, recognizer: str,
              root: str | None, per_fold: int | None, replace: bool = False) -> None:
    """Before any job runs: a DataError when ``out`` holds results of another recogniser or other data
    (its ``data_sha256``), which no measured point could be merged into, or (without ``replace``) points
    of a codec measured with other weights than the ones installed now (:func:`check_one_weights`)."""
    if not out.exists() or not jobs:
        return
    res = load_results(out)
    held = (res.get("recognizer") or {}).get("name")
    if ":" in recognizer:  # "package.module:Class": its class's name, without building it
        import importlib

        module, _, cls = recognizer.partition(":")
        recognizer = getattr(getattr(importlib.import_module(module), cls, None), "name", recognizer)
    if held != recognizer:
        raise DataError(f"{out} holds results of the recogniser {held!r}, not {recognizer!r}: "
                        "measure into another --out (or pass its --recognizer)")
    if res["protocol"].get("per_fold") != per_fold:
        raise DataError(f"{out} holds results of per_fold {res['protocol'].get('per_fold')}, not {per_fold}: "
                        "measure into another --out")
    from facekit.data.lfw import open_lfw

    lfw = open_lfw(root)
    pairs = res["protocol"].get("pairs_file", "pairs.txt")
    pair_list = subset_pairs(lfw.pairs(pairs), per_fold)
    data = data_sha256(lfw, pairs, sorted({p.a for p in pair_list} | {p.b for p in pair_list}))
    if res.get("data_sha256") != data:
        raise DataError(f"{out} holds results of other data (data_sha256 {res.get('data_sha256')}, the data now "
                        f"{data}): measure into another --out")
    if replace:
        return
    for name in dict.fromkeys(n for n, _ in jobs if n != "uncompressed"):
        try:
            kept, weights = codec_points(res, name), codec_for(name, options).weights_record()
        except FacekitError:  # no points yet, or the job fails and says why when it runs
            continue
        if weights is not None:
            check_one_weights(name, kept, [{"weights": weights}])


def is_done(res: dict[str, Any], name: str, setting: Any, options: dict[str, dict[str, Any]]) -> bool:
    """Whether the results ``res`` (``--out``, already checked by :func:`check_out`) hold the point
    ``name@setting``, and, for a codec with stored weights, measured with the weights installed now
    (:meth:`facekit.codecs.base.Codec.weights_record`)."""
    try:
        points = codec_points(res, name)
    except DataError:
        return False
    weights = None
    if name != "uncompressed":
        try:
            codec = codec_for(name, options)
        except FacekitError:  # the job fails and says why when it runs
            return False
        setting, weights = codec.normalise_setting(setting), codec.weights_record()
    same = [p for p in points if repr(p["setting"]) == repr(setting)]
    return any(weights is None or (p.get("weights") or {}).get("sha256") == weights["sha256"] for p in same)


class Progress:
    """Jobs done and the time left (the mean time of the jobs measured so far), and which codecs ``--replace``
    has already replaced in this run."""

    def __init__(self, total: int, replace: bool = False) -> None:
        self.total, self.done, self.seconds = total, 0, 0.0
        self.replace = replace
        self.replaced: set[str] = set()

    def step(self, seconds: float) -> str:
        """Count one job; ``[3/7, about 12 min left]``."""
        self.done += 1
        self.seconds += seconds
        left = (self.total - self.done) * self.seconds / self.done
        return f"[{self.done}/{self.total}, about {left / 60:.0f} min left]"


def _parse_setting(text: str) -> Any:
    if text in ("", "None"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _record(out: Path, name: str, setting: Any, res: dict[str, Any] | str, seconds: float,
            progress: Progress | None = None) -> None:
    """Print a finished job's points and merge them into ``out`` (by point, or replacing the codec's points
    at its first job when ``progress.replace``)."""
    step = progress.step(seconds) if progress else ""
    if isinstance(res, str):
        print(f"{name}@{setting}: failed ({res}) {step}", flush=True)
        return
    for p in codec_points(res, name):
        ps = f"{p['psnr']:.2f} dB" if p.get("psnr") is not None else "—"
        tar = f"TAR {p[TAR_KEY]:.3f}" if p.get(TAR_KEY) is not None else ""
        print(f"{time.strftime('%H:%M:%S')} {name:22s} {str(p['setting']):>6s} {p['bpp']:.4f} bpp  "
              f"{100 * p['acc_mean']:.2f} ± {100 * p['acc_std']:.2f} %  {tar}  {ps}  ({seconds:.0f} s) {step}",
              flush=True)
    if out.exists():
        whole = progress is not None and progress.replace and name not in progress.replaced
        res = merge_results(load_results(out), res, by_point=not whole)
    if progress is not None and progress.replace:
        progress.replaced.add(name)
    save_results(res, out)


if __name__ == "__main__":
    main()
