"""Labeled Faces in the Wild: images, protocol files and splits.

LFW (Huang et al. 2007) stores one folder per person, ``<Person>/<Person>_NNNN.jpg``,
inside the official archives ``lfw.tgz``, ``lfw-funneled.tgz`` and
``lfw-deepfunneled.tgz``. facekit reads either an extracted folder or an archive; an
archive is checked against ``SHA256SUMS`` when one lies beside it and extracted once
into the cache (atomically: to a temporary folder, then renamed).

``pairs.txt`` holds the verification protocol the paper reports (Bian et al. 2019,
Sec. 4): 10 folds of 300 matched and 300 mismatched pairs.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import cache_dir
from ..errors import ChecksumError, DataError
from ..fileio import sha256_file
from ..imageio import open_image
from .locate import LFW_HELP, find_lfw

ARCHIVES = ("lfw-deepfunneled.tgz", "lfw-funneled.tgz", "lfw.tgz")
PROTOCOL_FILES = (
    "pairs.txt",
    "pairsDevTrain.txt",
    "pairsDevTest.txt",
    "people.txt",
    "peopleDevTrain.txt",
    "peopleDevTest.txt",
)


@dataclass(frozen=True)
class Pair:
    """One verification pair: two image names relative to the LFW root, and the label."""

    fold: int
    a: str
    b: str
    same: bool


def image_name(person: str, number: int) -> str:
    """``Person/Person_NNNN.jpg`` for LFW's 1-based image numbers."""
    return f"{person}/{person}_{int(number):04d}.jpg"


