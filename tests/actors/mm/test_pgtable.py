"""Tests for actors/mm/pgtable.py and the reverse map of actors/mm/page.py: the compact stores agree with plain models.

Hypothesis drives ``PageTables`` and a page's ``rmap`` with random
operations beside the obvious model (a dict of address → (page, write
bit); a list of (vma, address)) and checks every answer: presence,
lookups, write bits, length, ascending iteration, range zaps and
write-protects, resident runs, the ``pte_same`` watch, and the reverse map's walk order and count.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.locking.rwsem import RwsemSemantics
from actors.mm.mmap import MmStruct, VmFlag
from actors.mm.page import Page, page_add_rmap, page_clear_rmap, page_mapcount, page_remove_rmap, page_rmap
from actors.mm.pgtable import PTES_PER_TABLE, PageTables
from emu import Engine, KernelBug, Trace

BASE = 1 << 20
#: Addresses over a few tables, so tables fill, empty and come back.
addresses = st.integers(BASE - 3, BASE + 3 * PTES_PER_TABLE + 2)
ops = st.lists(
    st.tuples(st.sampled_from(["set", "clear", "wrprotect", "mkwrite", "watch", "check", "zap", "protect"]), addresses, st.booleans()),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.lists(addresses, max_size=40), st.booleans())
def test_page_tables_agree_with_a_dict(program: list[tuple[str, int, bool]], run: list[int], write: bool) -> None:
    ptes = PageTables()
    model: dict[int, tuple[Page, bool]] = {}
    watched: dict[int, bool] = {}  # address → cleared since watched
    tokens: dict[int, int] = {}
    pages: dict[int, Page] = {}
    for op, address, bit in program:
        present = address in model
        if op == "set" and not present:
            page = pages.setdefault(address, Page(None, address))
            ptes.set_pte_at(address, page, bit)
            model[address] = (page, bit)
        elif op == "set":
            with pytest.raises(KeyError):
                ptes.set_pte_at(address, model[address][0], bit)
        elif op == "clear" and present:
            assert ptes.ptep_get_and_clear(address) is model.pop(address)[0]
            if address in watched:
                watched[address] = True
        elif op == "clear":
            with pytest.raises(KeyError):
                ptes.ptep_get_and_clear(address)
        elif op in ("wrprotect", "mkwrite") and present:
            (ptes.pte_mkwrite if op == "mkwrite" else ptes.ptep_set_wrprotect)(address)
            model[address] = (model[address][0], op == "mkwrite")
        elif op in ("zap", "protect"):  # a range: from *address*, 5 or 37 pages
            end = address + (37 if bit else 5)
            inside = [a for a in sorted(model) if address <= a < end]
            if op == "protect":
                ptes.change_protection(address, end)
                model.update({a: (model[a][0], False) for a in inside})
            else:
                assert ptes.zap_pte_range(address, end) == (inside, [model[a][0] for a in inside])
                for a in inside:
                    del model[a]
                    if a in watched:
                        watched[a] = True
        elif op == "watch" and present and address not in watched:
            watched[address] = False
            tokens[address] = ptes.watch(address)
        elif op == "check" and address in watched:
            assert ptes.pte_unchanged(address, tokens[address]) is (not watched[address] and present)
        for addr in range(BASE - 3, BASE + 3 * PTES_PER_TABLE + 3):
            assert (addr in ptes) == (addr in model)
            assert ptes.get(addr) is (model[addr][0] if addr in model else None)
            if addr in model:
                assert ptes.pte_write(addr) == model[addr][1]
        assert len(ptes) == len(model)
        assert list(ptes) == sorted(model)
        assert len(ptes._tables) == len({a // PTES_PER_TABLE for a in model})  # an empty table is freed
    for address, cleared in watched.items():
        assert ptes.pte_unchanged(address, tokens[address]) is (not cleared and address in model)
        ptes.unwatch(address)
    assert not ptes._watched
    served = 0
    for address in run[:8]:
        if address not in model or (write and not model[address][1]):
            break
        served += 1
    assert ptes.resident_run(run, 0, write, 8) == served


def test_a_pte_mapped_again_is_not_the_same_pte() -> None:
    """``pte_same`` as the old PTE objects answered it: cleared and mapped again with the same page is a change."""
    ptes = PageTables()
    page = Page(None, BASE)
    ptes.set_pte_at(BASE, page, False)
    token = ptes.watch(BASE)
    ptes.ptep_set_wrprotect(BASE)
    ptes.pte_mkwrite(BASE)
    assert ptes.pte_unchanged(BASE, token)  # the write bit is not the PTE's identity
    ptes.ptep_get_and_clear(BASE)
    ptes.set_pte_at(BASE, page, False)
    assert not ptes.pte_unchanged(BASE, token)
    ptes.unwatch(BASE)
    assert not ptes._watched


def _mm() -> MmStruct:
    return MmStruct(Engine(seed=0, trace=Trace(keep=False)), "m", 1, RwsemSemantics.V4_19)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.booleans()), max_size=40))
def test_the_reverse_map_agrees_with_a_list(program: list[tuple[bool, int, bool]]) -> None:
    """Adds and removes of (vma, address) on anonymous pages, some indexed by their address, some not (swap-ins)."""
    mm = _mm()
    vmas = [mm.insert_vma(8, VmFlag.READ, None, f"v{i}") for i in range(3)]
    page = Page(None, vmas[0].vm_start + 2)
    model: list[tuple[object, int]] = []
    for add, which, at_index in program:
        vma = vmas[which % 3]
        address = page.index if at_index and which % 3 == 0 else vma.vm_start + which
        if add and (vma, address) not in model:
            page_add_rmap(page, vma, address)
            model.append((vma, address))
        elif not add and (vma, address) in model:
            page_remove_rmap(page, vma, address)
            model.remove((vma, address))
        elif not add:
            with pytest.raises(KernelBug):
                page_remove_rmap(page, vma, address)
        assert page_rmap(page) == model and page_mapcount(page) == len(model)
        assert (type(page.rmap) is list) == (len(model) > 1)  # one mapping: no list
        assert bool(page.rmap) is bool(model)
    page_clear_rmap(page)
    assert page_rmap(page) == [] and page_mapcount(page) == 0


def test_a_file_page_maps_at_its_index_without_a_tuple() -> None:
    mm = _mm()
    vma = mm.insert_vma(8, VmFlag.READ, None, "f")

    class Mapping:  # only `mapping is not None` matters to the reverse map
        pass

    page = Page(Mapping(), 3)  # type: ignore[arg-type]
    mm.set_pte(vma.vm_start + 3, page, True, vma)
    assert page.rmap is vma and page_rmap(page) == [(vma, vma.vm_start + 3)]
    assert mm.ptes.get(vma.vm_start + 3) is page and mm.ptes.pte_write(vma.vm_start + 3)
    assert mm.remove_vma(vma) == 1 and page_mapcount(page) == 0 and not mm.ptes
