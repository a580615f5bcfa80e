"""``struct page`` and the page lock: flags, references, and waiting on bits.

Mirrors include/linux/mm_types.h (``struct page``), include/linux/pagemap.h
(``trylock_page``, ``lock_page``, ``wait_on_page_locked``) and the page-wait
half of mm/filemap.c (``wait_on_page_bit_common``, ``unlock_page``,
``end_page_writeback``) at v4.19.

Waiting: a page grows a wait queue when someone first waits on it and drops
it when the last waiter leaves (the kernel hashes pages into a shared table;
a per-page queue wakes the same waiters in the same order). ``unlock_page``
wakes every non-exclusive waiter (``wait_on_page_locked``) and the first
exclusive one (``lock_page``), as ``__wake_up_locked_key_bookmark`` does with
``nr_exclusive = 1``; a woken locker retries ``trylock_page`` and queues again
at the tail if somebody took the lock first.

Accounting: every sleep on a page is reported to the task as an ``io`` sleep
(``account_sleep``), so the task can count sleeps taken while it holds an
mmap_sem.

Emulation notes:
    No compound pages; the LRU lists and memcg charges are
    ``actors.mm.memcontrol``'s. ``PG_readahead`` does not
    alias ``PG_reclaim`` (see ``PageFlag``). Killable waits end early only
    for a fatal signal already pending when they start or delivered while
    they sleep (``TaskStruct.send_sigkill``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.kernel_types import FATAL_WAKE, BlkStatus, Errno, PageFlag
from actors.sched.core import wakeup
from emu import KernelBug, WaitQueue

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.kernel import Kernel
    from actors.mm.filemap import AddressSpace
    from actors.mm.mmap import Pte
    from actors.sched.task import TaskStruct

_LOCKED = PageFlag.LOCKED


class Page:
    """``struct page`` of the page cache.

    Attributes:
        mapping: the ``address_space`` it belongs to; ``None`` once truncated.
        index: its offset in the file, in pages.
        flags: ``PageFlag`` bits.
        refcount: ``page->_refcount``; the page cache holds one.
        locker: who holds ``PG_locked``: the task that locked it, or the
            read bio it was handed to (``page_lock_handoff``), for the
            page-lock invariants and reports.
        rmap: every ``Pte`` mapping it (``page_mapcount``).
        mem_cgroup: the ``MemCgroup`` it is charged to (``page->mem_cgroup``), or ``None``.
        lru: its position on that memcg's LRU list (``actors.mm.memcontrol``).
        private: ``page_private()``: the swap slot of a swap-cache page.
    """

    __slots__ = ("mapping", "index", "flags", "refcount", "locker", "wq", "rmap", "mem_cgroup", "lru", "private")

    def __init__(self, mapping: AddressSpace | None, index: int) -> None:
        self.mapping = mapping
        self.index = index
        self.flags = 0
        self.refcount = 1
        self.locker: str | None = None
        self.wq: WaitQueue | None = None
        self.rmap: list[Pte] = []
        self.mem_cgroup = None
        self.lru = 0
        self.private = 0

    @property
    def name(self) -> str:
        ino = self.mapping.host.ino if self.mapping is not None else "x"
        return f"ino{ino}:{self.index}"

    def __repr__(self) -> str:
        return f"<Page {self.name}>"

    def test(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def set(self, flag: int) -> None:
        self.flags |= flag

    def clear(self, flag: int) -> None:
        self.flags &= ~flag


# -- references ------------------------------------------------------------------


def get_page(page: Page) -> None:
    """``get_page()``: take a reference."""
    if page.refcount <= 0:
        raise KernelBug(f"get_page on freed {page.name}")
    page.refcount += 1


def put_page(page: Page) -> None:
    """``put_page()``: drop a reference; the last one frees the page.

    Freeing a charged page uncharges it (``mem_cgroup_uncharge`` from
    ``__put_single_page``/``release_pages``, v4.19).
    """
    if page.refcount <= 0:
        raise KernelBug(f"put_page underflow on {page.name}")
    page.refcount -= 1
    if not page.refcount and page.mem_cgroup is not None:
        page.mem_cgroup.uncharge(page)


# -- the page lock ----------------------------------------------------------------


def trylock_page(page: Page, who: str) -> bool:
    """``trylock_page()``: take PG_locked if it is free."""
    if page.flags & _LOCKED:
        return False
    page.flags |= _LOCKED
    page.locker = who
    return True


def unlock_page(current: TaskStruct, page: Page) -> None:
    """``unlock_page()`` by *current*, which must hold PG_locked (see module notes)."""
    _check_holder(current.kernel, page, current.comm, "unlock_page")
    _unlock(page)


def page_lock_handoff(current: TaskStruct, page: Page, bio: Bio) -> None:
    """*current* gives its PG_locked on *page* to the read *bio*, whose completion unlocks it.

    The kernel's convention for ``->readpage``/``->readpages``: the caller
    locks the page, the filesystem's read completion unlocks it. The kernel
    keeps no owner; the emulation records the hand-off so that invariant
    ``page_unlock_by_non_holder`` can tell the IO from a stray unlock.
    """
    _check_holder(current.kernel, page, current.comm, "handoff")
    page.locker = bio.lock_name


def page_endio(kernel: Kernel, bio: Bio, page: Page) -> None:
    """``page_endio()`` (v4.19) for a read: uptodate or PG_error, then unlock on the bio's behalf."""
    if bio.status == BlkStatus.OK:
        page.flags |= PageFlag.UPTODATE
    else:
        page.flags &= ~PageFlag.UPTODATE
        page.flags |= PageFlag.ERROR
    _check_holder(kernel, page, bio.lock_name, "page_endio")
    _unlock(page)


