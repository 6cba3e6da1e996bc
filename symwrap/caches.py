"""Small bounded caches of the hot path: the newest few entries of a dict, the oldest dropped first.

Safe to read and fill from several threads: a value is computed from its key alone, so two threads storing the same
key store equal values, and a race only lets a cache hold a few entries more than its limit for a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from symwrap.tracing import caches_off

__all__ = ["built_once", "keep_newest"]

_K = TypeVar("_K")
_V = TypeVar("_V")


def keep_newest(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    """Store ``cache[key] = value`` as the newest entry, dropping the oldest beyond ``limit`` entries; returns
    ``value``."""
    cache.pop(key, None)
    if len(cache) >= limit:
        # Threads may fill one cache together: the oldest key may be gone already, or the dict may change between
        # iter() and next(); then another thread is trimming it, and this one only stores its entry.
        try:  # noqa: SIM105 (a plain try: torch.compile traces this, and contextlib.suppress would break its graph)
            cache.pop(next(iter(cache), key), None)
        except RuntimeError:
            pass
    cache[key] = value
    return value


def built_once(cache: dict[_K, _V], key: _K, build: Callable[[], _V]) -> _V:
    """``cache[key]``, made by ``build()`` the first time (for caches of a few keys: dimensions, dtypes, devices);
    while caches are off (:func:`~symwrap.tracing.caches_off`: recording, or :func:`~symwrap.tracing.no_caches`) it is
    made every time and neither read nor stored."""
    if caches_off():
        return build()
    value = cache.get(key)
    if value is None:
        value = cache[key] = build()
    return value
