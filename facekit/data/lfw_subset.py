"""A small LFW folder that holds only the identity-disjoint training split, for a machine without LFW.

Phase one of a recipe (:mod:`facekit.training.rd`, :func:`facekit.training.data.load_split`)
trains on LFW's identity-disjoint split: the people in no pair of ``pairs.txt`` (1,549 images
of 1,468 people, about 14 MB of JPEG). :func:`write_split_subset` copies those JPEGs byte for
byte, in LFW's layout (``<stem>/<Person>/<Person>_NNNN.jpg``, ``stem`` the archive's, e.g.
``lfw-deepfunneled``), beside the protocol file the split is computed from (``pairs.txt``).
:func:`~facekit.data.lfw.open_lfw` accepts the folder, and since none of the people of
``pairs.txt`` is in it, its identity-disjoint split is exactly the full LFW's, and so are the
held-out images a run chooses from it by name (:func:`facekit.training.data.held_out`).
``SHA256SUMS`` lists every file (``sha256sum -c SHA256SUMS`` checks a copy), ``split.json``
what the folder was made from. From the command line::

    python -m facekit.data.lfw_subset gpu/lfw --root /path/to/lfw
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fileio import write_json
from .lfw import ARCHIVES, identity_disjoint_split, open_lfw

__all__ = ["FORMAT", "main", "write_split_subset"]

FORMAT = "facekit-lfw-split/1"
#: the image folders of the official archives (``lfw-deepfunneled`` ...)
STEMS = tuple(a.removesuffix(".tgz") for a in ARCHIVES)


def write_split_subset(
    dest: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    pairs_files: Sequence[str] = ("pairs.txt",),
) -> dict[str, Any]:
    """Write LFW's identity-disjoint split (people in no pair of ``pairs_files``) as a small LFW folder.

    Args:
        dest: the folder to write; an earlier one (it holds ``split.json``) is replaced whole,
            any other existing non-empty folder is refused.
        root: the full LFW (folder or archive; default ``$FACEKIT_LFW``, see :func:`open_lfw`).
        pairs_files: the protocol files the split leaves out the people of, by name beside the
            images; they are copied too.

    Returns:
        ``split.json``'s record: source (the archive's or folder's name), pairs files, people, images, bytes (of the JPEGs), path.
        A DataError when the written folder's split differs from the source's (it never should).
    """
    dest = Path(dest)
    if any(Path(pf).name != pf for pf in pairs_files):
        raise DataError(f"pairs files are named beside LFW's images, not by path: {list(pairs_files)}")
    if dest.exists() and not (dest / "split.json").is_file() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest} exists and is not a split folder written by facekit: choose another")
    lfw = open_lfw(root)
    split = identity_disjoint_split(lfw, pairs_files)
    names = sorted(n for imgs in split.values() for n in imgs)
    stem = lfw.images.name if lfw.images.name in STEMS else ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        sums: list[tuple[str, str]] = []
        for pf in pairs_files:
            sums.append((pf, _copy(lfw.pairs_file(pf), tmp / pf)))
        for name in names:
            rel = f"{stem}/{name}" if stem else name
            sums.append((rel, _copy(lfw.path(name), tmp / rel)))
        (tmp / "SHA256SUMS").write_text("".join(f"{digest}  {rel}\n" for rel, digest in sorted(sums)))
        record = {"format": FORMAT, "source": (lfw.archive or lfw.images).name, "pairs_files": list(pairs_files),
                  "people": len(split), "images": len(names),
                  "bytes": sum(lfw.path(n).stat().st_size for n in names)}
        write_json(tmp / "split.json", record, indent=2)
        if identity_disjoint_split(open_lfw(tmp), pairs_files) != split:
            raise DataError(f"the split written to {tmp} differs from {lfw.images}'s")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {**record, "path": str(dest)}


def _copy(src: Path, dst: Path) -> str:
    """Copy one file byte for byte; its sha256 (of the bytes read, checked on the bytes written)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    if hashlib.sha256(dst.read_bytes()).hexdigest() != digest:
        raise DataError(f"copying {src} to {dst} changed it")
    return digest


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facekit.data.lfw_subset DEST [--root LFW]``: write the folder, print its record."""
    parser = argparse.ArgumentParser(prog="python -m facekit.data.lfw_subset", description=__doc__.split("\n")[0])
    parser.add_argument("dest", help="the folder to write (replaced when it is an earlier one)")
    parser.add_argument("--root", default=None, help="the full LFW, folder or archive (default: $FACEKIT_LFW)")
    args = parser.parse_args(argv)
    print(json.dumps(write_split_subset(args.dest, args.root), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