def _check_holder(kernel: Kernel, page: Page, who: str, where: str) -> None:
    """Invariant ``page_unlock_by_non_holder``: only the lock's holder releases or hands it on.

    A violation is recorded and the release goes ahead, as the kernel's
    ``unlock_page`` would (it cannot tell); unlocking an unlocked page is a
    bug in the emulation itself (``KernelBug``).
    """
    kernel.invariant_checks += 1
    if not page.flags & _LOCKED:
        raise KernelBug(f"{where} on unlocked {page.name} by {who}")
    if page.locker != who:
        kernel.violation("page_unlock_by_non_holder", page=page.name, by=who, holder=page.locker, where=where)


def _unlock(page: Page) -> None:
    page.flags &= ~_LOCKED
    page.locker = None
    _wake_page(page, exclusive_too=True)


def _wake_page(page: Page, *, exclusive_too: bool) -> None:
    wq = page.wq
    if wq is None:
        return
    woke_exclusive = not exclusive_too
    for key in wq:
        _name, exclusive = key
        if not exclusive:
            wq.wake(key)
        elif not woke_exclusive:
            wq.wake(key)
            woke_exclusive = True


def _holders(page: Page):
    def holders() -> list[str]:
        return [page.locker] if page.locker else []

    return holders


async def _sleep_on(current: TaskStruct, page: Page, exclusive: bool, what: str, killable: bool) -> bool:
    """Sleep on the page's queue until woken; ``False`` if a fatal signal ended it."""
    if killable and current.fatal_signal_pending():
        return False
    if page.wq is None:
        page.wq = WaitQueue(current.actor.engine, f"page {page.name} ({what})", _holders(page))
    wq = page.wq
    start = current.actor.now_ns
    current.killable_queue = wq if killable else None
    try:
        value = await wq.wait(current.actor, (current.comm, exclusive))
    finally:
        current.killable_queue = None
        if not len(wq) and page.wq is wq:
            page.wq = None
    if value != FATAL_WAKE:
        await wakeup(current)
    current.account_sleep("io", current.actor.now_ns - start)
    return value != FATAL_WAKE


def _check_not_own_lock(current: TaskStruct, page: Page) -> None:
    """Invariant ``page_double_lock``: a task never sleeps on a page lock it holds itself.

    A lock handed to a read (``page_lock_handoff``) belongs to the bio, so
    waiting for that IO's completion is fine.
    """
    current.kernel.invariant_checks += 1
    if page.locker == current.comm:
        current.kernel.violation("page_double_lock", task=current.comm, page=page.name)


async def __lock_page(current: TaskStruct, page: Page) -> None:
    """``__lock_page()``: sleep until PG_locked is ours (uninterruptible)."""
    _check_not_own_lock(current, page)
    while not trylock_page(page, current.comm):
        await _sleep_on(current, page, True, "PG_locked", killable=False)


async def lock_page(current: TaskStruct, page: Page) -> None:
    """``lock_page()``: trylock, else ``__lock_page``."""
    if not trylock_page(page, current.comm):
        await __lock_page(current, page)


async def __lock_page_killable(current: TaskStruct, page: Page) -> int:
    """``__lock_page_killable()``: 0 once locked, ``-EINTR`` on a fatal signal."""
    _check_not_own_lock(current, page)
    while not trylock_page(page, current.comm):
        if not await _sleep_on(current, page, True, "PG_locked", killable=True):
            return -Errno.EINTR
    return 0


async def lock_page_killable(current: TaskStruct, page: Page) -> int:
    """``lock_page_killable()``."""
    if trylock_page(page, current.comm):
        return 0
    return await __lock_page_killable(current, page)


async def wait_on_page_locked(current: TaskStruct, page: Page) -> None:
    """``wait_on_page_locked()``: wait for PG_locked to clear, without taking it."""
    while page.flags & _LOCKED:
        await _sleep_on(current, page, False, "PG_locked", killable=False)


async def wait_on_page_locked_killable(current: TaskStruct, page: Page) -> int:
    """``wait_on_page_locked_killable()``: 0, or ``-EINTR`` on a fatal signal."""
    while page.flags & _LOCKED:
        if not await _sleep_on(current, page, False, "PG_locked", killable=True):
            return -Errno.EINTR
    return 0


async def wait_on_page_writeback(current: TaskStruct, page: Page) -> None:
    """``wait_on_page_writeback()``: wait for PG_writeback to clear."""
    while page.flags & PageFlag.WRITEBACK:
        await _sleep_on(current, page, False, "PG_writeback", killable=False)


def end_page_writeback(page: Page) -> None:
    """``end_page_writeback()``: clear PG_writeback and wake its waiters."""
    page.flags &= ~PageFlag.WRITEBACK
    _wake_page(page, exclusive_too=False)


def wake_fatal(wq: WaitQueue, current: Any) -> None:
    """End a killable wait of *current* because of a fatal signal.

    Page waits are keyed ``(comm, exclusive)``; mmap_sem waits (``actors.mm.mmap``) by ``comm``.
    """
    for key in wq:
        if (key[0] if isinstance(key, tuple) else key) == current.comm:
            wq.wake(key, FATAL_WAKE)
