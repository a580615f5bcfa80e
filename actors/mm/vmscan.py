"""Direct reclaim for one memcg: ``try_to_free_mem_cgroup_pages``.

Mirrors mm/vmscan.c at v4.19, simplified: ``try_to_free_mem_cgroup_pages``
→ ``do_try_to_free_pages`` → ``shrink_node`` → ``shrink_node_memcg`` over the
memcg and its descendants (``mem_cgroup_iter``) → ``shrink_page_list``, run
by the task whose charge failed, with whatever locks it holds. Wrapped in
``psi_memstall_enter``/``leave`` as from 4.20. The goal is
``max(nr_pages, SWAP_CLUSTER_MAX)`` pages. One call makes one pass:

1. file pages, oldest first: a clean, unlocked, idle page is unmapped
   (``try_to_unmap``: its PTEs are zapped; the next access refaults) and
   removed from the page cache (``__remove_mapping``). A dirty file page
   is left to the flusher, as 4.19 direct reclaim does (``shrink_page_list``
   writes file pages only from kswapd), and the flusher is woken
   (``wakeup_flusher_threads(WB_REASON_VMSCAN)``);
2. then, with ``may_swap`` and a swap slot free, anonymous pages, oldest
   first: ``add_to_swap`` (a slot, the swap cache, dirty), ``try_to_unmap``
   (each PTE becomes the swap entry), ``pageout`` → ``swap_writepage``; a
   page already in the swap cache and clean (swapped in by a read, not
   written since) is dropped without IO.

Emulation notes:
    No active/inactive lists, referenced bits or ``get_scan_count``
    balancing (swappiness): file pages go first, then anon, oldest first.
    No scan priorities: one pass over the oldest ``SCAN_BATCH`` pages of
    each list per call, and ``try_charge`` retries. Reclaim's CPU time is
    not modelled, only its IO. The kernel does not wait for a swap write it started
    (``pageout`` returns ``PAGE_SUCCESS`` and a later pass frees the clean
    page, the reclaimer throttling in ``wait_iff_congested``); here the
    reclaimer waits for its writes (``wait_on_page_writeback``) and then frees
    the pages: the same task sleeps on the same IO, in one pass. A page
    someone faulted back meanwhile is kept. No kswapd, no global reclaim.
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

from actors.block.blkdev import blk_finish_plug, blk_start_plug, submit_bio
from actors.kernel_types import PageFlag
from actors.mm.filemap import delete_from_page_cache
from actors.mm.page import get_page, page_clear_rmap, page_mapcount, page_rmap, put_page, trylock_page, unlock_page, wait_on_page_writeback
from actors.mm.swap import swap_writepage

if TYPE_CHECKING:
    from actors.mm.memcontrol import MemCgroup
    from actors.mm.page import Page
    from actors.sched.task import TaskStruct

SWAP_CLUSTER_MAX = 32
#: Pages looked at per list per call (an estimate: the kernel scans ``lru_size >> priority``, priority 12 down to 0).
SCAN_BATCH = 1024
_BUSY = PageFlag.LOCKED | PageFlag.WRITEBACK


def _oldest(memcg: MemCgroup, anon: bool) -> list[Page]:
    """The oldest ``SCAN_BATCH`` pages of each list of *memcg*'s subtree, oldest first (``isolate_lru_pages`` order)."""
    lists = [list(itertools.islice((m.lru_anon if anon else m.lru_file).items(), SCAN_BATCH)) for m in memcg.subtree()]
    return [page for _seq, page in heapq.merge(*lists, key=lambda item: item[0])]


async def try_to_free_mem_cgroup_pages(current: TaskStruct, memcg: MemCgroup, nr_pages: int, *, may_swap: bool) -> int:
    """``try_to_free_mem_cgroup_pages()`` (mm/vmscan.c, v4.19): pages freed from *memcg*'s subtree (see the module)."""
    kernel = current.kernel
    nr_to_reclaim = max(nr_pages, SWAP_CLUSTER_MAX)
    start = current.actor.now_ns
    entered = kernel.psi.memstall_enter(current)
    current.actor.log.info("mm_vmscan_memcg_reclaim_begin", memcg=memcg.path, nr=nr_to_reclaim, usage=memcg.usage)
    reclaimed = _shrink_file(current, memcg, nr_to_reclaim)
    swap = kernel.swap
    if reclaimed < nr_to_reclaim and may_swap and swap is not None:
        reclaimed += await _shrink_anon(current, memcg, nr_to_reclaim - reclaimed)
    ns = current.actor.now_ns - start
    current.actor.log.info("mm_vmscan_memcg_reclaim_end", memcg=memcg.path, nr_reclaimed=reclaimed, ns=ns)
    kernel.psi.memstall_leave(current, entered)
    kernel.count("memcg_direct_reclaim")
    kernel.count("memcg_direct_reclaim_ns", ns)
    kernel.count("pgsteal", reclaimed)
    if current.mmap_sem_held:
        kernel.count("memcg_reclaim_under_mmap_sem")
        kernel.count("memcg_reclaim_under_mmap_sem_ns", ns)
    return reclaimed


