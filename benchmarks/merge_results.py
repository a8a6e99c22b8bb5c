"""Merge results files into one, point by point (same protocol, recogniser and data).

    python benchmarks/merge_results.py results/rate_accuracy.json sweep/hevc.json sweep/jpegxl.json

A point of a later file replaces the point of the same codec and setting in the first;
every other point stays (:func:`facekit.evaluate.merge_results` with ``by_point=True``), and
each merged file's provenance is appended to ``runs``. The first file is rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekit.evaluate import load_results, merge_results, save_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("into", type=Path, help="the results file to merge into (rewritten)")
    p.add_argument("others", type=Path, nargs="+", help="results files whose points are merged in, in order")
    args = p.parse_args(argv)
    res = load_results(args.into)
    for other in args.others:
        new = load_results(other)
        res = merge_results(res, new, by_point=True)
        print(f"{other}: {', '.join(f'{k} ({len(v)})' for k, v in new['codecs'].items())}", file=sys.stderr)
    save_results(res, args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
