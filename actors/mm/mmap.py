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

Per-VMA locks (6.4+, ``MmStruct.per_vma_lock``; the rules are
``actors.locking.vma_lock``): ``vma_start_write`` sleeps until the VMA's
readers leave, ``vma_end_read`` wakes it, and ``up_write`` is
``mmap_write_unlock``, which ends every VMA write lock
(``vma_end_write_all``). With per-VMA locks off (before 6.4, or
``CONFIG_PER_VMA_LOCK=n``) these are the kernel's empty stubs.

Addresses are page numbers (``vm_start``/``vm_end`` in pages, end
exclusive); a PTE is present iff ``address in mm.ptes`` (``actors.mm.pgtable``).

Emulation notes:
    One rwsem per mm, held by task names. No VMA merging or splitting: an
    mprotect re-applies the VMA's protection (the cost is the write hold).
    munmap's 4.20 downgrade to read for the zap is not modelled (4.19).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.kernel_types import FATAL_WAKE, Errno, FaultFlag
from actors.locking.rwsem import RwSemaphore, RwsemSemantics
from actors.locking.vma_lock import MmLockSeq, VmaLock
from actors.mm.page import Page, page_add_rmap, page_remove_rmap, page_rmap, put_page
from actors.mm.pgtable import PageTables
from actors.sched.core import wakeup
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.mm.filemap import File
    from actors.mm.memory import VmFault
    from actors.sched.task import TaskStruct
    from emu import Engine
    from emu.trace import TraceLogger


class VmFlag:
    """``VM_*`` (include/linux/mm.h): plain ``int`` bits, as ``actors.kernel_types``' flag families."""

    READ = 0x1
    WRITE = 0x2
    SHARED = 0x8
    MAYWRITE = 0x20
    SEQ_READ = 0x8000
    RAND_READ = 0x10000


class VmAreaStruct:
    """``struct vm_area_struct``: [vm_start, vm_end) pages of ``vm_file`` from ``vm_pgoff``."""

    __slots__ = ("vm_mm", "vm_start", "vm_end", "vm_pgoff", "vm_file", "vm_flags", "vm_ops", "name", "freed", "anon_vma", "vm_lock", "_lock_wait")

    def __init__(self, mm: MmStruct, start: int, end: int, flags: int, file: File | None, name: str) -> None:
        self.vm_mm = mm
        self.vm_start = start
        self.vm_end = end
        self.vm_pgoff = 0
        self.vm_file = file
        self.vm_flags = flags
        self.vm_ops = None if file is None else file.f_mapping.host.fs.vm_ops
        self.name = name
        self.freed = False
        #: ``vma->anon_vma``: set by ``anon_vma_prepare`` at the first private page (no object here).
        self.anon_vma = False
        #: ``vma->vm_lock`` (6.4+); ``None`` without per-VMA locks.
        self.vm_lock = VmaLock(f"{mm.owner}.{name}.vm_lock", mm.mm_lock_seq) if mm.per_vma_lock else None
        self._lock_wait: WaitQueue | None = None

    def vma_is_anonymous(self) -> bool:
        """``vma_is_anonymous()``: no ``vm_ops``."""
        return self.vm_ops is None

    def lock_wait(self) -> WaitQueue:
        """The queue a ``vma_start_write`` sleeps on (made at first use)."""
        if self._lock_wait is None:
            self._lock_wait = WaitQueue(self.vm_mm.engine, self.vm_lock.name, self.vm_lock.lock.holders)
        return self._lock_wait

    def __repr__(self) -> str:
        return f"<vma {self.name} [{self.vm_start},{self.vm_end})>"


