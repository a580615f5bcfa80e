"""The generic fault path: ``handle_mm_fault`` down to ``->fault`` and ``->page_mkwrite``.

Mirrors mm/memory.c at v4.19 for file-backed VMAs, with the V3 series'
changes behind the policy switches:

* patch 1/7: ``struct vm_fault`` gains ``cached_page``; x86 keeps one
  ``vm_fault`` across attempts through ``handle_mm_fault_cacheable`` while
  ``handle_mm_fault`` (every other caller, e.g. GUP) still builds and
  cleans up its own;
* patch 6/7: ``do_page_mkwrite`` passes ``FAULT_FLAG_ALLOW_RETRY`` down and
  its callers treat ``VM_FAULT_RETRY`` like an error (policy
  ``page_mkwrite = "v3-btrfs"``);
* 89b15332af7c (policy ``bdp_drop_mmap_sem``): ``fault_dirty_shared_page``
  drops the sem before ``balance_dirty_pages_ratelimited`` and returns RETRY;
* per-VMA locks (policy ``per_vma_lock``, docs/KERNELS-6x.md):
  ``lock_vma_under_rcu`` (6.4: anonymous VMAs with an ``anon_vma`` only;
  6.12: any VMA) and ``vmf_anon_prepare`` (6.7+: a fault under the VMA lock
  that needs an ``anon_vma`` the VMA lacks drops the lock and retries).
  Under ``file`` every file fault path runs under the VMA lock, as 6.7+
  allows for vm_ops with ``->map_pages`` (``vmf_can_call_fault``; every
  filesystem here maps pages through ``filemap_map_pages``).

Anonymous VMAs (``vma_is_anonymous``), swap entries and copy-on-write of a
private mapping are ``actors.mm.anon``'s (``do_anonymous_page``,
``do_swap_page``, ``wp_page_copy``); ``do_cow_fault`` charges its copy to
the memcg.

Call graph (read fault on a file VMA)::

    handle_mm_fault → handle_pte_fault → do_fault → do_read_fault
        → do_fault_around (filemap_map_pages) | __do_fault → vm_ops.fault
        → finish_fault → unlock_page

Emulation notes:
    No page-table levels, THP, NUMA or userfaultfd. PTEs are
    ``mm.ptes`` entries holding one page reference each; swap entries are
    ``mm.swap_ptes``. Private (COW) write faults copy into an anonymous page
    outside the page cache.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from actors.kernel_types import VM_FAULT_ERROR, FaultFlag, PageFlag, VmFaultResult, vm_fault_t
from actors.mm.anon import do_anonymous_page, do_swap_page, mm_memcg, vma_is_anonymous, vmf_anon_prepare, wp_page_copy
from actors.mm.filemap import fput
from actors.mm.filemap_fault import maybe_unlock_mmap_for_io
from actors.mm.memcontrol import mem_cgroup_charge, mem_cgroup_oom_kill
from actors.mm.mmap import MmStruct, VmAreaStruct, VmFlag, vma_end_read, vma_start_read
from actors.mm.page import (
    Page,
    get_page,
    lock_page,
    page_add_rmap,
    put_page,
    trylock_page,
    unlock_page,
)

from actors.sched.core import charge

if TYPE_CHECKING:
    from actors.sched.task import TaskStruct

FAULT_AROUND_PAGES = 16  # fault_around_bytes = 64 KiB
_FAIL = VM_FAULT_ERROR | VmFaultResult.NOPAGE | VmFaultResult.RETRY


@attrs.frozen
class VmOperations:
    """``struct vm_operations_struct``: the filesystem's ``fault`` and ``page_mkwrite``."""

    fault: Callable[[TaskStruct, VmFault], Awaitable[vm_fault_t]]
    page_mkwrite: Callable[[TaskStruct, VmFault], Awaitable[vm_fault_t]]


class VmFault:
    """``struct vm_fault`` (with V3's ``cached_page`` and ``cached_size``)."""

    __slots__ = ("vma", "address", "pgoff", "flags", "page", "cached_page", "cached_size")

    def __init__(self) -> None:
        self.vma: VmAreaStruct | None = None
        self.address = 0
        self.pgoff = 0
        self.flags = 0
        self.page: Page | None = None
        self.cached_page: Page | None = None
        self.cached_size = 0