def read_sha256sums(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{filename: hexdigest}``."""
    sums: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}:{lineno}: not a sha256sum line: {line!r}")
        sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


def check_checksums(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> dict[str, bool]:
    """Check the files of ``folder`` against its ``SHA256SUMS``; ``{name: ok}`` for those present.

    Raises :class:`ChecksumError` naming every file whose digest differs.
    """
    folder = Path(folder)
    sums_file = folder / "SHA256SUMS"
    if not sums_file.exists():
        raise DataError(f"no SHA256SUMS in {folder}; cannot verify the data")
    sums = read_sha256sums(sums_file)
    wanted = list(names) if names is not None else list(sums)
    result: dict[str, bool] = {}
    bad = []
    for name in wanted:
        if name not in sums:
            raise DataError(f"{name} is not listed in {sums_file}")
        path = folder / name
        if not path.exists():
            continue
        ok = sha256_file(path) == sums[name]
        result[name] = ok
        if not ok:
            bad.append(name)
    if bad:
        raise ChecksumError(f"sha256 mismatch in {folder}: {', '.join(bad)} (damaged or a different version)")
    return result


def _parse_ints(tokens: list[str], path: Path, lineno: int) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError as e:
        raise DataError(f"{path}:{lineno}: expected numbers, got {tokens!r}") from e


def read_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Read LFW's ``pairs.txt`` format (also ``pairsDevTrain.txt``/``pairsDevTest.txt``).

    The first line is ``folds n`` (or just ``n`` for the dev files, one fold); each fold
    has ``n`` matched lines ``name i j`` and then ``n`` mismatched lines ``name1 i name2 j``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"pairs file {path} does not exist")
    lines = [ln.split() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"pairs file {path} is empty")
    head = _parse_ints(lines[0], path, 1)
    if len(head) == 2:
        folds, n = head
    elif len(head) == 1:
        folds, n = 1, head[0]
    else:
        raise DataError(f"{path}:1: expected 'folds n' or 'n', got {lines[0]!r}")
    expected = 1 + folds * 2 * n
    if len(lines) != expected:
        raise DataError(f"{path}: {len(lines)} lines, expected {expected} for {folds} folds of {n}+{n} pairs")
    pairs: list[Pair] = []
    i = 1
    for fold in range(folds):
        for k in range(2 * n):
            tok = lines[i]
            lineno = i + 1
            if k < n:
                if len(tok) != 3:
                    raise DataError(f"{path}:{lineno}: a matched pair needs 'name i j', got {tok!r}")
                a, b = _parse_ints(tok[1:], path, lineno)
                pairs.append(Pair(fold, image_name(tok[0], a), image_name(tok[0], b), True))
            else:
                if len(tok) != 4:
                    raise DataError(f"{path}:{lineno}: a mismatched pair needs 'name1 i name2 j', got {tok!r}")
                a, b = _parse_ints([tok[1], tok[3]], path, lineno)
                pairs.append(Pair(fold, image_name(tok[0], a), image_name(tok[2], b), False))
            i += 1
    return pairs


def read_people(path: str | os.PathLike[str]) -> dict[str, int]:
    """Read ``people.txt``-style files: ``{person: image count}`` over all its sets."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"people file {path} does not exist")
    people: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if len(tok) == 2:
            people[tok[0]] = _parse_ints(tok[1:], path, lineno)[0]
        elif len(tok) > 2:
            raise DataError(f"{path}:{lineno}: expected 'name count', got {tok!r}")
    return people


def _is_image_folder(path: Path) -> bool:
    """A folder in LFW's layout: sub-folders holding ``<Person>_NNNN.jpg``."""
    if not path.is_dir():
        return False
    for sub in path.iterdir():
        if sub.is_dir():
            if any(p.name.startswith(sub.name + "_") and p.suffix == ".jpg" for p in sub.iterdir()):
                return True
    return False


def extract_archive(archive: Path, verify: str | None = None) -> Path:
    """Extract an LFW archive once into the cache and return its image folder.

    The archive's sha256 (checked against ``verify`` when given) names the cache folder,
    so another version of the archive never reuses a stale extraction. Extraction goes to
    a temporary folder first, then is renamed: an interrupted run leaves no half folder,
    and processes that extract at the same time all end with the first one's complete
    folder (a later one never replaces a folder the first may already be reading).
    """
    archive = Path(archive)
    digest = sha256_file(archive)
    if verify is not None and digest != verify:
        raise ChecksumError(f"{archive}: sha256 {digest} differs from the expected {verify}")
    target = cache_dir() / "lfw" / digest[:16]
    done = target / ".complete"
    if done.exists():
        return _single_image_folder(target, archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for m in tar.getmembers():
                    if not (m.isdir() or m.isfile()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise DataError(f"{archive}: unsafe archive member {m.name!r}")
                tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{archive} is not a readable tar archive (corrupted or truncated): {e}") from e
        (tmp / ".complete").write_text(digest)
        if done.exists():  # another process finished first and may be reading it: keep its copy
            return _single_image_folder(target, archive)
        if target.exists():  # a stale folder without the completion mark
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not done.exists():  # not another process winning the race at the last moment
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _single_image_folder(target, archive)


def _single_image_folder(target: Path, archive: Path) -> Path:
    subs = [p for p in target.iterdir() if p.is_dir()]
    if len(subs) == 1 and _is_image_folder(subs[0]):
        return subs[0]
    if _is_image_folder(target):
        return target
    raise DataError(f"{archive} does not hold LFW's layout <Person>/<Person>_NNNN.jpg")


class LFW:
    """An LFW image folder plus the folder of its protocol files.

    Build it with :func:`open_lfw`. Images are returned as ``uint8`` arrays of shape
    ``(250, 250, 3)`` (RGB).
    """

    def __init__(self, images: Path, meta: Path, archive: Path | None = None) -> None:
        self.images = Path(images)
        self.meta = Path(meta)
        self.archive = archive

    def __repr__(self) -> str:
        return f"LFW(images={str(self.images)!r}, meta={str(self.meta)!r})"

    def path(self, name: str) -> Path:
        return self.images / name

    def load(self, name: str) -> np.ndarray:
        """One image as RGB uint8 ``(H, W, 3)``; a clear error if it is missing or unreadable."""
        p = self.path(name)
        if not p.exists():
            raise DataError(f"LFW image {name} is missing from {self.images}")
        return open_image(p, formats=None, error=DataError, name=f"LFW image {p}")

    def identities(self) -> dict[str, list[str]]:
        """``{person: [image names]}`` for every person folder, sorted."""
        out: dict[str, list[str]] = {}
        for d in sorted(self.images.iterdir()):
            if d.is_dir():
                files = sorted(f"{d.name}/{f.name}" for f in d.iterdir() if f.suffix == ".jpg")
                if files:
                    out[d.name] = files
        return out

    def pairs(self, name: str = "pairs.txt") -> list[Pair]:
        """The pairs of a protocol file beside the images (default: the 10-fold ``pairs.txt``)."""
        return read_pairs(self.pairs_file(name))

    def pairs_file(self, name: str = "pairs.txt") -> Path:
        p = Path(name)
        if not p.is_absolute():
            p = self.meta / name
        if not p.exists():
            raise DataError(f"protocol file {p} does not exist. {LFW_HELP}")
        return p

    def pair_images(self, pairs: list[Pair] | None = None) -> list[str]:
        """The distinct image names of ``pairs`` (default ``pairs.txt``), sorted."""
        pairs = self.pairs() if pairs is None else pairs
        return sorted({p.a for p in pairs} | {p.b for p in pairs})

    def missing(self, pairs: list[Pair] | None = None) -> list[str]:
        """Image names that the pairs need but the folder lacks."""
        return [n for n in self.pair_images(pairs) if not self.path(n).exists()]

    def iter_images(self, names: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
        for n in names:
            yield n, self.load(n)


def open_lfw(root: str | os.PathLike[str] | None = None, *, verify: bool = True) -> LFW:
    """Open LFW from a folder or an archive.

    ``root`` (else ``$FACEKIT_LFW``, else the repository's ``data/lfw/``: see
    :func:`facekit.data.locate.find_lfw`) may be an extracted image folder, a folder holding
    one of the official archives and the protocol files, or an archive path. With ``verify``, an
    archive listed in a ``SHA256SUMS`` beside it must match.
    """
    path = find_lfw(root)
    if path.is_file():
        meta = path.parent
        return LFW(_extract_checked(path, verify), meta, archive=path)
    if _is_image_folder(path):
        return LFW(path, path.parent if not (path / "pairs.txt").exists() else path)
    for arch in ARCHIVES:
        stem = arch.removesuffix(".tgz")
        if (path / stem).is_dir() and _is_image_folder(path / stem):
            return LFW(path / stem, path)
    for arch in ARCHIVES:
        if (path / arch).is_file():
            return LFW(_extract_checked(path / arch, verify), path, archive=path / arch)
    raise DataError(f"{path} holds neither LFW images nor one of {', '.join(ARCHIVES)}. {LFW_HELP}")


def _extract_checked(archive: Path, verify: bool) -> Path:
    expected = None
    sums_file = archive.parent / "SHA256SUMS"
    if verify and sums_file.exists():
        expected = read_sha256sums(sums_file).get(archive.name)
    return extract_archive(archive, verify=expected)


def identity_disjoint_split(lfw: LFW, pairs_files: Iterable[str] = ("pairs.txt",)) -> dict[str, list[str]]:
    """People who appear in no pair of the given protocol files, with their images.

    A codec trained on these images never sees an evaluation identity: the honest
    training set for the reproduction (1,468 people, 1,549 images for ``pairs.txt``).
    """
    used: set[str] = set()
    for pf in pairs_files:
        for p in lfw.pairs(pf):
            used.add(p.a.split("/")[0])
            used.add(p.b.split("/")[0])
    return {person: imgs for person, imgs in lfw.identities().items() if person not in used}


def fold_people(pairs: list[Pair]) -> dict[int, set[str]]:
    """``{fold: people in that fold's pairs}``, for cross-training on folds."""
    out: dict[int, set[str]] = {}
    for p in pairs:
        out.setdefault(p.fold, set()).update({p.a.split("/")[0], p.b.split("/")[0]})
    return out
