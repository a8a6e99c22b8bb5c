"""Downloads that check what they fetch: mirrors, resume, sha256, atomic rename.

:func:`download_file` fetches one file from a list of mirror URLs (stdlib
:mod:`urllib` only). Bytes go to ``<dest>.part``; a partial ``.part`` left by an
earlier run is resumed with an HTTP ``Range`` request when the server honours it
(``206``) and restarted from zero when it does not (``200``), or when the resumed
file fails its sha256. A response shorter than its ``Content-Length`` counts as
truncated and is retried (resuming where it stopped). Only a complete file whose
sha256 matches is moved to the final name, with :func:`os.replace`, so the final
name never holds a half or unverified file.

:func:`download_lfw` fetches LFW's archive and protocol files from the mirror base
URLs in ``$FACEKIT_LFW_MIRRORS``, checked against the digests in :data:`LFW_SHA256`.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from ..config import cache_dir, lfw_mirrors
from ..errors import DataError, DownloadError
from ..fileio import atomic_write, sha256_file
from .lfw import PROTOCOL_FILES
from .locate import LFW_HELP

__all__ = ["LFW_SHA256", "LFW_FILES", "download_file", "download_lfw"]

#: sha256 of LFW's files, as published in the project's ``SHA256SUMS``.
LFW_SHA256: dict[str, str] = {
    "lfw-deepfunneled.tgz": "02e21e5e40433d1853628c93c940faf2b39864731b5bfa48a5b7cffb0ddd5a05",
    "README.lfw.txt": "34c6fba9b6d7303d65623d3a65457059ffe129ffc5c1ee27cd35762a155980b7",
    "lfw-names.txt": "403cd39411ee297f99f69241959bd8f0496b44377711913a76ccdd8562874164",
    "pairs.txt": "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592",
    "pairsDevTest.txt": "7cb06600ea8b2814ac26e946201cdb304296262aad67d046a16a7ec85d0ff87c",
    "pairsDevTrain.txt": "1d454dada7dfeca0e7eab6f65dc4e97a6312d44cf142207be28d688be92aabfa",
    "people.txt": "bc8fa2b7f25c895cf7efb6de4f4fc27ca8b8d1cfa63350ad8b96eae2b198d365",
    "peopleDevTest.txt": "c3ed1f90499473401542101a56c14c1d82396bb8218c67a356d7460601047555",
    "peopleDevTrain.txt": "2e58df13ba4cc143189336e001cc2c195f1dfa5b29a6475c02857be353c2a2fa",
}

#: The files :func:`download_lfw` fetches by default: the archive and the protocol files.
LFW_FILES: tuple[str, ...] = ("lfw-deepfunneled.tgz", *PROTOCOL_FILES)

#: Seconds to wait before retry ``n`` (1-based) on the same mirror: ``RETRY_BACKOFF * n``.
RETRY_BACKOFF = 0.5

_USER_AGENT = "facekit-downloader/1 (+python-urllib)"

# HTTP statuses worth retrying on the same mirror; any other error moves to the next one.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Failure(Exception):
    """One failed attempt: ``reason`` for the report, ``retry`` whether the same URL may work."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _Restart(Exception):
    """A resume went wrong and the ``.part`` was deleted: ask the same URL again from zero."""


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _parse_content_range(value: str | None) -> tuple[int | None, int | None] | None:
    """``bytes START-END/TOTAL`` -> ``(START, TOTAL)``, ``bytes */TOTAL`` -> ``(None, TOTAL)``.

    An unknown total (``*``) is None; an unparsable header gives None.
    """
    if not value:
        return None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None
    span, _, total = spec.strip().partition("/")
    start, _, _end = span.strip().partition("-")
    try:
        first = None if start.strip() == "*" else int(start)
        size = None if total.strip() in ("", "*") else int(total)
    except ValueError:
        return None
    return first, size