class MmStruct:
    """``struct mm_struct`` of one process."""

    def __init__(self, engine: Engine, owner: str, pid: int, semantics: RwsemSemantics, *, per_vma_lock: bool = False) -> None:
        self.engine = engine
        self.owner = owner
        self.pid = pid
        #: ``CONFIG_PER_VMA_LOCK`` and a kernel that has it (6.4+); ``mm->mm_lock_seq``.
        self.per_vma_lock = per_vma_lock
        self.mm_lock_seq = MmLockSeq()
        self.mmap_sem = RwSemaphore(f"{owner}.mmap_sem", semantics)
        self.wait = WaitQueue(engine, f"{owner}.mmap_sem", self.mmap_sem.holders)
        self.vmas: list[VmAreaStruct] = []
        self.ptes = PageTables()
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

    def insert_vma(self, nr_pages: int, flags: int, file: File | None, name: str) -> VmAreaStruct:
        """Place a new VMA above the last one (``get_unmapped_area``, simplified)."""
        start = self._next_free
        self._next_free += nr_pages + 16  # a guard gap keeps VMAs apart
        vma = VmAreaStruct(self, start, start + nr_pages, flags, file, name)
        self.vmas.append(vma)
        return vma

    def remove_vma(self, vma: VmAreaStruct) -> int:
        """Unmap *vma*: zap its PTEs (dropping their page references) and free it."""
        addresses, pages = self.ptes.zap_pte_range(vma.vm_start, vma.vm_end)
        for address, page in zip(addresses, pages):
            if page.mapping is not None:
                page_remove_rmap(page, vma, address)
            put_page(page)
        if self.per_vma_lock:
            vma.vm_lock.mark_detached(True)  # do_vmi_align_munmap, after vma_start_write
        self.vmas.remove(vma)
        vma.freed = True
        return len(pages)


    def mprotect_vma(self, vma: VmAreaStruct, *, write: bool) -> None:
        """``mprotect_fixup()`` of the whole VMA: set or clear VM_WRITE; write-protect its PTEs when clearing."""
        if write and vma.vm_flags & VmFlag.MAYWRITE:
            vma.vm_flags |= VmFlag.WRITE
        elif not write:
            vma.vm_flags &= ~VmFlag.WRITE
            self.ptes.change_protection(vma.vm_start, vma.vm_end)

    def set_pte(self, address: int, page: Page, write: bool, vma: VmAreaStruct | None = None) -> None:
        """``set_pte_at()`` + ``page_add_file_rmap()``: map *page* in *vma* (by default the one at *address*).

        The page's reference moves to the PTE; an anonymous page's reverse
        map is its caller's (``page_add_new_anon_rmap``).
        """
        self.ptes.set_pte_at(address, page, write)
        if page.mapping is not None:
            page_add_rmap(page, vma or self.find_vma(address), address)


def page_mkclean(page: Page) -> int:
    """``page_mkclean()`` (mm/rmap.c): write-protect every PTE mapping *page*.

    Writeback calls it when it cleans a page, so the next write faults again
    and goes through ``->page_mkwrite``.
    """
    cleaned = 0
    for vma, address in page_rmap(page):
        ptes = vma.vm_mm.ptes
        if ptes.pte_write(address):
            ptes.ptep_set_wrprotect(address)
            cleaned += 1
    return cleaned


# -- mmap_sem, sleeping side --------------------------------------------------------


def _trace(current: TaskStruct, event: str, mm: MmStruct, write: bool, **fields: object) -> None:
    # The rare outcomes; the common records are written from ``_lock_formats``.
    current.actor.log.info(event, mm=mm.owner, write=write, **fields)


def _lock_formats(log: TraceLogger, mm: MmStruct, write: bool) -> tuple[bytes, bytes, bytes]:
    """The three mmap_lock records of every acquisition, encoded once per logger, mm and mode.

    ``mmap_lock_start_locking`` (then ``waiters``), ``mmap_lock_acquire_returned``
    with ``success`` (then ``waited_ns``) and ``mmap_lock_released``: formats
    for ``TraceLogger.info_format``, which writes the bytes ``info`` would.
    """
    key = ("mmap_lock", mm.owner, write)
    formats = log.formats.get(key)
    if formats is None:
        formats = log.formats[key] = (
            log.record_format("mmap_lock_start_locking", ("waiters",), mm=mm.owner, write=write),
            log.record_format("mmap_lock_acquire_returned", ("waited_ns",), mm=mm.owner, write=write, success=True),
            log.record_format("mmap_lock_released", mm=mm.owner, write=write),
        )
    return formats


