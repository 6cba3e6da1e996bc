"""Small bounded caches of the hot path: the newest few entries of a dict, the oldest dropped first."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["keep_newest"]

_K = TypeVar("_K")
_V = TypeVar("_V")


def keep_newest(cache: dict[_K, _V], key: _K, value: _V, limit: int) -> _V:
    """Store ``cache[key] = value`` as the newest entry, dropping the oldest beyond ``limit`` entries; returns
    ``value``."""
    cache.pop(key, None)
    if len(cache) >= limit:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value
