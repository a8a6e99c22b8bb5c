"""Carry the learned-codec points of a results file to container format 2: exact, and checked.

    python benchmarks/recontainer.py results/rate_accuracy.json [--check 8]

Format 2 of the learned codec's container (:mod:`facekit.container`) stores the same
payload behind 16 bytes of header and CRC instead of format 1's ``24 + len(model name)``.
The payload, and with it every decoded image, embedding and accuracy, is unchanged, and
every image of a sweep over LFW has the same size (250x250), so every file of a point
shrinks by the same number of bytes: its mean bpp drops by exactly
``8 * saved / (H * W)``. This script applies that to each point of each learned codec
that has no ``container`` record yet (all points measured before format 2), in place.

It does not assume the arithmetic: for each point it first compresses ``--check``
images of the pairs file with the codec as it is now, rebuilds the format-1 file of
each payload (:func:`facekit.container.pack_format1`), and checks that the format-2
file is exactly ``saved`` bytes shorter and that both decode to the same image; it also
checks that every image the pairs file names has the size of the first. A point then
gets ``bpp`` minus the saving and a record ``"container": {"format": 2, "bpp_format1":
..., "bytes_saved_per_image": ..., "images_checked": ...}``. Points re-measured under
format 2 (``benchmarks/rerate.py`` after this change, or a new sweep) carry
``"container": {"format": 2, "measured": true}`` and are left alone. A range-coded point
whose prior has been refitted since it was measured is refused (re-rate it instead).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np


def _sizes(lfw: Any, names: list[str]) -> set[tuple[int, int]]:
    from PIL import Image

    sizes = set()
    for n in names:
        with Image.open(lfw.path(n)) as im:
            sizes.add((im.height, im.width))
    return sizes


def same_prior(codec: Any, setting: str, point: dict[str, Any]) -> None:
    """Refuse a range-coded point whose rate was measured with another prior than the current one.

    The arithmetic holds only for the same payloads. A point re-rated earlier names its
    prior's digest; any ``facekit-prior/3`` or ``/4`` prior is newer than container format 2,
    so a format-1 measurement never used one.
    """
    if not getattr(codec, "entropy", False):
        return
    prior = codec.prior(setting)
    recorded = (point.get("rate_remeasured") or {}).get("prior")
    if (recorded is not None and recorded != prior.digest()) or (recorded is None and getattr(prior, "general", True)):
        raise SystemExit(
            f"{codec.name}:{setting} was measured with another context prior than the installed one "
            f"({prior.format}): re-measure it with benchmarks/rerate.py instead"
        )


def check_point(codec: Any, setting: str, images: list[np.ndarray]) -> int:
    """Bytes format 2 saves per file of ``codec`` at ``setting``, checked on ``images``."""
    from facekit import container

    datas = codec.encode_batch(images, setting)
    fp = codec.fingerprint(setting)
    saved = set()
    for data in datas:
        c = container.parse(data)
        if c.version != container.VERSION:
            raise SystemExit(f"{codec.name}@{setting} wrote container format {c.version}, not {container.VERSION}")
        old = container.pack_format1(c.model, fp, c.height, c.width, c.payload)
        saved.add(len(old) - len(data))
        a, b = codec.decode_batch([data, old])
        if not np.array_equal(a, b):
            raise SystemExit(f"{codec.name}@{setting}: the format-1 and format-2 files decode differently")
    if len(saved) != 1:
        raise SystemExit(f"{codec.name}@{setting}: the saving differs between files: {sorted(saved)}")
    return saved.pop()


def main() -> None:
    from facekit.codecs import get_codec
    from facekit.codecs.names import writes_container
    from facekit.data.lfw import open_lfw
    from facekit.evaluate import load_results, save_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="results JSON files to carry over (rewritten in place)")
    ap.add_argument("--root", default=None, help="LFW (default $FACEKIT_LFW)")
    ap.add_argument("--check", type=int, default=8, help="images compressed per point to check the saving")
    a = ap.parse_args()

    lfw = open_lfw(a.root)
    codecs: dict[str, Any] = {}
    saved_by: dict[tuple[str, str], int] = {}
    for path in a.results:
        res = load_results(path)
        names = lfw.pair_images(lfw.pairs(res["protocol"].get("pairs_file", "pairs.txt")))
        sizes = _sizes(lfw, names)
        if len(sizes) != 1:
            raise SystemExit(f"{path}: the pairs file names images of {len(sizes)} sizes; re-measure instead")
        (h, w), = sizes
        step = max(1, len(names) // max(1, a.check))
        sample = [lfw.load(n) for n in names[::step][: a.check]]
        changed = 0
        for cname, points in res["codecs"].items():
            if not writes_container(cname):
                continue
            for p in points:
                if "container" in p:
                    continue
                key = (cname, p["setting"])
                if cname not in codecs:  # one codec (and its loaded models) per name
                    codecs[cname] = get_codec(cname)
                codec = codecs[cname]
                same_prior(codec, p["setting"], p)
                if key not in saved_by:
                    saved_by[key] = check_point(codec, p["setting"], sample)
                saved = saved_by[key]
                before = p["bpp"]
                p["bpp"] = before - 8 * saved / (h * w)
                p["container"] = {"format": 2, "bpp_format1": before, "bytes_saved_per_image": saved,
                                  "images_checked": len(sample), "image_size": [h, w]}
                changed += 1
                print(f"{path}: {cname}:{p['setting']} {before:.4f} -> {p['bpp']:.4f} bpp ({saved} bytes a file)",
                      flush=True)
        save_results(res, path)
        print(f"{path}: {changed} points carried to container format 2", file=sys.stderr)


if __name__ == "__main__":
    main()