def _held(current: TaskStruct, mm: MmStruct, mode: str, queued_ns: int | None = None) -> None:
    current.mmap_sem_held.append((mm, mode))
    check = getattr(current.kernel, "rwsem_acquired", None)  # absent on test doubles and bench kernels
    if check is not None:
        check(current, mm, mode, queued_ns)


def down_read_trylock(current: TaskStruct, mm: MmStruct) -> bool:
    """``down_read_trylock(&mm->mmap_sem)``."""
    if mm.mmap_sem.down_read_trylock(current.comm, current.actor.now_ns):
        _trace(current, "mmap_lock_acquire_returned", mm, False, success=True, trylock=True)
        _held(current, mm, "read")
        return True
    return False


def _lock_fast(current: TaskStruct, mm: MmStruct, write: bool) -> tuple[bytes, int] | None:
    """Trace the attempt and try the rwsem: ``None`` once it is held, else the record to write when it is and the start."""
    actor = current.actor
    log = actor.log
    start_locking, acquire_returned, _ = _lock_formats(log, mm, write)
    log.info_format(start_locking, len(mm.wait))
    now = actor.engine.now_ns
    sem = mm.mmap_sem
    if (sem.down_write if write else sem.down_read)(current.comm, now):
        log.info_format(acquire_returned, 0)
        _held(current, mm, "write" if write else "read")
        return None
    return acquire_returned, now


async def down_read(current: TaskStruct, mm: MmStruct, *, killable: bool = False) -> int:
    """``down_read(&mm->mmap_sem)`` (or ``down_read_killable``: ``-EINTR`` on a fatal signal).

    A reader queues behind any waiter, writer or not (the inversion's rule).
    """
    slow = _lock_fast(current, mm, False)
    if slow is None:
        return 0
    acquire_returned, now = slow
    result = await _sleep(current, mm, killable)
    waited = current.actor.now_ns - now
    current.account_sleep("mmap_sem", waited)
    if result:
        return result
    current.actor.log.info_format(acquire_returned, waited)
    _held(current, mm, "read", now)
    return 0


async def down_write(current: TaskStruct, mm: MmStruct, *, killable: bool = False) -> int:
    """``down_write(&mm->mmap_sem)`` (or ``down_write_killable``).

    A woken writer must win ``rwsem_try_write_lock`` itself; if somebody
    stole the free lock first it sleeps again at the head.
    """
    slow = _lock_fast(current, mm, True)
    if slow is None:
        return 0
    acquire_returned, now = slow
    actor = current.actor
    acquired = False
    while not acquired:
        result = await _sleep(current, mm, killable)
        if result:
            current.account_sleep("mmap_sem", actor.now_ns - now)
            return result
        acquired = mm.mmap_sem.down_write_retry(current.comm, actor.now_ns)
    waited = actor.now_ns - now
    if waited:
        current.account_sleep("mmap_sem", waited)
    actor.log.info_format(acquire_returned, waited)
    _held(current, mm, "write", now)
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
    """Wake the waiters the rwsem chose, in its order."""
    for wake in wakes:
        mm.wait.wake(wake.owner, None)


def up_read(current: TaskStruct, mm: MmStruct) -> None:
    """``up_read(&mm->mmap_sem)``: release, then wake whom the rwsem rules choose.

    An ``up_read`` by a task that holds no read lock is an emulated kernel
    bug (an unbalanced release, e.g. docs/DESIGN.md D8), recorded as the
    ``rwsem_release_by_non_holder`` violation and otherwise ignored.
    """
    try:
        current.mmap_sem_held.remove((mm, "read"))
    except ValueError:
        current.kernel.violation("rwsem_release_by_non_holder", task=current.comm, mm=mm.owner, mode="read")
        return
    actor = current.actor
    _wake(mm, mm.mmap_sem.up_read(current.comm, actor.engine.now_ns))
    log = actor.log
    log.info_format(_lock_formats(log, mm, False)[2])


def up_write(current: TaskStruct, mm: MmStruct) -> None:
    """``up_write(&mm->mmap_sem)`` (an unbalanced one is recorded, as for ``up_read``)."""
    try:
        current.mmap_sem_held.remove((mm, "write"))
    except ValueError:
        current.kernel.violation("rwsem_release_by_non_holder", task=current.comm, mm=mm.owner, mode="write")
        return
    if mm.per_vma_lock:
        vma_end_write_all(current, mm)
    actor = current.actor
    _wake(mm, mm.mmap_sem.up_write(current.comm, actor.engine.now_ns))
    log = actor.log
    log.info_format(_lock_formats(log, mm, True)[2])