def _vma_use(current: TaskStruct, vma: VmAreaStruct, where: str) -> None:
    """Invariant hook ``dropped_means_dropped`` (``Kernel.vma_use``), if the kernel has it."""
    check = getattr(current.kernel, "vma_use", None)
    if check is not None:
        check(current, vma, where)


def lock_vma_under_rcu(current: TaskStruct, mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``lock_vma_under_rcu()`` (mm/memory.c, v6.4 and v6.12): the VMA at *address*, read-locked, or ``None``.

    6.4 (50ee32537206) takes only anonymous VMAs (``vma_is_anonymous``) that
    already have an ``anon_vma`` (the 6.4.x stable fix checks it after
    locking); 6.6 (350f6bbca1de) dropped the first test and 6.10 moved the
    second into the fault handlers (``vmf_anon_prepare``), as 6.12 has it.
    ``None`` counts ``VMA_LOCK_ABORT``; a VMA found detached (unmapped after
    the walk) counts ``VMA_LOCK_MISS`` and the walk is repeated.

    Emulation notes:
        The RCU walk (``mas_walk``) and the trylock run without a switch in
        between, so a VMA is never detached between them and a miss needs a
        caller that hands a detached VMA in (the tests do).
    """
    anon_only = current.kernel.policy.per_vma_lock == "anon"
    while True:
        vma = mm.find_vma(address)
        if vma is None or vma.vm_start > address:
            break
        if anon_only and not vma.vma_is_anonymous():
            break
        if not vma_start_read(current, vma):
            break
        if anon_only and not vma.anon_vma:
            vma_end_read(current, vma)
            break
        if vma.vm_lock.detached:
            vma_end_read(current, vma)
            current.kernel.count_vm_event("VMA_LOCK_MISS", current)
            continue
        return vma
    current.kernel.count_vm_event("VMA_LOCK_ABORT", current)
    return None


def vm_fault_init(vmf: VmFault, vma: VmAreaStruct, address: int, flags: int) -> None:
    """``vm_fault_init()`` (V3 patch 1/7): reset only vma, address and flags."""
    vmf.vma = vma
    vmf.address = address
    vmf.flags = flags


def vm_fault_cleanup(vmf: VmFault) -> None:
    """``vm_fault_cleanup()`` (V3 patch 1/7): put a leftover cached page."""
    if vmf.cached_page is not None:
        put_page(vmf.cached_page)
        vmf.cached_page = None


async def handle_mm_fault(current: TaskStruct, vma: VmAreaStruct, address: int, flags: int) -> vm_fault_t:
    """``handle_mm_fault()``: fault with a private ``vm_fault`` (cleaned up at once)."""
    vmf = VmFault()
    vm_fault_init(vmf, vma, address, flags)
    ret = await handle_mm_fault_cacheable(current, vmf)
    vm_fault_cleanup(vmf)
    return ret


async def handle_mm_fault_cacheable(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``handle_mm_fault_cacheable()`` (V3) ≡ ``__handle_mm_fault`` + ``handle_pte_fault``."""
    vma = vmf.vma
    vmf.pgoff = vmf.address - vma.vm_start + vma.vm_pgoff
    vmf.page = None
    mm = vma.vm_mm
    page = mm.ptes.get(vmf.address)
    if page is None:
        entry = mm.swap_ptes.get(vmf.address)
        if entry is not None:
            return await do_swap_page(current, vmf, entry)
        if vma_is_anonymous(vma):
            return await do_anonymous_page(current, vmf)
        return await do_fault(current, vmf)
    if vmf.flags & FaultFlag.WRITE and not mm.ptes.pte_write(vmf.address):
        return await do_wp_page(current, vmf, page)
    return 0


async def do_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_fault()``: pick the read, COW or shared path."""
    if not vmf.flags & FaultFlag.WRITE:
        return await do_read_fault(current, vmf)
    if not vmf.vma.vm_flags & VmFlag.SHARED:
        return await do_cow_fault(current, vmf)
    return await do_shared_fault(current, vmf)


async def __do_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``__do_fault()``: call ``vm_ops->fault``; the page comes back locked."""
    ret = await vmf.vma.vm_ops.fault(current, vmf)
    if ret & _FAIL:
        return ret
    if not ret & VmFaultResult.LOCKED:
        await lock_page(current, vmf.page)
    return ret


def finish_fault(current: TaskStruct, vmf: VmFault, *, write: bool) -> vm_fault_t:
    """``finish_fault()`` → ``alloc_set_pte()``: install the PTE (its reference is the fault's)."""
    _vma_use(current, vmf.vma, "finish_fault")
    mm = vmf.vma.vm_mm
    if vmf.address in mm.ptes:
        return VmFaultResult.NOPAGE  # another thread mapped it meanwhile
    mm.set_pte(vmf.address, vmf.page, write, vmf.vma)
    return 0


def do_fault_around(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_fault_around()`` → ``filemap_map_pages()``: map cached neighbours, no IO.

    Maps uptodate, unlocked pages without ``PG_readahead`` in the aligned
    16-page window, decrementing ``mmap_miss`` for each (``[costs]
    fault_around_pte`` each, paid at the end of the attempt); returns
    ``VM_FAULT_NOPAGE`` if that mapped the faulting address.
    """
    vma = vmf.vma
    start = max(vmf.address - (vmf.address % FAULT_AROUND_PAGES), vma.vm_start)
    end = min(start + FAULT_AROUND_PAGES, vma.vm_end)
    file = vma.vm_file
    mapping = file.f_mapping
    ra = file.f_ra
    max_idx = mapping.host.nr_pages
    ptes = vma.vm_mm.ptes
    delta = vma.vm_pgoff - vma.vm_start
    mapped = 0
    for address in ptes.pte_none(start, end):
        page = mapping.pages.get(address + delta)
        if page is None or page.flags & (PageFlag.READAHEAD | PageFlag.LOCKED) or not page.flags & PageFlag.UPTODATE:
            continue
        if page.index >= max_idx or not trylock_page(page, current.comm):
            continue
        get_page(page)
        if ra.mmap_miss > 0:
            ra.mmap_miss -= 1
        vma.vm_mm.set_pte(address, page, False, vma)
        unlock_page(current, page)
        mapped += 1
    charge(current, "fault_around_pte", mapped)
    return VmFaultResult.NOPAGE if vmf.address in ptes else 0


async def do_read_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_read_fault()``: fault-around first, then ``__do_fault``; map read-only."""
    ret = do_fault_around(current, vmf)
    if ret:
        return ret
    ret = await __do_fault(current, vmf)
    if ret & _FAIL:
        return ret
    ret |= finish_fault(current, vmf, write=False)
    unlock_page(current, vmf.page)
    if ret & _FAIL:
        put_page(vmf.page)
    return ret


async def do_cow_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_cow_fault()``: read the file page, copy it into a private writable page.

    ``vmf_anon_prepare`` first (4de8c93a4751, 6.7: the COW fault under the VMA lock).
    """
    ret = vmf_anon_prepare(current, vmf)
    if ret:
        return ret
    ret = await __do_fault(current, vmf)
    if ret & _FAIL:
        return ret
    copy = Page(None, vmf.address)
    copy.flags = PageFlag.UPTODATE | PageFlag.SWAPBACKED
    if await mem_cgroup_charge(current, copy, mm_memcg(current, vmf.vma.vm_mm)):
        mem_cgroup_oom_kill(current, mm_memcg(current, vmf.vma.vm_mm))
        unlock_page(current, vmf.page)
        put_page(vmf.page)
        return 0
    unlock_page(current, vmf.page)
    put_page(vmf.page)
    vmf.page = copy
    ret |= finish_fault(current, vmf, write=True)
    if not ret & _FAIL and not ret & VmFaultResult.NOPAGE:
        page_add_rmap(copy, vmf.vma, vmf.address)  # page_add_new_anon_rmap()
    else:
        put_page(copy)
    return ret


async def do_page_mkwrite(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_page_mkwrite()``: tell the filesystem the page becomes writable.

    ``vmf->flags`` is overwritten with ``WRITE|MKWRITE`` for the call (so
    V3's ``FAULT_FLAG_USED_CACHED`` never reaches ``->page_mkwrite``: docs/DESIGN.md
    D7); under V3 patch 6/7 only ALLOW_RETRY is copied back in.
    """
    page = vmf.page
    old_flags = vmf.flags
    v3 = current.kernel.policy.page_mkwrite == "v3-btrfs"
    vmf.flags = FaultFlag.WRITE | FaultFlag.MKWRITE
    if v3:
        vmf.flags |= old_flags & FaultFlag.ALLOW_RETRY
    ret = await vmf.vma.vm_ops.page_mkwrite(current, vmf)
    vmf.flags = old_flags
    fail = VM_FAULT_ERROR | VmFaultResult.NOPAGE | (VmFaultResult.RETRY if v3 else 0)
    if ret & fail:
        return ret
    if not ret & VmFaultResult.LOCKED:
        await lock_page(current, page)
        if page.mapping is None:
            unlock_page(current, page)
            return 0
        ret |= VmFaultResult.LOCKED
    return ret


async def fault_dirty_shared_page(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``fault_dirty_shared_page()``: dirty, unlock, then ``balance_dirty_pages_ratelimited``.

    With ``bdp_drop_mmap_sem`` (89b15332af7c) the sem is dropped first, as
    ``maybe_unlock_mmap_for_io`` would, and the fault returns RETRY.
    """
    page = vmf.page
    mapping = page.mapping
    writeback = current.kernel.writeback
    writeback.set_page_dirty(page)
    unlock_page(current, page)
    if mapping is None:
        return 0
    fpin = None
    if current.kernel.policy.bdp_drop_mmap_sem:
        fpin = maybe_unlock_mmap_for_io(current, vmf, None)
    await writeback.balance_dirty_pages_ratelimited(current, mapping)
    if fpin is not None:
        fput(fpin)
        return VmFaultResult.RETRY
    return 0


async def do_shared_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``do_shared_fault()``: read the page, ``page_mkwrite`` it, map it writable."""
    ret = await __do_fault(current, vmf)
    if ret & _FAIL:
        return ret
    unlock_page(current, vmf.page)
    tmp = await do_page_mkwrite(current, vmf)
    if not tmp or tmp & (VM_FAULT_ERROR | VmFaultResult.NOPAGE | VmFaultResult.RETRY):
        # RETRY only reaches here under V3 patch 6/7 (do_page_mkwrite filters it otherwise)
        put_page(vmf.page)
        return tmp
    ret |= finish_fault(current, vmf, write=True)
    if ret & _FAIL:
        unlock_page(current, vmf.page)
        put_page(vmf.page)
        return ret
    return ret | await fault_dirty_shared_page(current, vmf)


async def do_wp_page(current: TaskStruct, vmf: VmFault, page: Page) -> vm_fault_t:
    """``do_wp_page()``: a write to the read-only PTE mapping *page*; a private VMA's copy, else ``wp_page_shared()``.

    The PTE is watched while the fault may sleep (``vmf->orig_pte`` for
    ``pte_same``, see ``actors.mm.pgtable``).
    """
    ptes = vmf.vma.vm_mm.ptes
    orig_pte = ptes.watch(vmf.address)
    try:
        if not vmf.vma.vm_flags & VmFlag.SHARED:
            return await wp_page_copy(current, vmf, page, orig_pte)
        return await wp_page_shared(current, vmf, page, orig_pte)
    finally:
        ptes.unwatch(vmf.address)


async def wp_page_shared(current: TaskStruct, vmf: VmFault, page: Page, orig_pte: int) -> vm_fault_t:
    """``wp_page_shared()`` (mm/memory.c, v4.19): ``->page_mkwrite``, then make the PTE writable if it did not change.

    The retried attempt of a V3 btrfs mkwrite lands here (the PTE is present
    read-only), where ``filemap_fault`` and its cached page are never
    consulted: the whole ``page_mkwrite`` runs again, under the sem.
    """
    vma = vmf.vma
    vmf.page = page
    get_page(page)
    tmp = await do_page_mkwrite(current, vmf)
    if not tmp or tmp & (VM_FAULT_ERROR | VmFaultResult.NOPAGE | VmFaultResult.RETRY):
        put_page(page)
        return tmp
    # finish_mkwrite_fault(): the PTE may have changed while we slept
    _vma_use(current, vma, "finish_mkwrite_fault")
    if not vma.vm_mm.ptes.pte_unchanged(vmf.address, orig_pte):
        unlock_page(current, page)
        put_page(page)
        return VmFaultResult.NOPAGE
    vma.vm_mm.ptes.pte_mkwrite(vmf.address)
    ret = await fault_dirty_shared_page(current, vmf)
    put_page(page)
    return VmFaultResult.WRITE | ret
