"""``mm_struct``: VMAs, present PTEs, and ``mmap_sem`` with its sleeping paths.

Mirrors include/linux/mm_types.h (``mm_struct``, ``vm_area_struct``),
mm/mmap.c (``find_vma``, ``do_mmap``/``do_munmap`` under ``down_write``),
mm/mprotect.c (``do_mprotect_pkey``) at v4.19, and the sleeping side of
kernel/locking/rwsem.c for the one semaphore the fault path sleeps on. The
queue and wake rules are the sans-IO ``actors.locking.rwsem.RwSemaphore``;
this module turns its decisions into parked and woken actors and emits the
mmap_lock tracepoints of v5.11 (``mmap_lock_start_locking``,
``mmap_lock_acquire_returned``, ``mmap_lock_released``; 2b5067a8143e) so a
trace reads like a real one.

Addresses are page numbers (``vm_start``/``vm_end`` in pages, end
exclusive); a PTE is present iff ``address in mm.ptes``.

Emulation notes:
    One rwsem per mm, held by task names. No VMA merging or splitting: an
    mprotect re-applies the VMA's protection (the cost is the write hold).
    munmap's 4.20 downgrade to read for the zap is not modelled (4.19).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from actors.kernel_types import FATAL_WAKE, Errno
from actors.locking.rwsem import RwSemaphore, RwsemSemantics
from actors.mm.page import Page, put_page
from actors.sched.core import wakeup
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.mm.filemap import File
    from actors.sched.task import TaskStruct
    from emu import Engine


class VmFlag(enum.IntFlag):
    """``VM_*`` (include/linux/mm.h)."""

    READ = 0x1
    WRITE = 0x2
    SHARED = 0x8
    MAYWRITE = 0x20
    SEQ_READ = 0x8000
    RAND_READ = 0x10000


class VmAreaStruct:
    """``struct vm_area_struct``: [vm_start, vm_end) pages of ``vm_file`` from ``vm_pgoff``."""

    __slots__ = ("vm_mm", "vm_start", "vm_end", "vm_pgoff", "vm_file", "vm_flags", "vm_ops", "name", "freed")

    def __init__(self, mm: MmStruct, start: int, end: int, flags: VmFlag, file: File | None, name: str) -> None:
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_pgoff = 0
        self.vm_file = file
        self.vm_flags = flags
        self.vm_ops = None if file is None else file.f_mapping.host.fs.vm_ops
        self.name = name
        self.freed = False

    def __repr__(self) -> str:
        return f"<vma {self.name} [{self.vm_start},{self.vm_end})>"


class Pte:
    """A present PTE: the page it maps (holding a reference), its write bit, and where it is.

    ``mm`` and ``address`` make it its own reverse-map entry: a page's
    ``rmap`` lists the PTEs that map it.
    """

    __slots__ = ("page", "write", "mm", "address")

    def __init__(self, page: Page, write: bool, mm: MmStruct, address: int) -> None:
        self.page = page
        self.write = write
        self.mm = mm
        self.address = address


class MmStruct:
    """``struct mm_struct`` of one process."""

    def __init__(self, engine: Engine, owner: str, pid: int, semantics: RwsemSemantics) -> None:
        self.owner = owner
        self.pid = pid
        self.mmap_sem = RwSemaphore(f"{owner}.mmap_sem", semantics)
        self.wait = WaitQueue(engine, f"{owner}.mmap_sem", self.mmap_sem.holders)
        self.vmas: list[VmAreaStruct] = []
        self.ptes: dict[int, Pte] = {}
        #: Non-present PTEs holding a swap entry: address → swap slot (``actors.mm.swap``).
        self.swap_ptes: dict[int, int] = {}
        self._next_free = 1 << 20

    # -- VMAs ----------------------------------------------------------------

    def find_vma(self, address: int) -> VmAreaStruct | None:
        """``find_vma()``: the first VMA with ``address < vm_end`` (4.19 semantics)."""
        for vma in self.vmas:
            if address < vma.vm_end:
                return vma
        return None

    def insert_vma(self, nr_pages: int, flags: VmFlag, file: File | None, name: str) -> VmAreaStruct:
        """Place a new VMA above the last one (``get_unmapped_area``, simplified)."""
        start = self._next_free
        self._next_free += nr_pages + 16  # a guard gap keeps VMAs apart
        vma = VmAreaStruct(self, start, start + nr_pages, flags, file, name)
        self.vmas.append(vma)
        return vma

    def remove_vma(self, vma: VmAreaStruct) -> int:
        """Unmap *vma*: zap its PTEs (dropping their page references) and free it."""
        zapped = 0
        for address in range(vma.vm_start, vma.vm_end):
            pte = self.ptes.pop(address, None)
            if pte is not None:
                if pte.page.mapping is not None:
                    pte.page.rmap.remove(pte)
                put_page(pte.page)
                zapped += 1
        self.vmas.remove(vma)
        vma.freed = True
        return zapped


    def mprotect_vma(self, vma: VmAreaStruct, *, write: bool) -> None:
        """``mprotect_fixup()`` of the whole VMA: set or clear VM_WRITE; write-protect its PTEs when clearing."""
        if write and vma.vm_flags & VmFlag.MAYWRITE:
            vma.vm_flags |= VmFlag.WRITE
        elif not write:
            vma.vm_flags &= ~VmFlag.WRITE
            for address in range(vma.vm_start, vma.vm_end):  # change_protection()
                pte = self.ptes.get(address)
                if pte is not None:
                    pte.write = False

    def set_pte(self, address: int, page: Page, write: bool) -> None:
        """``set_pte_at()`` + ``page_add_file_rmap()``: map *page* (its reference moves to the PTE)."""
        pte = self.ptes[address] = Pte(page, write, self, address)
        if page.mapping is not None:
            page.rmap.append(pte)


def page_mkclean(page: Page) -> int:
    """``page_mkclean()`` (mm/rmap.c): write-protect every PTE mapping *page*.

    Writeback calls it when it cleans a page, so the next write faults again
    and goes through ``->page_mkwrite``.
    """
    cleaned = 0
    for pte in page.rmap:
        if pte.write:
            pte.write = False
            cleaned += 1
    return cleaned


# -- mmap_sem, sleeping side --------------------------------------------------------


def _trace(current: TaskStruct, event: str, mm: MmStruct, write: bool, **fields: object) -> None:
    # The rare outcomes; down_*/up_* log their records inline (no extra call and kwargs dict per record).
    current.actor.log.info(event, mm=mm.owner, write=write, **fields)


def _held(current: TaskStruct, mm: MmStruct, mode: str, queued_ns: int | None = None) -> None:
    current.mmap_sem_held.append((mm, mode))
    check = getattr(current.kernel, "rwsem_acquired", None)  # absent on test doubles and bench kernels
    if check is not None:
        check(current, mm, mode, queued_ns)


def _released(current: TaskStruct, mm: MmStruct, mode: str) -> None:
    current.mmap_sem_held.remove((mm, mode))


def down_read_trylock(current: TaskStruct, mm: MmStruct) -> bool:
    """``down_read_trylock(&mm->mmap_sem)``."""
    if mm.mmap_sem.down_read_trylock(current.comm, current.actor.now_ns):
        _trace(current, "mmap_lock_acquire_returned", mm, False, success=True, trylock=True)
        _held(current, mm, "read")
        return True
    return False


async def down_read(current: TaskStruct, mm: MmStruct, *, killable: bool = False) -> int:
    """``down_read(&mm->mmap_sem)`` (or ``down_read_killable``: ``-EINTR`` on a fatal signal).

    A reader queues behind any waiter, writer or not (the inversion's rule).
    """
    current.actor.log.info("mmap_lock_start_locking", mm=mm.owner, write=False, waiters=len(mm.wait))
    now = current.actor.now_ns
    queued = not mm.mmap_sem.down_read(current.comm, now)
    if queued:
        result = await _sleep(current, mm, killable)
        current.account_sleep("mmap_sem", current.actor.now_ns - now)
        if result:
            return result
    current.actor.log.info("mmap_lock_acquire_returned", mm=mm.owner, write=False, success=True, waited_ns=current.actor.now_ns - now)
    _held(current, mm, "read", now if queued else None)
    return 0


async def down_write(current: TaskStruct, mm: MmStruct, *, killable: bool = False) -> int:
    """``down_write(&mm->mmap_sem)`` (or ``down_write_killable``).

    A woken writer must win ``rwsem_try_write_lock`` itself; if somebody
    stole the free lock first it sleeps again at the head.
    """
    current.actor.log.info("mmap_lock_start_locking", mm=mm.owner, write=True, waiters=len(mm.wait))
    now = current.actor.now_ns
    acquired = mm.mmap_sem.down_write(current.comm, now)
    queued = not acquired
    while not acquired:
        result = await _sleep(current, mm, killable)
        if result:
            current.account_sleep("mmap_sem", current.actor.now_ns - now)
            return result
        acquired = mm.mmap_sem.down_write_retry(current.comm, current.actor.now_ns)
    if current.actor.now_ns != now:
        current.account_sleep("mmap_sem", current.actor.now_ns - now)
    current.actor.log.info("mmap_lock_acquire_returned", mm=mm.owner, write=True, success=True, waited_ns=current.actor.now_ns - now)
    _held(current, mm, "write", now if queued else None)
    return 0


async def _sleep(current: TaskStruct, mm: MmStruct, killable: bool) -> int:
    current.killable_queue = mm.wait if killable else None
    try:
        value = await mm.wait.wait(current.actor, current.comm)
    finally:
        current.killable_queue = None
    if value == FATAL_WAKE:
        _wake(mm, mm.mmap_sem.cancel_wait(current.comm, current.actor.now_ns))
        _trace(current, "mmap_lock_acquire_returned", mm, False, success=False)
        return -Errno.EINTR
    await wakeup(current)  # try_to_wake_up() to running: a granted reader holds the sem meanwhile
    return 0


def _wake(mm: MmStruct, wakes: list) -> None:
    for wake in wakes:
        mm.wait.wake(wake.owner, None)


def up_read(current: TaskStruct, mm: MmStruct) -> None:
    """``up_read(&mm->mmap_sem)``: release, then wake whom the rwsem rules choose.

    An ``up_read`` by a task that holds no read lock is an emulated kernel
    bug (an unbalanced release, e.g. docs/DESIGN.md D8), recorded as the
    ``rwsem_release_by_non_holder`` violation and otherwise ignored.
    """
    if (mm, "read") not in current.mmap_sem_held:
        current.kernel.violation("rwsem_release_by_non_holder", task=current.comm, mm=mm.owner, mode="read")
        return
    _released(current, mm, "read")
    _wake(mm, mm.mmap_sem.up_read(current.comm, current.actor.now_ns))
    current.actor.log.info("mmap_lock_released", mm=mm.owner, write=False)


def up_write(current: TaskStruct, mm: MmStruct) -> None:
    """``up_write(&mm->mmap_sem)`` (an unbalanced one is recorded, as for ``up_read``)."""
    if (mm, "write") not in current.mmap_sem_held:
        current.kernel.violation("rwsem_release_by_non_holder", task=current.comm, mm=mm.owner, mode="write")
        return
    _released(current, mm, "write")
    _wake(mm, mm.mmap_sem.up_write(current.comm, current.actor.now_ns))
    current.actor.log.info("mmap_lock_released", mm=mm.owner, write=True)
