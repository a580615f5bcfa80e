"""Anonymous memory in the fault path: first touch, copy-on-write, and swap-in.

Mirrors mm/memory.c at v4.19:

* ``vma_is_anonymous()``: no ``vm_ops`` (include/linux/mm.h);
* ``do_anonymous_page()``: a read maps the shared zero page read-only; a
  write allocates a zeroed page, charges it (``mem_cgroup_try_charge_delay``,
  which may reclaim under the fault's mmap_sem) and maps it writable;
* ``do_wp_page()`` on a private mapping: an anonymous page only this PTE
  maps is reused (``reuse_swap_page``: it leaves the swap cache); otherwise
  ``wp_page_copy()`` charges and maps a private copy (the zero page, a
  file page of a ``MAP_PRIVATE`` mapping, a shared swap-cache page);
* ``do_swap_page()``: look the entry up in the swap cache, else
  ``swapin_readahead`` (the reads are *submitted* with mmap_sem held, and
  under io.latency the submitter sleeps in the throttle holding it; a
  one-page readahead window, which random swap-ins have, waits for the read
  itself with the sem held, policy ``swapin_sync``), then
  ``lock_page_or_retry``: with ``ALLOW_RETRY`` the sem is dropped to wait
  for the page's read and the fault returns ``VM_FAULT_RETRY``; the retry
  finds the page in the swap cache. Then the charge (up to 5.7), the PTE,
  ``swap_free`` and, when swap is over half full, ``try_to_free_swap``.

What changes across the versions here: 5.1's filemap_fault rework
(6b4c9f446981) does not touch ``do_swap_page``, so swap-in IO is submitted
under mmap_sem in 4.19, 5.1 and 6.1 alike; 5.7's retry rule (4064b9827063)
lets ``lock_page_or_retry`` drop on every attempt (``fault_retry``);
6.1 has ``folio_lock_or_retry`` with the same rule; 5.8 moved the charge to
the swap-cache allocation (``swapin_charge``). Swap faults under a per-VMA
lock (6.4: ``do_swap_page`` returns ``VM_FAULT_RETRY`` at once and the fault
is redone under mmap_lock; later releases handle it under the VMA lock)
belong to the per-VMA-lock model.

Emulation notes:
    One swap area; no KSM, THP, userfaultfd, ``SWP_SYNCHRONOUS_IO`` or
    device-private entries; no fork, so an anonymous page has one PTE.
    The zero page is one uncharged page per kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from actors.kernel_types import FaultFlag, PageFlag, VmFaultResult, vm_fault_t
from actors.mm.filemap_fault import lock_page_or_retry
from actors.mm.memcontrol import mem_cgroup_charge, mem_cgroup_oom_kill
from actors.mm.mmap import VmFlag, vma_end_read
from actors.mm.page import Page, page_add_rmap, page_mapcount, page_remove_rmap, put_page, unlock_page
from actors.mm.swap import swap_cluster_readahead

if TYPE_CHECKING:
    from actors.mm.memcontrol import MemCgroup
    from actors.mm.memory import VmFault
    from actors.mm.mmap import MmStruct, VmAreaStruct
    from actors.sched.task import TaskStruct


def vma_is_anonymous(vma: VmAreaStruct) -> bool:
    """``vma_is_anonymous()`` (include/linux/mm.h): a VMA without ``vm_ops``."""
    return vma.vma_is_anonymous()


def vmf_anon_prepare(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``vmf_anon_prepare()`` (mm/memory.c, 6.7+): make sure the VMA has an ``anon_vma``.

    Under the VMA lock a missing ``anon_vma`` cannot be set up (it needs
    mmap_lock): drop the VMA lock and return RETRY, and the mmap_lock
    attempt does it (``__anon_vma_prepare``). Under mmap_lock, or before
    6.7, it is just ``anon_vma_prepare``.
    """
    vma = vmf.vma
    if vma.anon_vma:
        return 0
    if vmf.flags & FaultFlag.VMA_LOCK:
        vma_end_read(current, vma)
        current.dropped_vma = vma
        return VmFaultResult.RETRY
    vma.anon_vma = True
    return 0


def mm_memcg(current: TaskStruct, mm: MmStruct) -> MemCgroup:
    """``get_mem_cgroup_from_mm()``: the memcg of the mm's owner."""
    memcg = current.kernel.memcg
    return memcg.groups[current.kernel.mm_cgroup.get(mm.owner, "")]


