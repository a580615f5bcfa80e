"""``filemap_fault()`` three ways: v4.19, the V3 series as posted, and v5.1.

Mirrors mm/filemap.c:

* ``filemap_fault_419``: v4.19. Readahead and ``page_cache_read`` are
  submitted **with mmap_sem held** (so io.latency can put the faulting task
  to sleep inside ``submit_bio`` while it holds the sem); only
  ``lock_page_or_retry`` drops it, to wait for a page that is locked.
* ``filemap_fault_v3``: v4.19 with the seed's patches 2/7-5/7 as posted:
  ``maybe_unlock_mmap_for_io`` before sync/async readahead, page_cache_read
  and the re-read; RETRY **as soon as readahead is submitted**, without
  waiting for it (docs/DESIGN.md D2); the open-coded trylock with the
  shadowed ``ret`` (defect 1, harmless); ``vmf->cached_page`` reuse and
  ``FAULT_FLAG_USED_CACHED`` (patches 4-5, policy ``cached_page``).
* ``filemap_fault_v51``: 6b4c9f446981 as merged in v5.1: an ``fpin``
  travels through the function, the sem is dropped at most once, and RETRY
  is returned only once the page is uptodate; ``pagecache_get_page`` with
  ``FGP_FOR_MMAP`` replaces ``page_cache_read``. The same function serves
  6.7+ under the per-VMA lock (``FAULT_FLAG_VMA_LOCK``): every drop goes
  through ``release_fault_lock`` (5d74b2ab2c15), so the VMA lock, not
  mmap_lock, is what it drops for IO and waits.

The retry rule of the caller decides the rest: with ``fault_retry = "once"``
(4.19/5.1 x86) the second attempt has no ALLOW_RETRY, so every drop helper
below keeps the sem and every wait happens under it.

Emulation notes:
    ``max_off`` checks use ``i_size`` at the time of the check; ``-ENOMEM``
    never happens; ``AOP_TRUNCATED_PAGE`` is treated as success (retry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.kernel_types import Errno, FaultFlag, PageFlag, VmFaultResult, vm_fault_t
from actors.mm.filemap import (
    File,
    find_get_page,
    fput,
    get_file,
    page_cache_read,
    pagecache_get_page_for_mmap,
    ra_submit,
)
from actors.mm.mmap import VmFlag, release_fault_lock, up_read
from actors.mm.page import (
    __lock_page,
    __lock_page_killable,
    lock_page,
    lock_page_killable,
    put_page,
    trylock_page,
    unlock_page,
    wait_on_page_locked,
    wait_on_page_locked_killable,
)
from actors.mm.readahead import (
    Madvise,
    ReadaheadDecision,
    do_async_mmap_readahead_decision,
    do_sync_mmap_readahead_decision,
)

if TYPE_CHECKING:
    from actors.mm.memory import VmFault
    from actors.mm.page import Page
    from actors.sched.task import TaskStruct

RETRY = VmFaultResult.RETRY
MAJOR = VmFaultResult.MAJOR
SIGBUS = VmFaultResult.SIGBUS
LOCKED = VmFaultResult.LOCKED
ALLOW_RETRY = FaultFlag.ALLOW_RETRY
RETRY_NOWAIT = FaultFlag.RETRY_NOWAIT
KILLABLE = FaultFlag.KILLABLE
TRIED = FaultFlag.TRIED


def fault_flag_allow_retry_first(current: TaskStruct, flags: int) -> bool:
    """May this attempt drop the sem? 4.19: ALLOW_RETRY; 5.7+ (4064b9827063): and not TRIED."""
    if current.kernel.policy.fault_retry == "many":
        return bool(flags & ALLOW_RETRY) and not flags & TRIED
    return bool(flags & ALLOW_RETRY)


def maybe_unlock_mmap_for_io(current: TaskStruct, vmf: VmFault, fpin: File | None, flags: int | None = None) -> File | None:
    """``maybe_unlock_mmap_for_io()``: pin the file and ``up_read`` if the flags allow.

    V3 (patch 2/7) takes ``(vma, flags)`` and has no *fpin*; v5.1 returns an
    existing *fpin* unchanged (never drops twice). RETRY_NOWAIT keeps the sem.
    Under the VMA lock (6.7+, 5d74b2ab2c15) ``release_fault_lock`` drops the
    VMA lock instead: the fault then holds no lock at all for its IO.
    """
    if fpin is not None:
        return fpin
    flags = vmf.flags if flags is None else flags
    if fault_flag_allow_retry_first(current, flags) and not flags & RETRY_NOWAIT:
        vma = vmf.vma
        fpin = get_file(vma.vm_file)
        release_fault_lock(current, vmf)
        current.dropped_vma = vma
        current.actor.log.info("maybe_unlock_mmap_for_io", mm=vma.vm_mm.owner, ino=vma.vm_file.f_mapping.host.ino)
        return fpin
    return None


async def lock_page_or_retry(current: TaskStruct, page: Page, vmf: VmFault, flags: int) -> bool:
    """``lock_page_or_retry()`` = trylock || ``__lock_page_or_retry()`` (v4.19).

    With retry allowed: RETRY_NOWAIT → 0 with the sem held; else ``up_read``,
    wait for the page to be *unlocked* (not taking it), 0. Otherwise lock it
    (killable: on a fatal signal ``up_read`` and 0), 1. Under the VMA lock
    (a swap-in fault from 6.5, 1235ccd05b6d) the lock dropped is the VMA
    lock (``folio_lock_or_retry`` → ``release_fault_lock``, v6.12).
    """
    if trylock_page(page, current.comm):
        return True
    if fault_flag_allow_retry_first(current, flags):
        if flags & RETRY_NOWAIT:
            return False
        release_fault_lock(current, vmf)
        current.dropped_vma = vmf.vma
        if flags & KILLABLE:
            await wait_on_page_locked_killable(current, page)
        else:
            await wait_on_page_locked(current, page)
        return False
    if flags & KILLABLE:
        if await __lock_page_killable(current, page):
            release_fault_lock(current, vmf)
            return False
    else:
        await __lock_page(current, page)
    return True


# -- readahead entry points of the fault path ---------------------------------------


def _madvise(vmf: VmFault) -> Madvise:
    flags = vmf.vma.vm_flags
    return Madvise.from_hints(rand_read=bool(flags & VmFlag.RAND_READ), seq_read=bool(flags & VmFlag.SEQ_READ))


async def _act_on(current: TaskStruct, file: File, page: Page | None, decision: ReadaheadDecision) -> None:
    """Carry out a readahead decision: clear the marker, submit the window."""
    if page is not None and decision.clears_pg_readahead:
        page.clear(PageFlag.READAHEAD)
    if decision.window is not None:
        await ra_submit(current, file, decision.window)
    elif decision.calls_readahead:
        current.actor.log.info("mm_readahead_skipped", ino=file.f_mapping.host.ino, why=decision.outcome.name)


async def do_sync_mmap_readahead(current: TaskStruct, vmf: VmFault, file: File, offset: int, *, drop: bool, fpin: File | None = None) -> File | None:
    """``do_sync_mmap_readahead()``: read-around (or ondemand for VM_SEQ_READ).

    The decision is ``actors.mm.readahead``'s; *drop* selects the V3/v5.1
    behaviour (``maybe_unlock_mmap_for_io`` right before calling into
    readahead). Returns the pin if the sem was dropped.
    """
    decision = do_sync_mmap_readahead_decision(
        file.f_ra, offset, madvise=_madvise(vmf), blkcg_congested=current.kernel.bdev.blk_cgroup_congested(current.blkcg),
        cached=file.f_mapping.pages,
    )  # fmt: skip
    if drop and decision.calls_readahead:
        fpin = maybe_unlock_mmap_for_io(current, vmf, fpin)
    await _act_on(current, file, None, decision)
    return fpin


async def do_async_mmap_readahead(current: TaskStruct, vmf: VmFault, file: File, page: Page, offset: int, *, drop: bool) -> File | None:
    """``do_async_mmap_readahead()``: extend readahead when the fault hits ``PG_readahead``.

    V3 drops whenever the page has PG_readahead, even with ``ra_pages == 0``
    (defect 4); 5c72feee3e45 (policy ``zero_readahead_fix``) does not drop then.
    """
    decision = do_async_mmap_readahead_decision(
        file.f_ra, offset, madvise=_madvise(vmf), page_readahead=page.test(PageFlag.READAHEAD),
        page_writeback=page.test(PageFlag.WRITEBACK), inode_congested=False,
        blkcg_congested=current.kernel.bdev.blk_cgroup_congested(current.blkcg),
        zero_readahead_fix=current.kernel.policy.zero_readahead_fix, cached=file.f_mapping.pages,
    )  # fmt: skip
    fpin = maybe_unlock_mmap_for_io(current, vmf, None) if drop and decision.calls_readahead else None
    await _act_on(current, file, page, decision)
    return fpin


def _major(current: TaskStruct) -> vm_fault_t:
    current.kernel.count_vm_event("PGMAJFAULT", current)
    return MAJOR


# -- v4.19 ----------------------------------------------------------------------------


async def filemap_fault_419(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``filemap_fault()`` at v4.19 (before the series)."""
    file = vmf.vma.vm_file
    mapping = file.f_mapping
    inode = mapping.host
    offset = vmf.pgoff
    ret = 0
    if offset >= inode.nr_pages:
        return SIGBUS
    page = find_get_page(mapping, offset)
    if page is not None and not vmf.flags & TRIED:
        await do_async_mmap_readahead(current, vmf, file, page, offset, drop=False)
    elif page is None:
        await do_sync_mmap_readahead(current, vmf, file, offset, drop=False)
        ret = _major(current)
    while True:  # retry_find
        if page is None:
            page = find_get_page(mapping, offset)
            if page is None:  # no_cached_page
                error = await page_cache_read(current, file, offset)
                if error < 0:
                    return SIGBUS
                continue
        if not await lock_page_or_retry(current, page, vmf, vmf.flags):
            put_page(page)
            return ret | RETRY
        if page.mapping is not mapping:  # truncated
            unlock_page(current, page)
            put_page(page)
            page = None
            continue
        if not page.flags & PageFlag.UPTODATE:  # page_not_uptodate
            error = await _reread(current, file, page)
            put_page(page)
            page = None
            if error:
                return SIGBUS
            continue
        if offset >= inode.nr_pages:
            unlock_page(current, page)
            put_page(page)
            return SIGBUS
        vmf.page = page
        return ret | LOCKED