def _attempt(
    url: str,
    part: Path,
    sha256: str | None,
    *,
    desc: str,
    progress: bool,
    timeout: float,
    chunk: int,
) -> None:
    """One request for ``url`` into ``part`` (resuming it if non-empty); raises :class:`_Failure`."""
    offset = _size(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            # Nothing left to send from ``offset``: the .part may already be complete.
            content_range = _parse_content_range(
                e.headers.get("Content-Range") if e.headers else None
            )
            if content_range is not None and content_range[1] == offset:
                if sha256 is None or sha256_file(part) == sha256:
                    return
            _unlink(part)
            raise _Restart(f"HTTP 416 {e.reason} for a resume at byte {offset}") from e
        raise _Failure(f"HTTP {e.code} {e.reason}", retry=e.code in _RETRY_STATUS) from e
    except urllib.error.URLError as e:
        raise _Failure(f"connection failed: {e.reason}", retry=True) from e
    except (OSError, http.client.HTTPException) as e:  # timeouts, resets, bad status lines
        raise _Failure(f"connection failed: {e!r}", retry=True) from e

    with response:
        status = getattr(response, "status", None) or 200
        length_header = response.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = None
        resumed = False
        if offset and status == 206:
            content_range = _parse_content_range(response.headers.get("Content-Range"))
            if content_range is not None and content_range[0] == offset:
                resumed = True
            else:
                # A range we did not ask for: throw the partial file away and ask again from 0.
                _unlink(part)
                raise _Restart(
                    f"server answered a resume at byte {offset} with Content-Range "
                    f"{response.headers.get('Content-Range')!r}"
                )
        elif status not in (200, 206):
            raise _Failure(f"unexpected HTTP status {status}", retry=False)
        start = offset if resumed else 0
        total = start + length if length is not None else None
        received = 0
        error: BaseException | None = None
        with (
            open(part, "ab" if resumed else "wb") as f,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while length is None or received < length:
                want = chunk if length is None else min(chunk, length - received)
                try:
                    block = response.read(want)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    error = e
                    break
                if not block:
                    break
                f.write(block)  # a local disk error propagates (not a network failure)
                received += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    if length is not None and received < length:
        why = f" ({error!r})" if error is not None else ""
        raise _Failure(
            f"truncated: received {received} of {length} bytes "
            f"(file at {start + received} of {total}){why}",
            retry=True,
        )
    if error is not None:
        raise _Failure(f"connection broke after {received} bytes: {error!r}", retry=True)

    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            _unlink(part)
            if resumed:
                raise _Restart(f"sha256 mismatch after resuming at byte {offset}")
            raise _Failure(f"sha256 mismatch: got {got}, expected {sha256}", retry=False)


def download_file(
    urls: str | Sequence[str],
    dest: Path,
    sha256: str | None,
    *,
    progress: bool = True,
    retries: int = 2,
    timeout: float = 30,
    chunk: int = 1 << 16,
) -> Path:
    """Download ``dest`` from the first of ``urls`` that delivers it intact; return ``dest``.

    Each URL is tried up to ``1 + retries`` times (connection errors, truncated
    responses and 5xx statuses are retried; 4xx statuses and checksum mismatches move
    on to the next URL). Bytes stream to ``<dest>.part``, which a later attempt (or a
    later call) resumes with a ``Range`` request; a server that ignores the range, or
    a resumed file that fails its sha256, restarts the download from zero. The file is
    moved to ``dest`` only when complete and, if ``sha256`` is given, matching it.

    If ``dest`` already exists and matches ``sha256`` it is returned at once (with
    ``sha256=None`` an existing ``dest`` is trusted: this function only ever creates
    it complete). Raises :class:`~facekit.errors.DownloadError` naming every URL and
    why it failed when none succeeds.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise DownloadError(f"no URL to download {Path(dest).name} from")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    dest = Path(dest)
    expected = sha256.strip().lower() if sha256 is not None else None
    if expected is not None and (
        len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)
    ):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    if dest.exists():
        if expected is None or sha256_file(dest) == expected:
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)

    failures: list[str] = []
    last_error: BaseException | None = None
    for url in url_list:
        attempt = 0
        restarted = False
        while attempt <= retries:
            if attempt and not restarted and RETRY_BACKOFF > 0:
                time.sleep(RETRY_BACKOFF * attempt)
            try:
                _attempt(
                    url,
                    part,
                    expected,
                    desc=dest.name,
                    progress=progress,
                    timeout=timeout,
                    chunk=chunk,
                )
            except _Restart as e:
                # The .part came from another file version, was damaged or was too long:
                # it is gone, so this free retry downloads from zero. Bounded: a restart
                # only follows an attempt that resumed a non-empty .part.
                failures.append(f"{url}: {e} (restarted from zero)")
                last_error = e
                restarted = True
                continue
            except _Failure as e:
                attempt += 1
                restarted = False
                failures.append(f"{url}: {e.reason} (attempt {attempt}/{retries + 1})")
                last_error = e
                if not e.retry:
                    break
                continue
            except OSError as e:  # network errors are _Failure; this is the local disk
                raise DownloadError(f"cannot write {part}: {e}") from e
            os.replace(part, dest)
            return dest

    note = ""
    if dest.exists():
        note = f"\n{dest} exists but does not match sha256 {expected}; it was left untouched."
    raise DownloadError(
        f"could not download {dest.name} from {len(url_list)} URL(s):\n  "
        + "\n  ".join(failures)
        + note
    ) from last_error


def _join(base: str, name: str) -> str:
    return base if base.endswith("/" + name) else base.rstrip("/") + "/" + name


def download_lfw(
    dest_dir: Path | None = None,
    mirrors: Sequence[str] | None = None,
    files: Sequence[str] = LFW_FILES,
    *,
    progress: bool = True,
    retries: int = 2,
    timeout: float = 30,
) -> Path:
    """Download LFW's ``files`` from mirror base URLs into ``dest_dir``; return ``dest_dir``.

    ``mirrors`` defaults to ``$FACEKIT_LFW_MIRRORS`` (see :func:`facekit.config.lfw_mirrors`),
    ``dest_dir`` to ``<cache>/lfw``. Every file is checked against :data:`LFW_SHA256`,
    and a ``SHA256SUMS`` with those digests is written beside them, so the folder can be
    opened with :func:`facekit.data.open_lfw` (point ``FACEKIT_LFW`` at it).
    Raises :class:`~facekit.errors.DataError` with setup help when no mirror is configured.
    """
    bases = list(mirrors) if mirrors is not None else lfw_mirrors()
    bases = [b.strip() for b in bases if b and b.strip()]
    if not bases:
        raise DataError(LFW_HELP)
    if isinstance(files, str):
        files = [files]
    unknown = [name for name in files if name not in LFW_SHA256]
    if unknown:
        raise DataError(
            f"no known sha256 for {', '.join(unknown)}; download_lfw fetches only "
            f"{', '.join(sorted(LFW_SHA256))}"
        )
    folder = Path(dest_dir) if dest_dir is not None else cache_dir() / "lfw"
    folder.mkdir(parents=True, exist_ok=True)

    # The digests go first, so that even a partly downloaded folder can be verified.
    sums = "".join(f"{digest}  {name}\n" for name, digest in LFW_SHA256.items())
    sums_path = folder / "SHA256SUMS"
    if not sums_path.exists() or sums_path.read_text() != sums:
        atomic_write(sums_path, sums)

    for name in files:
        download_file(
            [_join(base, name) for base in bases],
            folder / name,
            LFW_SHA256[name],
            progress=progress,
            retries=retries,
            timeout=timeout,
        )
    return folder