def _shrink_file(current: TaskStruct, memcg: MemCgroup, nr_to_reclaim: int) -> int:
    """Free clean, idle file pages; count and leave dirty ones to the flusher."""
    reclaimed = dirty = 0
    for page in _oldest(memcg, anon=False):
        if reclaimed >= nr_to_reclaim:
            break
        if page.flags & _BUSY or page.mapping is None or page.refcount != 1 + page_mapcount(page):
            continue  # locked, under writeback, truncated, or someone holds it (a fault in flight)
        if page.flags & PageFlag.DIRTY:
            dirty += 1
            continue
        trylock_page(page, current.comm)
        for vma, address in page_rmap(page):  # try_to_unmap()
            vma.vm_mm.ptes.ptep_get_and_clear(address)
            put_page(page)
        page_clear_rmap(page)
        unlock_page(current, page)
        delete_from_page_cache(page)  # __remove_mapping(): the cache's reference was the last
        reclaimed += 1
    if dirty:
        current.kernel.count("pgscan_dirty_file", dirty)
        current.kernel.writeback.wakeup_flusher(dirty, reason="vmscan")
    return reclaimed


async def _shrink_anon(current: TaskStruct, memcg: MemCgroup, nr_to_reclaim: int) -> int:
    """Swap out idle anonymous pages: unmap them, write the dirty ones, wait, free (see the module)."""
    kernel = current.kernel
    swap = kernel.swap
    reclaimed = 0
    written: list[Page] = []
    bios = []
    for page in _oldest(memcg, anon=True):
        if reclaimed + len(written) >= nr_to_reclaim:
            break
        cached = 1 if page.flags & PageFlag.SWAPCACHE else 0
        if page.flags & _BUSY or page.refcount != page_mapcount(page) + cached:
            continue
        if not cached:
            offset = swap.get_swap_page()  # add_to_swap()
            if not offset:
                kernel.count("swap_full")
                break
            swap.add_to_swap_cache(page, offset)
            swap.swap_cgroup[offset] = page.mem_cgroup
            page.flags |= PageFlag.DIRTY
        get_page(page)
        kernel.memcg.isolate(page)
        trylock_page(page, current.comm)
        for vma, address in page_rmap(page):  # try_to_unmap(): the PTE becomes the swap entry
            mm = vma.vm_mm
            if mm.ptes.pte_write(address):
                page.flags |= PageFlag.DIRTY  # the PTE's dirty bit
            mm.ptes.ptep_get_and_clear(address)
            mm.swap_ptes[address] = page.private
            swap.swap_duplicate(page.private)
            put_page(page)
        page_clear_rmap(page)
        if page.flags & PageFlag.DIRTY:
            bios.append(swap_writepage(current, swap, page))
            written.append(page)
            continue
        swap.delete_from_swap_cache(page)  # clean: __remove_mapping() without IO
        unlock_page(current, page)
        put_page(page)
        reclaimed += 1
    if bios:
        current.actor.log.info("mm_vmscan_swap_out", memcg=memcg.path, nr=len(bios))
        blk_start_plug(current)
        for bio in bios:
            await submit_bio(current, bio)
        blk_finish_plug(current)
    for page in written:
        await wait_on_page_writeback(current, page)
        if page.refcount == 2 and not page_mapcount(page) and not page.flags & (PageFlag.DIRTY | PageFlag.LOCKED):
            swap.delete_from_swap_cache(page)  # __remove_mapping()
            reclaimed += 1
        elif page.mem_cgroup is not None:
            kernel.memcg.putback(page)  # faulted back in meanwhile, or the write failed
        put_page(page)
    return reclaimed
