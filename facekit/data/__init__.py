"""LFW access: archives and folders, protocol files, the identity-disjoint split, mirrors."""

from .download import download_file, download_lfw
from .lfw import (
    LFW,
    Pair,
    check_checksums,
    identity_disjoint_split,
    open_lfw,
    read_pairs,
    read_people,
)

__all__ = [
    "LFW",
    "Pair",
    "check_checksums",
    "download_file",
    "download_lfw",
    "identity_disjoint_split",
    "open_lfw",
    "read_pairs",
    "read_people",
]
