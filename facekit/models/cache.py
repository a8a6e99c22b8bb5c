"""A small least-recently-used cache for the coding forms' per-size tensors.

The coding paths keep tensors that depend only on an image size or a rate (patch indices,
checkerboards, scale tables, per-width channel rows) in an ``OrderedDict``;
:func:`lru_get` fetches one, making it when missing, and keeps the :data:`SIZE_CACHE`
most recently used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

#: how many entries (image sizes, rates, widths) a cache keeps by default
SIZE_CACHE = 8

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def lru_get(cache: OrderedDict[K, V], key: K, make: Callable[[], V], size: int = SIZE_CACHE) -> V:
    """``cache[key]``, made by ``make()`` when missing; the ``size`` most recently used entries are kept.

    Example::

        cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        index = lru_get(cache, (16, 16), lambda: torch.arange(16 * 16).view(16, 16))
    """
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = make()
    while len(cache) > size:
        cache.popitem(last=False)
    return value
