"""``mapping->i_pages``: the cached pages of one ``address_space``, by index.

Mirrors the role of the page-cache xarray (include/linux/fs.h
``address_space.i_pages``, v4.19's radix tree): index → ``struct page``.

Emulation notes:
    The kernel has a ``struct page`` for every cached page from the start.
    Here a page the cache was filled with at start-up (the config's
    ``cached``; ``fill``) is one byte of ``_filled`` until something looks
    it up with ``get``: its ``Page`` is made then, uptodate with the cache's
    one reference, exactly as the fill would have made it, and kept. Most
    pages of a large, fully cached file are never touched, so they cost no
    object. Order is the one a plain dict filled in index order and then
    inserted into would have: the filled pages still cached, ascending,
    then the pages added since, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from actors.kernel_types import PageFlag
from actors.mm.page import Page

if TYPE_CHECKING:
    from actors.mm.filemap import AddressSpace

_UPTODATE = PageFlag.UPTODATE


class PageCache:
    """The index → ``Page`` table of an ``address_space`` (a mapping as far as ``in``/``get``/``del`` go)."""

    __slots__ = ("_mapping", "_pages", "_filled", "_untouched")

    def __init__(self, mapping: AddressSpace) -> None:
        self._mapping = mapping
        #: Every page with an object: filled ones once looked up, and those added since.
        self._pages: dict[int, Page] = {}
        #: 1 at each index filled at start-up and not removed since.
        self._filled = bytearray()
        #: Filled pages not looked up yet (no object).
        self._untouched = 0

    def fill(self, indices: list[int], nr_pages: int) -> None:
        """Cache uptodate pages at *indices* (ascending) of a file of *nr_pages*, before the run."""
        if len(self._filled) < nr_pages:
            self._filled.extend(bytes(nr_pages - len(self._filled)))
        for index in indices:
            if index in self:
                raise ValueError(f"page {index} is cached already")
            self._filled[index] = 1
        self._untouched += len(indices)

    def _is_filled(self, index: int) -> bool:
        return 0 <= index < len(self._filled) and self._filled[index] == 1

    def get(self, index: int) -> Page | None:
        """The page at *index*, or ``None`` (a filled page gets its object here)."""
        page = self._pages.get(index)
        if page is None and 0 <= index < len(self._filled) and self._filled[index]:
            page = self._pages[index] = Page(self._mapping, index)
            page.flags = _UPTODATE
            self._untouched -= 1
        return page

    def __getitem__(self, index: int) -> Page:
        page = self.get(index)
        if page is None:
            raise KeyError(index)
        return page

    def __contains__(self, index: int) -> bool:
        return index in self._pages or (0 <= index < len(self._filled) and self._filled[index] == 1)

    def insert(self, index: int, page: Page) -> bool:
        """Cache *page* at *index* unless a page is there (the xarray store of ``__add_to_page_cache_locked``)."""
        pages = self._pages
        if index in pages or (0 <= index < len(self._filled) and self._filled[index]):
            return False
        pages[index] = page
        return True

    def __delitem__(self, index: int) -> None:
        if self._is_filled(index):
            self._filled[index] = 0
            if self._pages.pop(index, None) is None:
                self._untouched -= 1
        else:
            del self._pages[index]

    def __len__(self) -> int:
        return len(self._pages) + self._untouched

    def __iter__(self) -> Iterator[int]:
        """Indices: the filled pages ascending, then the added ones oldest first (see the module)."""
        filled = self._filled
        index = filled.find(1)
        while index >= 0:
            yield index
            index = filled.find(1, index + 1)
        for index in list(self._pages):
            if not self._is_filled(index):
                yield index

    def items(self) -> Iterator[tuple[int, Page]]:
        for index in list(self):
            yield index, self[index]

    def values(self) -> Iterator[Page]:
        """Every cached page, in order; gives every filled page its object."""
        for _index, page in self.items():
            yield page

    @property
    def untouched(self) -> int:
        """How many filled pages were never looked up: each has one reference and no PTE, and is unlocked."""
        return self._untouched

    def touched(self) -> Iterator[Page]:
        """The pages with an object, in the order of ``values``, without making the others'."""
        pages = self._pages
        for index in sorted(i for i in pages if self._is_filled(i)):
            yield pages[index]
        for index, page in list(pages.items()):
            if not self._is_filled(index):
                yield page
