"""Radix prefix cache over pages: match, insert/dedupe, locks, LRU eviction, reset."""

from __future__ import annotations

import pytest

from ppd_engine.radix_cache import RadixCache

P = 4


def test_match_returns_full_pages_only():
    cache = RadixCache(P)
    cache.insert(list(range(10)), [7, 8])  # 2 full pages; the 2-token tail is not cached
    pages, _ = cache.match(list(range(12)))
    assert pages == [7, 8]
    assert cache.match(list(range(7)))[0] == [7]
    assert cache.match([99] + list(range(1, 12)))[0] == []


def test_match_respects_max_tokens():
    cache = RadixCache(P)
    cache.insert(list(range(8)), [1, 2])
    assert cache.match(list(range(8)), max_tokens=7)[0] == [1]


def test_insert_dedupes_against_cached_pages():
    cache = RadixCache(P)
    cache.insert(list(range(8)), [1, 2])
    canonical, redundant, _ = cache.insert(list(range(12)), [5, 6, 9])
    assert canonical == [1, 2, 9]
    assert redundant == [5, 6]
    assert cache.num_pages == 3


def test_branching_prefixes_share_nodes():
    cache = RadixCache(P)
    cache.insert([0, 0, 0, 0, 1, 1, 1, 1], [10, 11])
    cache.insert([0, 0, 0, 0, 2, 2, 2, 2], [10, 12])
    assert cache.match([0, 0, 0, 0, 2, 2, 2, 2])[0] == [10, 12]
    assert cache.num_pages == 3


def test_locked_pages_are_never_evicted():
    cache = RadixCache(P)
    cache.insert(list(range(8)), [1, 2])
    _, node = cache.match(list(range(8)))
    cache.lock(node)
    assert cache.num_evictable_pages == 0
    assert cache.evict(2) == []
    cache.unlock(node)
    assert cache.num_evictable_pages == 2
    assert sorted(cache.evict(5)) == [1, 2]


def test_eviction_is_lru_leaves_first():
    cache = RadixCache(P)
    cache.insert([1] * 8, [10, 11])
    cache.insert([2] * 8, [20, 21])
    cache.match([1] * 8)  # touch the first branch: the second is now LRU
    assert cache.evict(1) == [21]  # a leaf of the least recently used branch
    assert cache.evict(1) == [20]  # its parent became a leaf
    assert cache.match([1] * 8)[0] == [10, 11]


def test_partial_lock_keeps_locked_path():
    cache = RadixCache(P)
    cache.insert([1] * 12, [1, 2, 3])
    _, node = cache.match([1] * 4)
    cache.lock(node)
    assert sorted(cache.evict(10)) == [2, 3]
    assert cache.match([1] * 12)[0] == [1]


def test_unlock_of_unlocked_node_raises():
    cache = RadixCache(P)
    _, _, node = cache.insert([1] * 4, [1])
    with pytest.raises(RuntimeError):
        cache.unlock(node)


def test_reset_refuses_while_locked():
    cache = RadixCache(P)
    _, _, node = cache.insert([1] * 8, [1, 2])
    cache.lock(node)
    with pytest.raises(RuntimeError):
        cache.reset()
    cache.unlock(node)
    assert sorted(cache.reset()) == [1, 2]
    assert cache.num_pages == 0
