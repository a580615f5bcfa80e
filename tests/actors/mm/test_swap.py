"""Tests for actors/mm/swap.py: slot allocation, the swap map's counts, the swap cache (Hypothesis over op sequences)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.kernel_types import PageFlag
from actors.mm.page import Page
from actors.mm.swap import SWAP_HAS_CACHE, SwapInfo


def test_slot_zero_is_the_header_and_allocation_is_next_fit() -> None:
    swap = SwapInfo(start_sector=1000, nr_slots=4, page_cluster=3)
    assert [swap.get_swap_page() for _ in range(3)] == [1, 2, 3]
    assert swap.get_swap_page() == 0  # full
    swap.swap_map[2] = 0
    swap.inuse_pages -= 1
    assert swap.get_swap_page() == 2  # wraps past the header
    assert swap.sector(3) == 1000 + 3 * 8


def test_a_slot_is_free_once_neither_a_pte_nor_the_cache_holds_it() -> None:
    swap = SwapInfo(0, 8, 3)
    page = Page(None, 0)
    offset = swap.get_swap_page()
    swap.add_to_swap_cache(page, offset)
    swap.swap_duplicate(offset)  # try_to_unmap: one PTE holds the entry
    assert swap.swap_map[offset] == SWAP_HAS_CACHE | 1 and page.flags & PageFlag.SWAPCACHE
    assert not swap.try_to_free_swap(page)  # a PTE still holds it
    swap.swap_free(offset)
    assert swap.try_to_free_swap(page)
    assert swap.swap_map[offset] == 0 and swap.inuse_pages == 1 and offset not in swap.cache
    assert page.refcount == 1 and not page.flags & PageFlag.SWAPCACHE


def test_lookup_takes_a_reference_and_writeback_keeps_the_page_cached() -> None:
    swap = SwapInfo(0, 8, 3)
    page = Page(None, 0)
    offset = swap.get_swap_page()
    swap.add_to_swap_cache(page, offset)
    assert swap.lookup_swap_cache(offset) is page and page.refcount == 3
    page.flags |= PageFlag.WRITEBACK
    assert not swap.try_to_free_swap(page)
    assert swap.lookup_swap_cache(offset + 1) is None


@given(st.lists(st.sampled_from(["alloc", "dup", "free", "uncache"]), max_size=60), st.randoms(use_true_random=False))
def test_in_use_count_matches_the_swap_map(ops: list[str], rng) -> None:
    """Whatever the order of allocations, PTE references, frees and cache drops, ``inuse_pages`` counts the non-zero slots."""
    swap = SwapInfo(0, 16, 3)
    ptes: list[int] = []
    cached: list[Page] = []
    for op in ops:
        if op == "alloc":
            offset = swap.get_swap_page()
            if offset:
                page = Page(None, 0)
                swap.add_to_swap_cache(page, offset)
                cached.append(page)
        elif op == "dup" and cached:
            page = rng.choice(cached)
            swap.swap_duplicate(page.private)
            ptes.append(page.private)
        elif op == "free" and ptes:
            swap.swap_free(ptes.pop(rng.randrange(len(ptes))))
        elif op == "uncache" and cached:
            page = cached[rng.randrange(len(cached))]
            if swap.try_to_free_swap(page):
                cached.remove(page)
        assert swap.inuse_pages == sum(1 for count in swap.swap_map if count)
        for offset in range(1, swap.max):
            assert swap.swap_count(offset) == ptes.count(offset)
            assert bool(swap.swap_map[offset] & SWAP_HAS_CACHE) == (offset in swap.cache)
