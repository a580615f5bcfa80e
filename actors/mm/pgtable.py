"""An mm's page tables: its present PTEs, by page number.

Mirrors the PTE level of the kernel's page tables at v4.19
(include/asm-generic/pgtable.h, arch/x86/include/asm/pgtable.h):
``set_pte_at``, ``ptep_get_and_clear``, ``ptep_set_wrprotect``,
``pte_mkwrite`` and ``pte_write``, and ``vm_normal_page`` for the page a PTE
maps; the range walks of mm/memory.c's ``zap_pte_range`` (munmap) and
mm/mprotect.c's ``change_protection`` (to read-only). A PTE holds a
reference on its page (the caller's, moved in).

Emulation notes:
    One level of PTE tables under a dict (the kernel has 512 PTEs a table
    and four levels above): a table covers ``PTES_PER_TABLE`` pages, a list
    of that many page slots (``None``: ``pte_none``) and, last, an int of
    the table's write bits; an empty table is freed (``free_pte_range``).
    The fault-around window is one table. A PTE is an entry, not an
    object, so ``pte_same`` cannot compare objects: ``watch`` /
    ``pte_unchanged`` tell a sleeper whether the PTE it saw was cleared
    since (re-mapping the same page counts as changed, as a fresh PTE
    object did before).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.mm.page import Page

#: Pages a PTE table covers (``PTRS_PER_PTE`` is 512 on x86-64; see the module).
PTES_PER_TABLE = 16
_SHIFT = 4
_MASK = PTES_PER_TABLE - 1
_WRITE = PTES_PER_TABLE  # the slot of a table's write bits


def _outside(base: int, start: int, end: int) -> int:
    """The slot bits of the table at *base* that lie outside [*start*, *end*)."""
    return sum(1 << slot for slot in range(PTES_PER_TABLE) if not start <= base + slot < end)


class PageTables:
    """The present PTEs of one mm: ``in``, ``get``, ``len`` and ascending iteration as a dict would give."""

    __slots__ = ("_tables", "_nr", "_watched")

    def __init__(self) -> None:
        self._tables: dict[int, list] = {}
        self._nr = 0
        #: address → [sleepers watching its PTE, clears since the first began]
        self._watched: dict[int, list[int]] = {}

    def __contains__(self, address: int) -> bool:
        table = self._tables.get(address >> _SHIFT)
        return table is not None and table[address & _MASK] is not None

    def get(self, address: int) -> Page | None:
        """``vm_normal_page()`` of the PTE at *address*: the page it maps, or ``None`` if none is present."""
        table = self._tables.get(address >> _SHIFT)
        return None if table is None else table[address & _MASK]

    def pte_none(self, start: int, end: int) -> list[int]:
        """The addresses in [*start*, *end*) with no PTE, ascending (one table lookup for a window within a table)."""
        tables = self._tables
        free = []
        table = None
        key = -1
        for address in range(start, end):
            if address >> _SHIFT != key:
                key = address >> _SHIFT
                table = tables.get(key)
            if table is None or table[address & _MASK] is None:
                free.append(address)
        return free

    def pte_write(self, address: int) -> bool:
        """``pte_write()`` of the present PTE at *address*."""
        return bool(self._tables[address >> _SHIFT][_WRITE] >> (address & _MASK) & 1)

    def set_pte_at(self, address: int, page: Page, write: bool) -> None:
        """``set_pte_at()`` where no PTE is present."""
        key = address >> _SHIFT
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = [None] * PTES_PER_TABLE + [0]
        slot = address & _MASK
        if table[slot] is not None:
            raise KeyError(f"a PTE is present at {address}")
        table[slot] = page
        if write:
            table[_WRITE] |= 1 << slot
        self._nr += 1

    def ptep_get_and_clear(self, address: int) -> Page:
        """``ptep_get_and_clear()``: remove the present PTE at *address*; the page (its reference is the caller's now)."""
        key = address >> _SHIFT
        table = self._tables[key]
        slot = address & _MASK
        page = table[slot]
        if page is None:
            raise KeyError(address)
        table[slot] = None
        table[_WRITE] &= ~(1 << slot)
        self._nr -= 1
        if table.count(None) == PTES_PER_TABLE:
            del self._tables[key]
        if self._watched:
            watch = self._watched.get(address)
            if watch is not None:
                watch[1] += 1
        return page

    def ptep_set_wrprotect(self, address: int) -> None:
        """``ptep_set_wrprotect()`` of the present PTE at *address*."""
        self._tables[address >> _SHIFT][_WRITE] &= ~(1 << (address & _MASK))

    def pte_mkwrite(self, address: int) -> None:
        """``pte_mkwrite()`` (with ``set_pte_at``) of the present PTE at *address*."""
        self._tables[address >> _SHIFT][_WRITE] |= 1 << (address & _MASK)

    def __len__(self) -> int:
        return self._nr

    def __iter__(self) -> Iterator[int]:
        """The addresses with a present PTE, ascending."""
        for key in sorted(self._tables):
            table = self._tables[key]
            base = key << _SHIFT
            for slot in range(PTES_PER_TABLE):
                if table[slot] is not None:
                    yield base + slot

    def _keys(self, start: int, end: int) -> list[int]:
        """The tables over [*start*, *end*), ascending: the range's, or the mm's if it has fewer (the cost is what is mapped)."""
        tables = self._tables
        first, last = start >> _SHIFT, (end - 1) >> _SHIFT
        if last - first < len(tables):
            return [key for key in range(first, last + 1) if key in tables]
        return sorted(key for key in tables if first <= key <= last)

    def change_protection(self, start: int, end: int) -> None:
        """``change_protection()`` to read-only (mm/mprotect.c, v4.19): clear the write bit of every PTE in [*start*, *end*)."""
        for key in self._keys(start, end):
            base = key << _SHIFT
            if start <= base and base + PTES_PER_TABLE <= end:
                self._tables[key][_WRITE] = 0
            else:
                self._tables[key][_WRITE] &= _outside(base, start, end)

    def zap_pte_range(self, start: int, end: int) -> tuple[list[int], list[Page]]:
        """``zap_pte_range()`` + ``free_pte_range()``: clear every PTE in [*start*, *end*).

        Returns the addresses, ascending, and the pages they mapped (whose
        references are the caller's now).
        """
        tables = self._tables
        addresses: list[int] = []
        pages: list[Page] = []
        for key in self._keys(start, end):
            table = tables[key]
            base = key << _SHIFT
            whole = start <= base and base + PTES_PER_TABLE <= end
            for slot in range(PTES_PER_TABLE):
                page = table[slot]
                if page is not None and (whole or start <= base + slot < end):
                    addresses.append(base + slot)
                    pages.append(page)
                    table[slot] = None
            if whole:
                del tables[key]
                continue
            table[_WRITE] &= _outside(base, start, end)
            if table.count(None) == PTES_PER_TABLE:
                del tables[key]
        self._nr -= len(pages)
        if self._watched:
            for address in addresses:
                watch = self._watched.get(address)
                if watch is not None:
                    watch[1] += 1
        return addresses, pages

    def resident_run(self, addresses: list[int], start: int, write: bool, limit: int) -> int:
        """How many of *addresses* from *start* on (at most *limit*) have a PTE that serves the access (a write needs the write bit)."""
        tables = self._tables
        n = 0
        for address in itertools.islice(addresses, start, start + limit):
            table = tables.get(address >> _SHIFT)
            if table is None:
                break
            slot = address & _MASK
            if table[slot] is None or (write and not table[_WRITE] >> slot & 1):
                break
            n += 1
        return n

    # -- pte_same --------------------------------------------------------------

    def watch(self, address: int) -> int:
        """A sleeper saw the PTE at *address* (``vmf->orig_pte``): a token for ``pte_unchanged``; ``unwatch`` after."""
        watch = self._watched.setdefault(address, [0, 0])
        watch[0] += 1
        return watch[1]

    def pte_unchanged(self, address: int, token: int) -> bool:
        """``pte_same(*vmf->pte, vmf->orig_pte)``: the PTE watched with *token* was not cleared since."""
        return self._watched[address][1] == token and address in self

    def unwatch(self, address: int) -> None:
        watch = self._watched[address]
        watch[0] -= 1
        if not watch[0]:
            del self._watched[address]