def _map_anon(vmf: VmFault, page: Page, write: bool) -> None:
    """``set_pte_at()`` + ``page_add_new_anon_rmap()``: the PTE takes the caller's reference."""
    mm = vmf.vma.vm_mm
    mm.set_pte(vmf.address, page, write)
    page_add_rmap(page, vmf.vma, vmf.address)


async def _charge_or_oom(current: TaskStruct, page: Page, memcg: MemCgroup) -> bool:
    """``mem_cgroup_try_charge_delay()`` of a fault's page; on failure the memcg OOM (the faulter dies)."""
    if not await mem_cgroup_charge(current, page, memcg):
        return True
    mem_cgroup_oom_kill(current, memcg)
    return False


async def do_anonymous_page(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_anonymous_page()`` (mm/memory.c, v4.19): the zero page for a read, a charged zeroed page for a write."""
    vma = vmf.vma
    if vma.vm_flags & VmFlag.SHARED:
        return VmFaultResult.SIGBUS
    kernel = current.kernel
    if not vmf.flags & FaultFlag.WRITE:
        page = kernel.zero_page
        page.refcount += 1
        vma.vm_mm.set_pte(vmf.address, page, False)
        return 0
    ret = vmf_anon_prepare(current, vmf)  # 4.19: anon_vma_prepare(); 6.7+: RETRY under the VMA lock
    if ret:
        return ret
    page = Page(None, vmf.address)
    page.flags = PageFlag.UPTODATE | PageFlag.SWAPBACKED
    if not await _charge_or_oom(current, page, mm_memcg(current, vma.vm_mm)):
        put_page(page)
        return 0
    if vmf.address in vma.vm_mm.ptes or vmf.address in vma.vm_mm.swap_ptes:
        put_page(page)  # another thread mapped it while the charge reclaimed
        return 0
    kernel.count("anon_pages_allocated")
    _map_anon(vmf, page, bool(vma.vm_flags & VmFlag.WRITE))
    return 0


async def wp_page_copy(current: TaskStruct, vmf: VmFault, old: Page, orig_pte: int) -> vm_fault_t:
    """``do_wp_page()`` on a private mapping (mm/memory.c, v4.19): reuse an exclusive anonymous page, else copy.

    *old* is the page the read-only PTE maps, *orig_pte* the token
    ``mm.ptes.watch`` gave for it. The copy is charged to the mm's memcg
    before the old PTE goes; if the PTE changed while the charge reclaimed,
    the copy is dropped.
    """
    vma = vmf.vma
    mm = vma.vm_mm
    swap = current.kernel.swap
    if old.flags & PageFlag.SWAPBACKED and page_mapcount(old) == 1 and not old.flags & PageFlag.WRITEBACK:
        if old.flags & PageFlag.SWAPCACHE and not swap.swap_count(old.private):
            swap.delete_from_swap_cache(old)  # reuse_swap_page(): the slot is freed
        if not old.flags & PageFlag.SWAPCACHE:
            old.flags |= PageFlag.DIRTY
            mm.ptes.pte_mkwrite(vmf.address)  # wp_page_reuse()
            return VmFaultResult.WRITE
    ret = vmf_anon_prepare(current, vmf)  # wp_page_copy(): vmf_anon_prepare first (164b06f238b9, 6.7)
    if ret:
        return ret
    copy = Page(None, vmf.address)
    copy.flags = PageFlag.UPTODATE | PageFlag.SWAPBACKED
    if not await _charge_or_oom(current, copy, mm_memcg(current, mm)):
        put_page(copy)
        return 0
    if not mm.ptes.pte_unchanged(vmf.address, orig_pte):
        put_page(copy)
        return 0
    mm.ptes.ptep_get_and_clear(vmf.address)
    if old.mapping is not None or old.flags & PageFlag.SWAPBACKED:
        page_remove_rmap(old, vma, vmf.address)
    put_page(old)
    _map_anon(vmf, copy, True)
    return VmFaultResult.WRITE


async def do_swap_page(current: TaskStruct, vmf: VmFault, entry: int) -> vm_fault_t:
    """``do_swap_page()`` (mm/memory.c, v4.19; the charge point moves in 5.8, see the module).

    Under 6.4's per-VMA locks a swap fault returns RETRY at once and is
    redone under mmap_lock (``if (vmf->flags & FAULT_FLAG_VMA_LOCK)``, v6.4;
    the fault entry drops the VMA lock); from 6.5 (1235ccd05b6d) it swaps in
    under the VMA lock, as v6.12 does here.
    """
    kernel = current.kernel
    if vmf.flags & FaultFlag.VMA_LOCK and kernel.policy.per_vma_lock == "anon":
        return VmFaultResult.RETRY
    swap = kernel.swap
    vma = vmf.vma
    mm = vma.vm_mm
    memcg = mm_memcg(current, mm)
    ret = 0
    page = swap.lookup_swap_cache(entry, fault=True)
    if page is None:
        start = current.actor.now_ns
        entered = kernel.psi.memstall_enter(current)  # a swap-in read is a refault (see actors.sched.psi)
        page = await swap_cluster_readahead(current, swap, entry, memcg)
        kernel.psi.memstall_leave(current, entered)
        if current.mmap_sem_held:
            kernel.count("swapin_submit_under_mmap_sem_ns", current.actor.now_ns - start)
        if page is None:
            if mm.swap_ptes.get(vmf.address) == entry:
                mem_cgroup_oom_kill(current, memcg)
            return 0
        ret = VmFaultResult.MAJOR
        kernel.count_vm_event("PGMAJFAULT", current)
    entered = kernel.psi.memstall_enter(current) if page.flags & PageFlag.LOCKED else False
    locked = await lock_page_or_retry(current, page, vmf, vmf.flags)
    kernel.psi.memstall_leave(current, entered)
    if not locked:
        put_page(page)
        return ret | VmFaultResult.RETRY
    if not page.flags & PageFlag.SWAPCACHE or page.private != entry:
        unlock_page(current, page)  # reused or freed under us: the access faults again
        put_page(page)
        return ret
    if page.mem_cgroup is None and not await _charge_or_oom(current, page, swap.swap_cgroup.get(entry, memcg)):
        unlock_page(current, page)
        put_page(page)
        return ret
    if mm.swap_ptes.get(vmf.address) != entry or vmf.address in mm.ptes:
        unlock_page(current, page)  # out_nomap: somebody else faulted it in
        put_page(page)
        return ret
    if not page.flags & PageFlag.UPTODATE:
        unlock_page(current, page)
        put_page(page)
        return ret | VmFaultResult.SIGBUS
    del mm.swap_ptes[vmf.address]
    write = False
    if vmf.flags & FaultFlag.WRITE and swap.swap_count(entry) == 1 and not page.flags & PageFlag.WRITEBACK:
        write = True  # reuse_swap_page(): exclusive, so map it writable and dirty
        page.flags |= PageFlag.DIRTY
        ret |= VmFaultResult.WRITE
    _map_anon(vmf, page, write)  # the lookup's (or readahead's) reference moves to the PTE
    swap.swap_free(entry)
    if write or swap.vm_swap_full():
        swap.try_to_free_swap(page)
    unlock_page(current, page)
    return ret


def zap_anon_range(current: TaskStruct, vma: VmAreaStruct) -> None:
    """The anonymous half of ``zap_pte_range()`` (mm/memory.c, v4.19), before ``remove_vma`` drops the PTEs.

    A present anonymous page leaves the page's reverse map
    (``page_remove_rmap``); a swap entry is released with
    ``free_swap_and_cache``: the slot's count drops, and a swap-cache page
    nobody maps, not under writeback, leaves the cache, freeing the slot.
    """
    mm = vma.vm_mm
    swap = current.kernel.swap
    start, end = vma.vm_start, vma.vm_end
    if end - start <= len(mm.ptes) + len(mm.swap_ptes):
        addresses: Iterable[int] = range(start, end)
    else:  # what is mapped or swapped, not the VMA's size; ascending as the walk meets them
        addresses = sorted({a for table in (mm.ptes, mm.swap_ptes) for a in table if start <= a < end})
    for address in addresses:
        page = mm.ptes.get(address)
        if page is not None and page.flags & PageFlag.SWAPBACKED:
            page_remove_rmap(page, vma, address)
        entry = mm.swap_ptes.pop(address, None)
        if entry is not None:
            swap.swap_free(entry)
            page = swap.cache.get(entry)
            if page is not None and not page.flags & PageFlag.LOCKED:
                swap.try_to_free_swap(page)
