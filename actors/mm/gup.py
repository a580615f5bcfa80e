"""get_user_pages and mm_populate: faults taken on behalf of a system call.

Mirrors mm/gup.c at v5.1-v5.6 (``faultin_page``, ``__get_user_pages``,
``populate_vma_page_range``, ``__mm_populate``), the path behind
``mlock``, ``mlockall(MCL_CURRENT)`` and ``MAP_POPULATE``.

``__mm_populate`` passes a ``locked`` pointer, so every fault it takes has
``FAULT_FLAG_ALLOW_RETRY``; a fault that returns ``VM_FAULT_RETRY`` (the sem
already dropped) makes ``__get_user_pages`` return the pages done so far,
and ``__mm_populate`` re-takes the sem and starts again at the same address,
**with a fresh ALLOW_RETRY**. Nothing bounds the loop: a fault that drops the
sem without making progress spins forever. That is the 5.1-5.6 mlockall hang
(``ra_pages == 0`` with ``PG_readahead`` set, docs/DESIGN.md B11 and
D4), fixed by 5c72feee3e45 (policy ``zero_readahead_fix``).

Emulation notes:
    No FOLL_* flags beyond what populate uses; pages are faulted in, not
    pinned; ``follow_page_mask`` is "a present PTE". Each ``faultin_page``
    costs ``FAULTIN_NS`` of CPU time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.kernel_types import VM_FAULT_ERROR, Errno, FaultFlag, VmFaultResult
from actors.mm.memory import handle_mm_fault
from actors.mm.mmap import down_read, up_read

if TYPE_CHECKING:
    from actors.mm.mmap import VmAreaStruct
    from actors.sched.task import TaskStruct

#: CPU time of one ``faultin_page`` round (the fault entry and the loop's
#: ``cond_resched()``), so a retry loop that makes no progress still moves time.
FAULTIN_NS = 1_000


async def faultin_page(current: TaskStruct, vma: VmAreaStruct, address: int, locked: list[bool] | None, *, remote: bool = False) -> int:
    """``faultin_page()``: 0, ``-EBUSY`` when the fault returned RETRY (``*locked = 0``), or an error.

    ``locked = None`` (``get_user_pages_remote`` from ``access_remote_vm``)
    means no ``FAULT_FLAG_ALLOW_RETRY``: the fault never drops the sem.
    ``remote``: ``FOLL_REMOTE`` → ``FAULT_FLAG_REMOTE`` (another task's mm).
    Fault accounting follows ``policy.fault_accounting``: 4.19's
    ``faultin_page`` counts every attempt to the ``tsk`` it is given, and
    ``access_remote_vm`` gives none; from 5.9 ("mm: clean up the last pieces
    of page fault accountings", Peter Xu) ``handle_mm_fault`` counts a
    completed fault to ``current``, the reader of /proc/<pid>/mem or cmdline
    included.
    """
    flags = FaultFlag.REMOTE if remote else 0
    if locked is not None:
        flags |= FaultFlag.ALLOW_RETRY
    current.kernel.count("gup_faults")
    await current.actor.sleep(FAULTIN_NS)
    ret = await handle_mm_fault(current, vma, address, flags)
    if ret & VM_FAULT_ERROR:
        return -Errno.EFAULT
    if current.kernel.policy.fault_accounting == "5.9":
        if not ret & VmFaultResult.RETRY:  # mm_account_fault(): the caller of GUP, once the fault completes
            current.account_fault(bool(ret & VmFaultResult.MAJOR))
    elif not remote:  # 4.19: counted to the tsk passed in, NULL from access_remote_vm; retries too
        current.account_fault(bool(ret & VmFaultResult.MAJOR))
    if ret & VmFaultResult.RETRY:
        if locked is not None:
            locked[0] = False
        return -Errno.EBUSY
    return 0


async def populate_vma_page_range(current: TaskStruct, vma: VmAreaStruct, start: int, end: int, locked: list[bool]) -> int:
    """``populate_vma_page_range()`` → ``__get_user_pages()``: pages faulted in, or ``-errno``."""
    done = 0
    for address in range(start, end):
        if address not in vma.vm_mm.ptes:
            ret = await faultin_page(current, vma, address, locked)
            if ret == -Errno.EBUSY:
                return done
            if ret:
                return done or ret
        done += 1
    return done


async def mm_populate(current: TaskStruct, start: int, length: int) -> int:
    """``mm_populate()`` → ``__mm_populate()``: fault in [start, start+length), re-taking the sem after each drop."""
    mm = current.mm
    end = start + length
    locked = [False]
    nstart = start
    vma = None
    while nstart < end:
        if not locked[0]:
            locked[0] = True
            await down_read(current, mm)
            vma = mm.find_vma(nstart)
        elif nstart >= vma.vm_end:
            vma = mm.find_vma(vma.vm_end)
        if vma is None or vma.vm_start >= end:
            break
        nstart = max(nstart, vma.vm_start)
        nend = min(end, vma.vm_end)
        ret = await populate_vma_page_range(current, vma, nstart, nend, locked)
        if ret < 0:
            break
        nstart += ret
    if locked[0]:
        up_read(current, mm)
    return 0
