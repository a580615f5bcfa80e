"""Tests for actors/mm/pagecache.py: a ``PageCache`` answers as the dict it replaces.

The model is a plain dict filled, in index order, with uptodate pages and
then changed. Hypothesis runs lookups, insertions and deletions on both:
presence, length, iteration order, the page a lookup gives (the same
object every time, with the fill's flags and reference) and the
``touched``/``untouched`` split the invariants use must agree.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.kernel_types import PageFlag
from actors.mm.page import Page
from actors.mm.pagecache import PageCache

NR = 24


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, NR - 1), unique=True).map(sorted),
    st.lists(st.tuples(st.sampled_from(["get", "del", "add", "in"]), st.integers(-1, NR + 1)), max_size=60),
)
def test_page_cache_agrees_with_a_dict(filled: list[int], program: list[tuple[str, int]]) -> None:
    mapping = object()
    cache = PageCache(mapping)  # type: ignore[arg-type]
    cache.fill(filled, NR)
    model: dict[int, Page | None] = dict.fromkeys(filled)  # None: its page not looked up yet
    for op, index in program:
        if op == "get":
            page = cache.get(index)
            if index in model:
                if model[index] is None:
                    model[index] = page
                    assert page.mapping is mapping and page.index == index
                    assert page.flags == PageFlag.UPTODATE and page.refcount == 1
                assert page is model[index]
            else:
                assert page is None
        elif op == "del" and index in model:
            del cache[index]
            del model[index]
        elif op == "del":
            with pytest.raises(KeyError):
                del cache[index]
        elif op == "add":
            page = Page(mapping, index)  # type: ignore[arg-type]
            assert cache.insert(index, page) is (index not in model)
            model.setdefault(index, page)
        assert (index in cache) == (index in model)
        assert list(cache) == list(model) and len(cache) == len(model)
        assert cache.untouched == sum(page is None for page in model.values())
        assert list(cache.touched()) == [page for page in model.values() if page is not None]
    assert list(cache.values()) == [cache.get(index) for index in model]
    assert cache.untouched == 0


def test_filling_twice_is_refused() -> None:
    cache = PageCache(object())  # type: ignore[arg-type]
    cache.fill([1, 2], 4)
    with pytest.raises(ValueError, match="cached already"):
        cache.fill([2], 4)
