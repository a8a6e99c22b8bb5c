"""How facekit uses CPU threads.

The defaults, chosen so that a busy laptop stays fast:

``OMP_WAIT_POLICY=PASSIVE``
    ``import facekit`` sets it when the environment does not (before torch loads its
    OpenMP runtime, which reads it once). With it, torch's idle worker threads sleep
    instead of spinning. Without it, on a machine whose cores are busy with other work, a
    thread that has finished its share spins while the thread it waits for cannot get a
    core. Measured on two cores shared with other jobs (load 2-5), one learned-codec
    decode (250x250, ``q3``, median of 7): two threads took 0.8-4.6 s (up to 15 s) with
    OpenMP's default policy and 0.19-0.34 s with ``PASSIVE``; one thread took 0.14-0.32 s.
    A value you set yourself is kept (``OMP_WAIT_POLICY=ACTIVE`` spins). Importing torch
    before facekit leaves OpenMP as torch found it: import facekit first, or set the
    variable in the environment.

Intra-op threads
    torch's own default: one per core, or ``OMP_NUM_THREADS`` when it is set. With the
    passive wait policy a second thread costs little even when the cores are shared, and
    helps when they are free, so facekit does not lower the number. The
    command line's ``facekit --threads N COMMAND`` (or :func:`set_threads` in Python)
    sets the number for one run; it wins over ``OMP_NUM_THREADS``.

Freed memory (glibc)
    By default glibc hands a decode's freed megabytes back to the system and takes them
    again as fresh pages: about 300-500 page faults, 1-1.5 ms, of a 10 ms
    ``facekit-hyperprior`` decode. ``facekit compress`` and ``facekit decompress`` call
    :func:`keep_freed_memory`, which raises glibc's trim and mmap thresholds so that the
    process reuses them; a notebook or library user can call it too, or set
    ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` (or ``GLIBC_TUNABLES``) in the
    environment, which it then leaves as they are (or preload jemalloc or tcmalloc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["MALLOC_ENV", "WAIT_POLICY", "WAIT_POLICY_ENV", "keep_freed_memory", "set_threads", "use_default_wait_policy"]

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
WAIT_POLICY = "PASSIVE"


def use_default_wait_policy() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it; return the value in force."""
    return os.environ.setdefault(WAIT_POLICY_ENV, WAIT_POLICY)


def set_threads(n: int | None) -> int:
    """Use ``n`` intra-op threads in torch (None: keep torch's default); return the number in use."""
    import torch

    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"the number of threads must be a positive integer, got {n!r}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


#: environment variables by which a user sets glibc's allocator: :func:`keep_freed_memory` leaves them be
MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(threshold: int = 256 << 20) -> bool:
    """Raise glibc's ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` to ``threshold`` bytes, so that
    freed memory stays in the process for reuse. True when both were set; False where the C
    library is not glibc, or where the environment sets the allocator (:data:`MALLOC_ENV`)."""
    if any(os.environ.get(k) for k in MALLOC_ENV):
        return False
    try:
        is_glibc = os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (ValueError, OSError, AttributeError):
        is_glibc = False
    name = ctypes.util.find_library("c") if is_glibc else None
    if not name:
        return False
    libc = ctypes.CDLL(name)
    return bool(libc.mallopt(-1, threshold)) & bool(libc.mallopt(-3, threshold))  # M_TRIM_, M_MMAP_THRESHOLD
