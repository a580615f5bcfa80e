"""``struct page`` and the page lock: flags, references, the reverse map, and waiting on bits.

Mirrors include/linux/mm_types.h (``struct page``), include/linux/pagemap.h
(``trylock_page``, ``lock_page``, ``wait_on_page_locked``) and the page-wait
half of mm/filemap.c (``wait_on_page_bit_common``, ``unlock_page``,
``end_page_writeback``) at v4.19, and the bookkeeping of a page's reverse
map from mm/rmap.c (``page_add_file_rmap``, ``page_remove_rmap``,
``page_mapcount``, ``rmap_walk``; see ``Page.rmap``).

Waiting: a page grows a wait queue when someone first waits on it and drops
it when the last waiter leaves (the kernel hashes pages into a shared table;
a per-page queue wakes the same waiters in the same order). Each waiter
waits for one bit. ``unlock_page`` and ``end_page_writeback`` walk the queue
as ``wake_up_page_bit`` does (``__wake_up_common`` with ``nr_exclusive =
1``): waiters for the other bit are skipped, each non-exclusive waiter for
the bit (``wait_on_page_locked``, ``wait_on_page_writeback``) is woken, and
the walk stops at the first exclusive one (``lock_page``), woken too.
Waiters queued behind it stay queued until the next unlock. What a woken
waiter does depends on ``policy.page_wait``:

* ``4.19`` (to 5.7): ``wait_on_page_bit_common`` re-checks the bit; a
  non-exclusive waiter that finds it set again, or a locker whose
  ``trylock_page`` loses to a newcomer, queues again at the tail.
* ``5.9`` (2a9127fcf229, v5.8, with 5ef64cc8987a's
  ``sysctl_page_lock_unfairness``, v5.9): a woken non-exclusive waiter
  returns without re-checking; a locker races for the lock as before the
  first ``PAGE_LOCK_UNFAIRNESS`` times it queues, and from then on the
  waker takes the lock on its behalf (``WQ_FLAG_CUSTOM``) before waking it.

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
    from actors.mm.mmap import VmAreaStruct
    from actors.sched.task import TaskStruct

_LOCKED = PageFlag.LOCKED
_BIT_NAMES = {PageFlag.LOCKED: "PG_locked", PageFlag.WRITEBACK: "PG_writeback"}

#: ``sysctl_page_lock_unfairness`` (5ef64cc8987a, v5.9; default 5): how many
#: times a ``lock_page`` waiter queues and races for the lock before the waker
#: takes it on the waiter's behalf.
PAGE_LOCK_UNFAIRNESS = 5

#: The wake value of a waiter the waker took PG_locked for (5.9 rules).
LOCK_HANDED = "page lock handed over"


#: The ``rmap`` of a page no PTE maps: shared, so a cached page costs no list.
NO_RMAP: tuple[()] = ()


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
        rmap: the VMAs whose PTEs map it, oldest first (``page_rmap``;
            ``page_mapcount`` is their number): ``NO_RMAP``, one entry, or a
            list of two or more. An entry is the ``VmAreaStruct`` when
            ``vma_address`` tells where it maps the page, else ``(vma, address)``.
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
        self.rmap: VmAreaStruct | tuple | list | tuple[()] = NO_RMAP
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


# -- the reverse map ---------------------------------------------------------------


def vma_address(page: Page, vma: VmAreaStruct) -> int:
    """``vma_address()`` (mm/internal.h, v4.19): the page number at which *vma* maps *page*.

    Simplified: an anonymous page (no ``mapping``) is indexed by the address
    it was made for, not by ``linear_page_index``; a swapped-in one by its
    swap slot, so its entries carry the address (see ``Page.rmap``).
    """
    if page.mapping is None:
        return page.index
    return vma.vm_start + page.index - vma.vm_pgoff


def _entry_address(page: Page, entry: VmAreaStruct | tuple) -> tuple[VmAreaStruct, int]:
    if type(entry) is tuple:
        return entry
    return entry, vma_address(page, entry)


def page_add_rmap(page: Page, vma: VmAreaStruct, address: int) -> None:
    """``page_add_file_rmap()``/``page_add_new_anon_rmap()``: a PTE of *vma* at *address* maps *page* now."""
    entry = vma if vma_address(page, vma) == address else (vma, address)
    rmap = page.rmap
    if not rmap:
        page.rmap = entry
    elif type(rmap) is list:
        rmap.append(entry)
    else:
        page.rmap = [rmap, entry]


def page_remove_rmap(page: Page, vma: VmAreaStruct, address: int) -> None:
    """``page_remove_rmap()``: the PTE of *vma* at *address* no longer maps *page*."""
    rmap = page.rmap
    if type(rmap) is not list:
        if not rmap or _entry_address(page, rmap) != (vma, address):
            raise KernelBug(f"page_remove_rmap: {page.name} is not mapped at {address}")
        page.rmap = NO_RMAP
        return
    for i, entry in enumerate(rmap):
        if _entry_address(page, entry) == (vma, address):
            del rmap[i]
            break
    else:
        raise KernelBug(f"page_remove_rmap: {page.name} is not mapped at {address}")
    if len(rmap) == 1:
        page.rmap = rmap[0]


def page_clear_rmap(page: Page) -> None:
    """Every PTE of *page* is gone (``try_to_unmap``, ``unmap_mapping_range``)."""
    page.rmap = NO_RMAP


def page_mapcount(page: Page) -> int:
    """``page_mapcount()``: how many PTEs map *page*."""
    rmap = page.rmap
    if type(rmap) is list:
        return len(rmap)
    return 1 if rmap else 0


def page_rmap(page: Page) -> list[tuple[VmAreaStruct, int]]:
    """``rmap_walk()``, simplified: each ``(vma, address)`` whose PTE maps *page*, oldest first."""
    rmap = page.rmap
    if type(rmap) is list:
        return [_entry_address(page, entry) for entry in rmap]
    return [_entry_address(page, rmap)] if rmap else []


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
    _wake_page(page, _LOCKED)


def _wake_page(page: Page, bit: int) -> None:
    """``wake_up_page_bit()`` (v4.19; the walk is the same in 5.9): wake the waiters for *bit* up to the first exclusive one."""
    wq = page.wq
    if wq is None:
        return
    for key in wq:
        comm, exclusive, waits_for, handoff = key
        if waits_for != bit:
            continue  # wake_page_function: another bit of the page
        if handoff:  # 5.9: the waker takes the bit for the waiter (WQ_FLAG_CUSTOM, then WQ_FLAG_DONE)
            page.flags |= bit
            page.locker = comm
            wq.wake(key, LOCK_HANDED)
            return
        wq.wake(key)
        if exclusive:
            return


def _holders(page: Page):
    def holders() -> list[str]:
        return [page.locker] if page.locker else []

    return holders


async def _sleep_on(current: TaskStruct, page: Page, exclusive: bool, bit: int, killable: bool, handoff: bool = False) -> Any:
    """Sleep on the page's queue for *bit* until woken; the wake value (``FATAL_WAKE``: a fatal signal ended it;
    ``LOCK_HANDED``: the waker took PG_locked for us, *handoff* waits only)."""
    if killable and current.fatal_signal_pending():
        return FATAL_WAKE
    if page.wq is None:
        page.wq = WaitQueue(current.actor.engine, f"page {page.name} ({_BIT_NAMES[bit]})", _holders(page))
    wq = page.wq
    start = current.actor.now_ns
    current.killable_queue = wq if killable else None
    try:
        value = await wq.wait(current.actor, (current.comm, exclusive, bit, handoff))
    finally:
        current.killable_queue = None
        if not len(wq) and page.wq is wq:
            page.wq = None
    if value != FATAL_WAKE:
        await wakeup(current)
    current.account_sleep("io", current.actor.now_ns - start)
    return value


def _page_wait_59(current: TaskStruct) -> bool:
    """``policy.page_wait`` is ``5.9``: a woken non-exclusive waiter is done, without looking at the bit again,
    and a locker is handed the lock after ``PAGE_LOCK_UNFAIRNESS`` waits."""
    return current.kernel.policy.page_wait == "5.9"


async def _lock_page_slow(current: TaskStruct, page: Page, killable: bool) -> bool:
    """``wait_on_page_bit_common(..., EXCLUSIVE)`` for PG_locked: ``True`` once it is ours, ``False`` on a fatal signal."""
    _check_not_own_lock(current, page)
    unfairness = PAGE_LOCK_UNFAIRNESS if _page_wait_59(current) else None
    while not trylock_page(page, current.comm):
        handoff = False
        if unfairness is not None:  # 5ef64cc8987a: "if (--unfairness < 0) wait->flags |= WQ_FLAG_CUSTOM"
            unfairness -= 1
            handoff = unfairness < 0
        value = await _sleep_on(current, page, True, _LOCKED, killable, handoff)
        if value == FATAL_WAKE:
            return False
        if value == LOCK_HANDED:
            return True
    return True


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
    await _lock_page_slow(current, page, killable=False)


async def lock_page(current: TaskStruct, page: Page) -> None:
    """``lock_page()``: trylock, else ``__lock_page``."""
    if not trylock_page(page, current.comm):
        await __lock_page(current, page)


async def __lock_page_killable(current: TaskStruct, page: Page) -> int:
    """``__lock_page_killable()``: 0 once locked, ``-EINTR`` on a fatal signal."""
    return 0 if await _lock_page_slow(current, page, killable=True) else -Errno.EINTR


async def lock_page_killable(current: TaskStruct, page: Page) -> int:
    """``lock_page_killable()``."""
    if trylock_page(page, current.comm):
        return 0
    return await __lock_page_killable(current, page)


async def wait_on_page_locked(current: TaskStruct, page: Page) -> None:
    """``wait_on_page_locked()``: wait for PG_locked to clear, without taking it."""
    while page.flags & _LOCKED:
        await _sleep_on(current, page, False, _LOCKED, killable=False)
        if _page_wait_59(current):
            return


async def wait_on_page_locked_killable(current: TaskStruct, page: Page) -> int:
    """``wait_on_page_locked_killable()``: 0, or ``-EINTR`` on a fatal signal."""
    while page.flags & _LOCKED:
        if await _sleep_on(current, page, False, _LOCKED, killable=True) == FATAL_WAKE:
            return -Errno.EINTR
        if _page_wait_59(current):
            return 0
    return 0


async def wait_on_page_writeback(current: TaskStruct, page: Page) -> None:
    """``wait_on_page_writeback()``: wait for PG_writeback to clear (4.19's inner loop, 5.10's outer one: the same)."""
    while page.flags & PageFlag.WRITEBACK:
        await _sleep_on(current, page, False, PageFlag.WRITEBACK, killable=False)


def end_page_writeback(page: Page) -> None:
    """``end_page_writeback()``: clear PG_writeback and wake its waiters."""
    page.flags &= ~PageFlag.WRITEBACK
    _wake_page(page, PageFlag.WRITEBACK)


def wake_fatal(wq: WaitQueue, current: Any) -> None:
    """End a killable wait of *current* because of a fatal signal.

    Page waits are keyed ``(comm, exclusive, bit, handoff)`` (``_sleep_on``); mmap_sem waits (``actors.mm.mmap``) by ``comm``.
    """
    for key in wq:
        if (key[0] if isinstance(key, tuple) else key) == current.comm:
            wq.wake(key, FATAL_WAKE)
