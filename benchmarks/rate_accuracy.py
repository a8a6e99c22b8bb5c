"""Full rate-accuracy sweep on LFW: every codec, merged into one results JSON.

    python benchmarks/rate_accuracy.py --out results/rate_accuracy.json            # all 6000 pairs
    python benchmarks/rate_accuracy.py --per-fold 60 --out /tmp/quick.json          # a quick look

Each codec is evaluated and merged into ``--out`` as soon as it is done (embeddings are
cached), so a stopped sweep resumes. At the end it draws the figure and writes the
Markdown table (``results/README.md`` style) beside the JSON. Prints each point as it
is measured and the wall time of each codec.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facekit.evaluate import DEFAULT_SWEEP, evaluate, load_results, merge_results, save_results
from facekit.plots import rate_accuracy_figure, summary_table

#: the settings of the reproduction: the reference points of the issue tracker, 0.05-1.5 bpp
REPRO = {
    "uncompressed": (None,),
    "jpeg": (1, 5, 10, 20, 50),
    "jpeg2000": (0.05, 0.1, 0.2, 0.4, 1.0),
    "webp": (0, 10, 30, 50, 80),
    "avif": (0, 10, 20, 30, 50),
    "facekit-mse": (),
    "facekit-joint": (),
    "facekit-mse-entropy": (),
    "facekit-joint-entropy": (),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", type=Path, default=Path("results/rate_accuracy.json"))
    ap.add_argument("--codecs", nargs="+", default=list(REPRO))
    ap.add_argument("--preset", choices=["repro", "wide"], default="repro",
                    help="repro: the settings above; wide: facekit.evaluate.DEFAULT_SWEEP")
    ap.add_argument("--per-fold", type=int, default=None)
    ap.add_argument("--recognizer", default="dlib-resnet")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    table = REPRO if args.preset == "repro" else DEFAULT_SWEEP
    for name in args.codecs:
        t0 = time.time()
        try:
            res = evaluate(args.root, codecs={name: table.get(name, ())}, recognizer=args.recognizer,
                           device=args.device, per_fold=args.per_fold, batch_size=args.batch_size, progress=False)
        except Exception as e:  # report and go on with the other codecs
            print(f"{name}: skipped ({type(e).__name__}: {e})", flush=True)
            continue
        for p in res["codecs"][name]:
            ps = f"{p['psnr']:.2f} dB" if p.get("psnr") is not None else "—"
            print(f"{name:22s} {str(p['setting']):>6s} {p['bpp']:.4f} bpp  {100 * p['acc_mean']:.2f} ± "
                  f"{100 * p['acc_std']:.2f} %  {ps}", flush=True)
        if args.out.exists():
            res = merge_results(load_results(args.out), res)
        save_results(res, args.out)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
    res = load_results(args.out)
    rate_accuracy_figure(res, args.out.with_suffix(".png"))
    table_md = summary_table(res)
    args.out.with_suffix(".md").write_text(table_md + "\n")
    print(table_md)


if __name__ == "__main__":
    main()