async def _reread(current: TaskStruct, file: File, page: Page) -> int:
    """The ``page_not_uptodate`` re-read: ``->readpage`` and wait, ``-EIO`` if still bad."""
    page.clear(PageFlag.ERROR)
    error = await file.f_mapping.a_ops.readpage(current, file, page)
    if not error:
        await wait_on_page_locked(current, page)
        if not page.flags & PageFlag.UPTODATE:
            error = -Errno.EIO
    if error:
        current.kernel.count_vm_event("EIO_REREAD", current)
    return error


# -- V3 as posted ------------------------------------------------------------------------


async def filemap_fault_v3(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``filemap_fault()`` with V3 patches 2/7-5/7 applied to v4.19, as posted."""
    file = vmf.vma.vm_file
    mapping = file.f_mapping
    inode = mapping.host
    mm = vmf.vma.vm_mm
    offset = vmf.pgoff
    flags = vmf.flags  # the local copy Dave Chinner pointed at
    fpin: File | None = None
    page: Page | None = None
    ret = 0
    if offset >= inode.nr_pages:
        return SIGBUS

    have_cached_page = False
    cached_page = vmf.cached_page
    if cached_page is not None:  # patch 4/7
        if flags & KILLABLE:
            if await lock_page_killable(current, cached_page):
                up_read(current, mm)
                return ret | RETRY  # out_retry with page == NULL: cached_page stays stashed
        else:
            await lock_page(current, cached_page)
        vmf.cached_page = None
        if cached_page.mapping is mapping and cached_page.index == offset:
            page = cached_page
            have_cached_page = True
            vmf.flags |= FaultFlag.USED_CACHED  # patch 5/7
            current.kernel.count_vm_event("V3_CACHED_PAGE_REUSED", current)
        else:
            unlock_page(current, cached_page)
            put_page(cached_page)

    if not have_cached_page:
        page = find_get_page(mapping, offset)
        if page is not None and not flags & TRIED:
            if await do_async_mmap_readahead(current, vmf, file, page, offset, drop=True):
                fput(file)
                return await _v3_out_retry_wait(current, vmf, page, flags, ret)
        elif page is None:
            ret = _major(current)
            if await do_sync_mmap_readahead(current, vmf, file, offset, drop=True):
                fput(file)
                return await _v3_out_retry_wait(current, vmf, None, flags, ret)
    while True:
        if not have_cached_page:
            if page is None:  # retry_find
                page = find_get_page(mapping, offset)
                if page is None:  # no_cached_page
                    fpin = maybe_unlock_mmap_for_io(current, vmf, None, flags=vmf.flags)
                    error = await page_cache_read(current, file, offset)
                    if fpin is not None:
                        return _v3_out_retry(current, vmf, None, fpin, ret)
                    if error < 0:
                        return SIGBUS
                    continue
            if not trylock_page(page, current.comm):
                if flags & ALLOW_RETRY:
                    if flags & RETRY_NOWAIT:
                        return _v3_out_retry(current, vmf, page, None, ret)
                    up_read(current, mm)
                    current.dropped_vma = vmf.vma
                    return await _v3_out_retry_wait(current, vmf, page, flags, ret)
                if flags & KILLABLE:
                    shadowed_ret = await __lock_page_killable(current, page)  # `int ret` shadows (defect 1)
                    if shadowed_ret:
                        up_read(current, mm)
                        return _v3_out_retry(current, vmf, page, None, ret)
                else:
                    await __lock_page(current, page)
            if page.mapping is not mapping:  # truncated
                unlock_page(current, page)
                put_page(page)
                page = None
                continue
        have_cached_page = False
        if not page.flags & PageFlag.UPTODATE:
            vmf.flags &= ~FaultFlag.USED_CACHED
            # page_not_uptodate (patch 3/7): drop, re-read, RETRY
            fpin = maybe_unlock_mmap_for_io(current, vmf, None, flags=vmf.flags)
            error = await _reread(current, file, page)
            if fpin is not None:
                return _v3_out_retry(current, vmf, page, fpin, ret)
            put_page(page)
            page = None
            if error:
                return SIGBUS
            continue
        if offset >= inode.nr_pages:
            unlock_page(current, page)
            put_page(page)
            return SIGBUS
        vmf.page = page
        return ret | LOCKED


async def _v3_out_retry_wait(current: TaskStruct, vmf: VmFault, page: Page | None, flags: int, ret: vm_fault_t) -> vm_fault_t:
    """``out_retry_wait``: wait for the page (if there is one) to unlock, then ``out_retry``."""
    if page is not None:
        if flags & KILLABLE:
            await wait_on_page_locked_killable(current, page)
        else:
            await wait_on_page_locked(current, page)
    return _v3_out_retry(current, vmf, page, None, ret)


def _v3_out_retry(current: TaskStruct, vmf: VmFault, page: Page | None, fpin: File | None, ret: vm_fault_t) -> vm_fault_t:
    """``out_retry``: drop the pin; stash the page in ``vmf->cached_page`` (patch 4/7) or put it."""
    if fpin is not None:
        fput(fpin)
    if page is not None:
        if current.kernel.policy.cached_page:
            vmf.cached_page = page
        else:
            put_page(page)
    return ret | RETRY


# -- v5.1 (6b4c9f446981) -------------------------------------------------------------


async def lock_page_maybe_drop_mmap(current: TaskStruct, vmf: VmFault, page: Page, fpin: File | None) -> tuple[bool, File | None]:
    """``lock_page_maybe_drop_mmap()`` (v5.1; ``lock_folio_maybe_drop_mmap`` from 5.16): ``(True, fpin)`` once the page is locked.

    6.7+ (5d74b2ab2c15) releases the VMA lock rather than mmap_lock when
    that is what the fault holds (``release_fault_lock``), on the drop for
    the wait and on a killed wait.
    """
    if trylock_page(page, current.comm):
        return True, fpin
    if vmf.flags & RETRY_NOWAIT:
        return False, fpin
    fpin = maybe_unlock_mmap_for_io(current, vmf, fpin)
    if vmf.flags & KILLABLE:
        if await __lock_page_killable(current, page):
            if fpin is None:
                release_fault_lock(current, vmf)
            return False, fpin
    else:
        await __lock_page(current, page)
    return True, fpin


async def filemap_fault_v51(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``filemap_fault()`` as merged in v5.1 (6b4c9f446981, a75d4c333772)."""
    file = vmf.vma.vm_file
    mapping = file.f_mapping
    inode = mapping.host
    offset = vmf.pgoff
    fpin: File | None = None
    ret = 0
    if offset >= inode.nr_pages:
        return SIGBUS
    page = find_get_page(mapping, offset)
    if page is not None and not vmf.flags & TRIED:
        fpin = await do_async_mmap_readahead(current, vmf, file, page, offset, drop=True)
    elif page is None:
        ret = _major(current)
        fpin = await do_sync_mmap_readahead(current, vmf, file, offset, drop=True)
    while True:
        if page is None:  # retry_find
            page = await pagecache_get_page_for_mmap(current, mapping, offset)
        locked, fpin = await lock_page_maybe_drop_mmap(current, vmf, page, fpin)
        if not locked:
            return _v51_out_retry(page, fpin, ret)
        if page.mapping is not mapping:
            unlock_page(current, page)
            put_page(page)
            page = None
            continue
        if not page.flags & PageFlag.UPTODATE:  # page_not_uptodate
            fpin = maybe_unlock_mmap_for_io(current, vmf, fpin)
            error = await _reread(current, file, page)
            if fpin is not None:
                return _v51_out_retry(page, fpin, ret)
            put_page(page)
            page = None
            if error:
                return SIGBUS
            continue
        if fpin is not None:
            unlock_page(current, page)
            return _v51_out_retry(page, fpin, ret)
        if offset >= inode.nr_pages:
            unlock_page(current, page)
            put_page(page)
            return SIGBUS
        vmf.page = page
        return ret | LOCKED


def _v51_out_retry(page: Page | None, fpin: File | None, ret: vm_fault_t) -> vm_fault_t:
    if page is not None:
        put_page(page)
    if fpin is not None:
        fput(fpin)
    return ret | RETRY


async def filemap_fault(current: TaskStruct, vmf: VmFault) -> vm_fault_t:
    """``vm_ops->fault``: the policy's ``filemap_fault``."""
    variant = current.kernel.policy.filemap_fault
    if variant == "v5.1":
        return await filemap_fault_v51(current, vmf)
    if variant == "v3":
        return await filemap_fault_v3(current, vmf)
    return await filemap_fault_419(current, vmf)
