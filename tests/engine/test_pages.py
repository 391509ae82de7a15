"""Page allocator: contiguous-first allocation, extension after a page, fallback, frees."""

from __future__ import annotations

import pytest

from ppd_engine.pages import OutOfPages, PageAllocator


def test_alloc_prefers_one_contiguous_run():
    pages = PageAllocator(num_pages=16, page_size=4)
    assert pages.alloc(3) == [0, 1, 2]
    assert pages.alloc(2) == [3, 4]
    assert pages.num_free == 11


def test_alloc_extends_right_after_a_given_page():
    pages = PageAllocator(num_pages=16, page_size=4)
    pages.alloc(2)  # 0, 1
    pages.alloc(1)  # 2
    pages.free([0, 1])
    assert pages.alloc(2, after=2) == [3, 4]  # follows page 2 although 0-1 is free first


def test_alloc_skips_holes_too_small_for_a_run():
    pages = PageAllocator(num_pages=10, page_size=1)
    first = pages.alloc(10)
    pages.free([first[1], first[4], first[5], first[6]])
    assert pages.alloc(3) == [4, 5, 6]


def test_fragmented_alloc_takes_largest_runs_first():
    pages = PageAllocator(num_pages=10, page_size=1)
    pages.alloc(10)
    pages.free([1, 4, 5, 6, 8, 9])
    got = pages.alloc(5)
    assert got[:3] == [4, 5, 6] and sorted(got[3:]) == [8, 9]
    assert pages.num_free == 1


def test_out_of_pages_and_double_free():
    pages = PageAllocator(num_pages=4, page_size=2)
    pages.alloc(3)
    with pytest.raises(OutOfPages):
        pages.alloc(2)
    pages.free([0])
    with pytest.raises(ValueError):
        pages.free([0])


def test_free_runs_and_reset():
    pages = PageAllocator(num_pages=6, page_size=1)
    pages.alloc(6)
    pages.free([0, 2, 3])
    assert pages.free_runs() == [(0, 1), (2, 2)]
    pages.reset()
    assert pages.num_free == 6 and pages.free_runs() == [(0, 6)]