# -- per-VMA locks, sleeping side (6.4+) ------------------------------------------------


def vma_end_write_all(current: TaskStruct, mm: MmStruct) -> None:
    """``vma_end_write_all()`` (include/linux/mmap_lock.h, v6.4), from ``mmap_write_unlock``: bump ``mm_lock_seq``."""
    before = mm.mm_lock_seq.value
    after = mm.mm_lock_seq.vma_end_write_all()
    check = getattr(current.kernel, "lock_seq_advanced", None)
    if check is not None:
        check(current, mm.owner, "mm_lock_seq", before, after)


async def vma_start_write(current: TaskStruct, vma: VmAreaStruct) -> None:
    """``vma_start_write()`` (include/linux/mm.h, v6.4-v6.12): write-lock *vma* under mmap_lock held for write.

    Sleeps (uninterruptibly, as ``down_write``) until the readers that hold
    the VMA leave; a no-op without per-VMA locks or when already locked.
    The wait is traced (``vma_start_write_wait``) and counted
    (``vma_start_write_waits``, ``_ns``), not added to the task's sleep kinds.
    """
    mm = vma.vm_mm
    if not mm.per_vma_lock:
        return
    if (mm, "write") not in current.mmap_sem_held:
        current.kernel.violation("vma_write_without_mmap_write_lock", task=current.comm, vma=vma.name)
    lock = vma.vm_lock
    before = lock.vm_lock_seq
    now = current.actor.now_ns
    acquired = lock.start_write(current.comm, now)
    while not acquired:
        await lock_wait_sleep(current, vma)
        acquired = lock.start_write_retry(current.comm, current.actor.now_ns)
    if current.actor.now_ns != now:
        waited = current.actor.now_ns - now
        current.kernel.count("vma_start_write_waits")
        current.kernel.count("vma_start_write_waits_ns", waited)
        current.actor.log.info("vma_start_write_wait", vma=vma.name, waited_ns=waited)
    if lock.vm_lock_seq != before:
        check = getattr(current.kernel, "lock_seq_advanced", None)
        if check is not None:
            check(current, vma.name, "vm_lock_seq", before, lock.vm_lock_seq)


async def lock_wait_sleep(current: TaskStruct, vma: VmAreaStruct) -> None:
    """Park on the VMA lock until the last reader's ``vma_end_read`` wakes us."""
    await vma.lock_wait().wait(current.actor, current.comm)
    await wakeup(current)


def vma_start_read(current: TaskStruct, vma: VmAreaStruct) -> bool:
    """``vma_start_read()`` for *current* (never sleeps): True if it now holds *vma* for read."""
    if not vma.vm_lock.start_read(current.comm, current.actor.now_ns):
        return False
    current.vma_locks_held.append(vma)
    return True


def vma_end_read(current: TaskStruct, vma: VmAreaStruct) -> None:
    """``vma_end_read()`` (v6.4): release *vma*'s read lock; wake a writer waiting for the last reader.

    A release by a task that does not hold it is the ``rwsem_release_by_non_holder`` violation, as for mmap_sem.
    """
    if vma not in current.vma_locks_held:
        current.kernel.violation("rwsem_release_by_non_holder", task=current.comm, mm=vma.vm_mm.owner, mode="vma_read", vma=vma.name)
        return
    current.vma_locks_held.remove(vma)
    for wake in vma.vm_lock.end_read(current.comm, current.actor.now_ns):
        vma.lock_wait().wake(wake.owner, None)


def release_fault_lock(current: TaskStruct, vmf: VmFault) -> None:
    """``release_fault_lock()`` (include/linux/mm.h, 6.5+): drop the VMA lock or mmap_lock, whichever the fault holds."""
    if vmf.flags & FaultFlag.VMA_LOCK:
        vma_end_read(current, vmf.vma)
    else:
        up_read(current, vmf.vma.vm_mm)
