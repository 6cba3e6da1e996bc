"""The hot path's small caches (``symwrap.caches``): built once, bypassed while caches are off."""

from __future__ import annotations

from symwrap.caches import built_once, keep_newest
from symwrap.tracing import no_caches


def test_built_once_builds_a_key_once_and_not_at_all_from_the_cache_while_caches_are_off() -> None:
    cache: dict[str, list[int]] = {}
    builds: list[str] = []

    def build() -> list[int]:
        builds.append("built")
        return [len(builds)]

    first = built_once(cache, "k", build)
    assert built_once(cache, "k", build) is first and builds == ["built"]
    with no_caches():
        fresh = built_once(cache, "k", build)
        assert fresh is not first and fresh == [2]
        built_once(cache, "other", build)
    assert set(cache) == {"k"}, "nothing stored while caches are off"


def test_keep_newest_drops_the_oldest_entry_beyond_its_limit() -> None:
    cache: dict[int, int] = {}
    for key in range(4):
        keep_newest(cache, key, key * 10, limit=3)
    keep_newest(cache, 1, 11, limit=3)  # stored again: the newest
    keep_newest(cache, 4, 40, limit=3)
    assert list(cache.items()) == [(3, 30), (1, 11), (4, 40)]
